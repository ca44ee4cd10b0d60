"""Segmentation metrics shared by every stage (one home for Dice and friends)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["dice_per_class"]


def dice_per_class(
    pred: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor, labels: Sequence[int]
) -> np.ndarray:
    """Dice of each label value between two label maps of one shape.

    Args:
        pred: predicted label map (any shape).
        ref: reference label map, same shape.
        labels: label values to score, e.g. ``(1, 2, 3)``.

    Returns:
        ``(len(labels),)`` float64; NaN where a label is absent from both maps (undefined, skipped by
        ``np.nanmean``).
    """
    p = pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
    r = ref.detach().cpu().numpy() if isinstance(ref, torch.Tensor) else np.asarray(ref)
    if p.shape != r.shape:
        raise ValueError(f"label maps differ in shape: {p.shape} vs {r.shape}.")
    out = np.full(len(labels), np.nan)
    for i, c in enumerate(labels):
        a, b = p == c, r == c
        denom = int(a.sum()) + int(b.sum())
        if denom:
            out[i] = 2.0 * int((a & b).sum()) / denom
    return out
