"""Background of CAM labels: a constant background score, the learned background channel, and the
motion prior (nothing outside the moving heart region is foreground)."""

from __future__ import annotations

import numpy as np

from acdc_wsss.pseudo.rules.common import heart_region

__all__ = ["labels_constant", "labels_learned", "motion_labels"]


def labels_constant(scores: np.ndarray, bg_prob: np.ndarray, value: float) -> np.ndarray:
    """``(C, H, W, S)`` scores -> ``(H, W, S)`` labels: argmax of ``[value, scores]`` (0 is background)."""
    return np.concatenate([np.full_like(scores[:1], value), scores]).argmax(axis=0)


def labels_learned(scores: np.ndarray, bg_prob: np.ndarray, value: float) -> np.ndarray:
    """Background where the learned background probability is at least ``value``; else the best class."""
    fg = (bg_prob < value) & (scores.max(axis=0) > 0)
    return np.where(fg, scores.argmax(axis=0) + 1, 0)


def motion_labels(
    scores: np.ndarray, bg_prob: np.ndarray, motion: np.ndarray, spacing: float, value: float
) -> np.ndarray:
    """:func:`labels_learned` with background everywhere outside the heart region of the ED-ES motion map
    (:func:`~acdc_wsss.pseudo.rules.common.heart_region`)."""
    return labels_learned(scores, bg_prob, value) * heart_region(motion, spacing)[..., None]
