"""Label values shared by every stage and data set, and the one way class scores become a label map."""

from __future__ import annotations

import torch

__all__ = ["IGNORE", "argmax_labels"]

#: Label value of pixels that a loss and a score ignore: pixels without a label (slices of a volume that
#: has no mask, VOC's void border) and uncertain pixels of a pseudo label (the stage-3 training target).
IGNORE = 255


def argmax_labels(scores: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """The index of the largest score along ``dim`` (the first one on a tie), as ``torch.argmax`` gives
    it (int64, on the scores' device).

    Computed with ``torch.max``, which returns the same indices (ties and NaN included) but, on a CPU,
    reduces a dimension that is not the last one about ten times faster than ``argmax`` does; the class
    dimension of a batch of score maps never is the last one.
    """
    return scores.max(dim).indices
