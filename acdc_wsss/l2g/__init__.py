"""Stage 1: Local-to-Global knowledge transfer (L2G) and the plain-CAM baseline.

``config`` (:class:`L2GConfig`), ``model`` (the networks, loading a trained stage 1), ``core`` (views,
roi_align, attention target and losses), ``train`` (one training step, :func:`run_l2g`), ``evaluate``
(tag and CAM scores of a classifier and of a finished stage 1).
"""

from __future__ import annotations

from acdc_wsss.l2g.config import L2GConfig
from acdc_wsss.l2g.evaluate import evaluate_classifier, evaluate_l2g
from acdc_wsss.l2g.model import L2GModel, load_l2g, pool_weight, recorded_l2g_config
from acdc_wsss.l2g.train import build_l2g_optimizer, make_step, run_l2g

__all__ = [
    "L2GConfig",
    "L2GModel",
    "build_l2g_optimizer",
    "evaluate_classifier",
    "evaluate_l2g",
    "load_l2g",
    "make_step",
    "pool_weight",
    "recorded_l2g_config",
    "run_l2g",
]
