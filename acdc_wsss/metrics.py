"""Segmentation metrics shared by every stage (one home for Dice and friends)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["DiceAccumulator", "average_precision", "dice_per_class", "hd95_per_class", "multilabel_scores"]


def _label_maps(
    pred: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """Two label maps as NumPy arrays of one shape (a clear error otherwise)."""
    p = pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
    r = ref.detach().cpu().numpy() if isinstance(ref, torch.Tensor) else np.asarray(ref)
    if p.shape != r.shape:
        raise ValueError(f"label maps differ in shape: {p.shape} vs {r.shape}.")
    return p, r


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
    p, r = _label_maps(pred, ref)
    out = np.full(len(labels), np.nan)
    for i, c in enumerate(labels):
        a, b = p == c, r == c
        denom = int(a.sum()) + int(b.sum())
        if denom:
            out[i] = 2.0 * int((a & b).sum()) / denom
    return out


def hd95_per_class(
    pred: np.ndarray | torch.Tensor,
    ref: np.ndarray | torch.Tensor,
    labels: Sequence[int],
    spacing: Sequence[float],
) -> np.ndarray:
    """95th-percentile symmetric Hausdorff distance (mm) of each label between two 3D label maps.

    MONAI's ``compute_hausdorff_distance`` on the surfaces, with the voxel ``spacing`` (mm per axis).

    Returns:
        ``(len(labels),)`` float64; NaN where the label is missing from either map (undefined).
    """
    from monai.metrics import compute_hausdorff_distance

    p, r = _label_maps(pred, ref)
    out = np.full(len(labels), np.nan)
    for i, c in enumerate(labels):
        a, b = p == c, r == c
        if a.any() and b.any():
            with warnings.catch_warnings():  # MONAI 1.5+ warns about its own internal argument
                warnings.simplefilter("ignore", FutureWarning)
                hd = compute_hausdorff_distance(
                    torch.as_tensor(a[None, None]),
                    torch.as_tensor(b[None, None]),
                    include_background=True,
                    percentile=95,
                    spacing=[float(s) for s in spacing],
                )
            out[i] = float(hd.item())
    return out


def average_precision(scores: np.ndarray | torch.Tensor, targets: np.ndarray | torch.Tensor) -> float:
    """Average precision of one class: mean precision at the rank of each positive (scores descending).

    Returns NaN when there is no positive. Ties are broken by input order (stable sort).
    """
    s = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64)
    t = np.asarray(targets.detach().cpu() if isinstance(targets, torch.Tensor) else targets) > 0
    if t.sum() == 0:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    hits = t[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


def multilabel_scores(
    logits: np.ndarray | torch.Tensor, targets: np.ndarray | torch.Tensor, classes: Sequence[str]
) -> dict[str, Any]:
    """Tag classification metrics: per-class AP, mAP, per-class F1 at logit 0, macro F1, and the prior.

    The prior is the mAP of a constant score, i.e. the mean prevalence: what a classifier must beat.
    """
    z = np.asarray(logits.detach().cpu() if isinstance(logits, torch.Tensor) else logits, dtype=np.float64)
    t = np.asarray(targets.detach().cpu() if isinstance(targets, torch.Tensor) else targets) > 0
    ap = [average_precision(z[:, c], t[:, c]) for c in range(t.shape[1])]
    f1 = []
    for c in range(t.shape[1]):
        pred = z[:, c] > 0
        tp, fp, fn = int((pred & t[:, c]).sum()), int((pred & ~t[:, c]).sum()), int((~pred & t[:, c]).sum())
        f1.append(2 * tp / max(2 * tp + fp + fn, 1))
    return {
        "ap": dict(zip(classes, ap, strict=True)),
        "map": float(np.nanmean(ap)),
        "f1": dict(zip(classes, f1, strict=True)),
        "macro_f1": float(np.mean(f1)),
        "prior_map": float(np.mean(t.mean(axis=0))),
    }


class DiceAccumulator:
    """Dice pooled over many label maps: intersections and sizes are summed, then divided once.

    Args:
        labels: label values to score.
    """

    def __init__(self, labels: Sequence[int]) -> None:
        self.labels = list(labels)
        self.inter = np.zeros(len(self.labels))
        self.total = np.zeros(len(self.labels))

    def update(self, pred: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor) -> None:
        """Add a batch of label maps (any shape, equal shapes)."""
        p, r = _label_maps(pred, ref)
        for i, c in enumerate(self.labels):
            a, b = p == c, r == c
            self.inter[i] += int((a & b).sum())
            self.total[i] += int(a.sum()) + int(b.sum())

    def merge(self, other: DiceAccumulator) -> None:
        """Add ``other``'s sums (the same labels), as if its label maps had been added here."""
        if other.labels != self.labels:
            raise ValueError(f"cannot merge Dice sums of labels {other.labels} into {self.labels}.")
        self.inter += other.inter
        self.total += other.total

    def compute(self) -> np.ndarray:
        """Pooled Dice per label (NaN for a label seen in neither)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.total > 0, 2 * self.inter / self.total, np.nan)

    def compute_iou(self) -> np.ndarray:
        """Pooled IoU per label, ``I / (|P| + |R| - I)`` (NaN for a label seen in neither)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.total > 0, self.inter / (self.total - self.inter), np.nan)
