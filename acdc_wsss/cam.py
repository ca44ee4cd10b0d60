"""Old name of :mod:`acdc_wsss.cam_maps` (renamed in 0.2.0: it shared its name with
:mod:`acdc_wsss.networks.cam`); importing a name from here still works, with a ``DeprecationWarning``."""

from __future__ import annotations

from acdc_wsss.utils import moved

_NAMES = ("CAM_SCALES", "cam_labels", "cam_scores", "max_normalise", "multiscale_cam")
__getattr__ = moved(__name__, dict.fromkeys(_NAMES, "acdc_wsss.cam_maps"))
