"""Label values shared by every stage and data set."""

from __future__ import annotations

__all__ = ["IGNORE"]

#: Label value of pixels that a loss and a score ignore: pixels without a label (slices of a volume that
#: has no mask, VOC's void border) and uncertain pixels of a pseudo label (the stage-3 training target).
IGNORE = 255
