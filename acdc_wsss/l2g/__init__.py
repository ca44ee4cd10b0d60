"""Stage 1: Local-to-Global knowledge transfer (L2G) and the plain-CAM baseline."""

from __future__ import annotations

from acdc_wsss.l2g.train import (
    L2GConfig,
    L2GModel,
    evaluate_classifier,
    evaluate_l2g,
    load_l2g,
    make_step,
    run_l2g,
)

__all__ = ["L2GConfig", "L2GModel", "evaluate_classifier", "evaluate_l2g", "load_l2g", "make_step", "run_l2g"]
