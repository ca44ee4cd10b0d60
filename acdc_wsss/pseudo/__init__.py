"""Stage 2: CAMs, refinement and pseudo labels, each with its evaluation."""

from __future__ import annotations

from acdc_wsss.nifti import save_nifti
from acdc_wsss.pseudo.evaluate import cam_splits, evaluate_pseudo
from acdc_wsss.pseudo.export import export_pseudo
from acdc_wsss.pseudo.figures import figure_panels
from acdc_wsss.pseudo.infer import CamConfig, load_cams, run_cam

__all__ = [
    "CamConfig",
    "cam_splits",
    "evaluate_pseudo",
    "export_pseudo",
    "figure_panels",
    "load_cams",
    "run_cam",
    "save_nifti",
]
