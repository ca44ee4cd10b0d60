"""Stage 2: CAMs, refinement and pseudo labels, each with its evaluation.

``infer`` (:func:`run_cam`: CAMs of every volume), ``store`` (reading ``cam/`` back), ``rules`` (the
refinement rules, one module per structure and step), ``rows`` (the rows of the stage-2 table built from
the rules), ``evaluate`` (scoring the rows), ``export`` (pseudo labels for stage 3 and 3D Slicer).
Stage 2 reads stage 1 through the run folder and its loader (:func:`acdc_wsss.l2g.load_l2g`) and imports
nothing of stage 3.
"""

from __future__ import annotations

from acdc_wsss.nifti import save_nifti
from acdc_wsss.pseudo.evaluate import evaluate_pseudo
from acdc_wsss.pseudo.export import export_pseudo
from acdc_wsss.pseudo.infer import CamConfig, run_cam
from acdc_wsss.pseudo.store import cam_splits, load_cams
from acdc_wsss.utils import moved

__all__ = [
    "CamConfig",
    "cam_splits",
    "evaluate_pseudo",
    "export_pseudo",
    "load_cams",
    "run_cam",
    "save_nifti",
]

#: ``acdc_wsss.pseudo.figure_panels`` before 0.2.0; the figures of a run live in :mod:`acdc_wsss.figures`.
__getattr__ = moved(__name__, {"figure_panels": "acdc_wsss.figures"})
