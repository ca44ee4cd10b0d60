"""Old home of the figure panels, now :mod:`acdc_wsss.figures` (0.2.0: stage 2 no longer reaches into
stage 3 for the network's column); importing ``figure_panels`` from here still works, with a
``DeprecationWarning``."""

from __future__ import annotations

from acdc_wsss.utils import moved

__getattr__ = moved(__name__, {"figure_panels": "acdc_wsss.figures"})
