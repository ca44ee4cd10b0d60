"""Stage 2 evaluation: pseudo-label Dice and IoU against the masks (evaluation only), as JSON and markdown.

Each row is one way of turning stored CAMs into labels, with its parameter swept and the best value
reported (2D Dice pooled over all slices of the split, 128 x 128 at the chain's spacing):

- ``constant``: background = a constant score against the class scores (the L2G reference).
- ``learned``: background = pixels whose learned background probability is at least a threshold; the
  others get their highest class.
- ``priors``: no CAM at all, anatomy and motion only (:func:`acdc_wsss.pseudo.priors.priors_labels`): the
  label-free yardstick every learned row must beat.

Later refinement steps (PCM revision, motion prior, dense CRF, anatomy rules) add rows here.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from acdc_wsss.crf import CRF_MRI, dense_crf
from acdc_wsss.data.acdc import read_datalist
from acdc_wsss.data.preprocess import PreprocessConfig
from acdc_wsss.data.slices import SliceDataset, volume_key
from acdc_wsss.metrics import DiceAccumulator
from acdc_wsss.pseudo.infer import STAGE, load_cams
from acdc_wsss.pseudo.priors import priors_labels
from acdc_wsss.utils import atomic_write, progress_bar, write_json

__all__ = ["BG_CONSTANTS", "BG_THRESHOLDS", "evaluate_pseudo", "labels_constant", "labels_learned"]

logger = logging.getLogger(__name__)

#: Constant background scores swept by the ``constant`` row.
BG_CONSTANTS: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7)
#: Learned background probability thresholds swept by the ``learned`` row.
BG_THRESHOLDS: tuple[float, ...] = (0.3, 0.5, 0.7, 0.8, 0.9)


def labels_constant(scores: np.ndarray, bg_prob: np.ndarray, value: float) -> np.ndarray:
    """``(C, H, W, S)`` scores -> ``(H, W, S)`` labels: argmax of ``[value, scores]`` (0 is background)."""
    return np.concatenate([np.full_like(scores[:1], value), scores]).argmax(axis=0)


def labels_learned(scores: np.ndarray, bg_prob: np.ndarray, value: float) -> np.ndarray:
    """Background where the learned background probability is at least ``value``; else the best class."""
    fg = (bg_prob < value) & (scores.max(axis=0) > 0)
    return np.where(fg, scores.argmax(axis=0) + 1, 0)


#: Row id -> (name, labels from a volume's context and the swept value, swept values). The context holds
#: ``scores``, ``bg_prob`` (stored CAMs), ``image``, ``motion`` (preprocessed), ``tags`` and ``spacing``.
ROWS: dict[str, tuple[str, Callable[[dict[str, Any], Any], np.ndarray], Sequence[Any]]] = {
    "constant": (
        "CAM, constant background score",
        lambda ctx, t: labels_constant(ctx["scores"], ctx["bg_prob"], t),
        BG_CONSTANTS,
    ),
    "learned": (
        "CAM, learned background channel",
        lambda ctx, t: labels_learned(ctx["scores"], ctx["bg_prob"], t),
        BG_THRESHOLDS,
    ),
    "priors": (
        "Priors only (no CAM): motion centre, Otsu blood pools, LV blob, Myo ring, RV beside it",
        lambda ctx, t: priors_labels(ctx["image"], ctx["motion"], ctx["tags"], ctx["spacing"]),
        ("default",),
    ),
    "priors_crf": (
        "Priors only + dense CRF",
        lambda ctx, t: crf_labels(
            ctx["image"], priors_labels(ctx["image"], ctx["motion"], ctx["tags"], ctx["spacing"]), t
        ),
        (0.5, 0.7),
    ),
}


def crf_labels(image: np.ndarray, labels: np.ndarray, confidence: float, num_labels: int = 4) -> np.ndarray:
    """Dense-CRF refinement of a label volume, slice by slice: each pixel's label gets probability
    ``confidence``, the others share the rest; grayscale MRI kernels (:data:`acdc_wsss.crf.CRF_MRI`)."""
    out = np.zeros_like(labels)
    rest = (1 - confidence) / (num_labels - 1)
    for z in range(labels.shape[-1]):
        onehot = np.eye(num_labels, dtype=np.float32)[labels[..., z]].transpose(2, 0, 1)
        probs = onehot * (confidence - rest) + rest
        out[..., z] = dense_crf(image[..., z], probs, CRF_MRI).argmax(0)
    return out


def volume_context(output_dir: str | os.PathLike, ds: SliceDataset, v: int) -> dict[str, Any]:
    """What a row's rule reads for volume ``v``: stored CAMs, preprocessed image and motion, tags, spacing."""
    vol = ds.volumes[v]
    return {
        **load_cams(output_dir, volume_key(ds.items[v])),
        "image": vol["image"].as_tensor()[0].numpy(),
        "motion": vol["motion"][0].float().numpy(),
        "tags": vol["tags"].numpy(),
        "spacing": ds.config.spacing,
    }


def evaluate_pseudo(output_dir: str | os.PathLike, split: str = "training", progress: bool = True) -> dict:
    """Score the stored CAMs of one split as pseudo labels; write ``cam/evaluation_<split>.{json,md}``.

    Returns:
        ``{"rows": [{"row", "name", "best", "dice", "mean_dice", "iou", "miou", "per_volume"}], ...}``.
    """
    out = Path(output_dir)
    manifest_path = out / STAGE / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"{manifest_path} not found: make the CAMs first with python -m monai.bundle run --config_file "
            f"\"['bundles/l2g_acdc/train.json','bundles/l2g_acdc/infer.json']\" --output_dir {output_dir}"
        )
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    classes = manifest["classes"]
    labels = list(range(len(classes) + 1))
    pre = PreprocessConfig(**manifest["preprocess"])
    items = [
        it for it in read_datalist(out / "datalist.json", split) if volume_key(it) in manifest["volumes"]
    ]
    if not items:
        raise ValueError(f"{out / STAGE}: no CAMs for split {split!r}; it has {manifest['splits']}.")
    ds = SliceDataset(items, pre, classes, cache_dir=out / "cache", progress=progress)
    if any(v["label"] is None for v in ds.volumes):
        raise ValueError(f"split {split!r} has volumes without masks; pseudo labels cannot be scored there.")
    acc = {(r, t): DiceAccumulator(labels) for r, (_, _, ts) in ROWS.items() for t in ts}
    per_volume: dict[tuple[str, float], dict[str, list[float]]] = {k: {} for k in acc}
    for v in progress_bar(range(len(ds.volumes)), "scoring pseudo labels", progress):
        key = volume_key(ds.items[v])
        ctx = volume_context(out, ds, v)
        ref = ds.volumes[v]["label"][0].numpy()
        for (row, t), a in acc.items():
            pred = ROWS[row][1](ctx, t)
            a.update(pred, ref)
            one = DiceAccumulator(labels[1:])
            one.update(pred, ref)
            per_volume[(row, t)][key] = [round(float(d), 4) for d in one.compute()]
    rows = []
    for row, (name, _, ts) in ROWS.items():
        best = max(ts, key=lambda t: float(np.nanmean(acc[(row, t)].compute()[1:])))
        dice, iou = acc[(row, best)].compute(), acc[(row, best)].compute_iou()
        rows.append(
            {
                "row": row,
                "name": name,
                "best": best,
                "dice": {c: float(d) for c, d in zip(classes, dice[1:], strict=True)},
                "mean_dice": float(np.nanmean(dice[1:])),
                "iou": {c: float(d) for c, d in zip(["background", *classes], iou, strict=True)},
                "miou": float(np.nanmean(iou)),
                "sweep": {str(t): float(np.nanmean(acc[(row, t)].compute()[1:])) for t in ts},
                "per_volume": per_volume[(row, best)],
            }
        )
    result = {"split": split, "volumes": len(ds.volumes), "slices": len(ds), "classes": classes, "rows": rows}
    write_json(result, out / STAGE / f"evaluation_{split}.json")
    with atomic_write(out / STAGE / f"evaluation_{split}.md") as tmp:
        tmp.write_text(_markdown(result), encoding="utf-8")
    logger.info("pseudo labels on %s:\n%s", split, _markdown(result))
    return result


def _markdown(result: dict[str, Any]) -> str:
    classes = result["classes"]
    head = f"| pseudo labels ({result['split']}, {result['slices']} slices) | best setting | "
    head += " | ".join(classes) + " | mean Dice | mIoU |\n"
    head += "| --- | --- | " + " | ".join("---" for _ in classes) + " | --- | --- |\n"
    body = "".join(
        f"| {r['name']} | {r['best']} | "
        + " | ".join(f"{r['dice'][c]:.3f}" for c in classes)
        + f" | {r['mean_dice']:.3f} | {r['miou']:.3f} |\n"
        for r in result["rows"]
    )
    return head + body
