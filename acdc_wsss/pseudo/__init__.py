"""Stage 2: CAMs, refinement and pseudo labels, each with its evaluation."""

from __future__ import annotations

from acdc_wsss.pseudo.evaluate import evaluate_pseudo
from acdc_wsss.pseudo.infer import CamConfig, load_cams, run_cam

__all__ = ["CamConfig", "evaluate_pseudo", "load_cams", "run_cam"]
