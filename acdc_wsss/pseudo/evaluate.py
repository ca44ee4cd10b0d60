"""Stage 2 evaluation: pseudo-label Dice and IoU against the masks (evaluation only), as JSON and markdown.

Each row is one way of turning stored CAMs into labels. The L2G rows are cumulative, each adding one
refinement step to the row above it; two yardsticks stand beside them:

- ``baseline``: the plain-CAM baseline run's CAMs, constant background score (only with ``baseline_run``).
- ``cam``: L2G CAM before PCM revision, constant background score (the L2G reference's rule).
- ``pcm``: + PCM revision (the CAM the reference keeps).
- ``learned``: + background from the learned background channel (threshold swept) instead of a constant.
- ``motion``: + background from the motion prior: everything outside the moving heart region.
- ``anatomy``: + ACDC anatomy rules (:func:`acdc_wsss.pseudo.priors.priors_labels`, the LV blob picked with
  the CAM's help, Myo ring, RV beside the septum, one component per class, holes filled, slices tracked
  on the LV axis).
- ``anatomy_crf``: + dense CRF on the image (confidence swept): the full refinement, what is exported.
- ``priors``: no CAM at all, anatomy and motion only: the label-free yardstick.

A row with a swept setting is scored for every value; the value is chosen on ``select_split`` (the
validation patients) and the scored split is reported at that value, so nothing is tuned on the patients
it is scored on. Scores are 2D Dice pooled over all slices of the split, 128 x 128 at the chain's spacing.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from acdc_wsss.crf import CRF_MRI, CRF_RGB, dense_crf
from acdc_wsss.data.slices import SliceDataset, volume_key
from acdc_wsss.labels import IGNORE
from acdc_wsss.layout import RunLayout
from acdc_wsss.metrics import DiceAccumulator
from acdc_wsss.pseudo.infer import inference_volumes, load_cams
from acdc_wsss.pseudo.priors import es_lv_region, heart_region, priors_labels
from acdc_wsss.utils import atomic_write, progress_bar, write_json

__all__ = [
    "BG_CONSTANTS",
    "BG_THRESHOLDS",
    "ROWS",
    "cam_splits",
    "evaluate_pseudo",
    "labels_constant",
    "labels_learned",
    "row_labels",
]

logger = logging.getLogger(__name__)

#: Constant background scores swept by the constant-background rows.
BG_CONSTANTS: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7)
#: Learned background probability thresholds swept by the learned-background rows.
BG_THRESHOLDS: tuple[float, ...] = (0.3, 0.5, 0.7, 0.8, 0.9)
#: Dense-CRF confidences (probability of the rule's label) swept by the CRF row.
CRF_CONFIDENCES: tuple[float, ...] = (0.6, 0.7, 0.8)


def labels_constant(scores: np.ndarray, bg_prob: np.ndarray, value: float) -> np.ndarray:
    """``(C, H, W, S)`` scores -> ``(H, W, S)`` labels: argmax of ``[value, scores]`` (0 is background)."""
    return np.concatenate([np.full_like(scores[:1], value), scores]).argmax(axis=0)


def labels_learned(scores: np.ndarray, bg_prob: np.ndarray, value: float) -> np.ndarray:
    """Background where the learned background probability is at least ``value``; else the best class."""
    fg = (bg_prob < value) & (scores.max(axis=0) > 0)
    return np.where(fg, scores.argmax(axis=0) + 1, 0)


def _motion(ctx: dict[str, Any], t: float) -> np.ndarray:
    labels = labels_learned(ctx["scores"], ctx["bg_prob"], t)
    return labels * heart_region(ctx["motion"], ctx["spacing"])[..., None]


def _rules(ctx: dict[str, Any], cams: bool) -> np.ndarray:
    """Anatomy-rule labels of a volume (with or without the CAMs), computed once per volume; an ES frame
    seeks its LV inside its ED frame's (``ctx["ed"]``, see :func:`volume_context`)."""
    key = "_anatomy" if cams else "_priors"
    if key not in ctx:
        ed = ctx.get("ed")
        ctx[key] = priors_labels(
            ctx["image"],
            ctx["motion"],
            ctx["tags"],
            ctx["spacing"],
            ctx["scores"] if cams else None,
            lv_within=None if ed is None else es_lv_region(_rules(ed, cams)),
        )
    return ctx[key]


def _anatomy(ctx: dict[str, Any]) -> np.ndarray:
    return _rules(ctx, cams=True)


def _priors(ctx: dict[str, Any]) -> np.ndarray:
    return _rules(ctx, cams=False)


#: Row id -> (name, labels from a volume's context and the swept value, swept values). The context holds
#: ``scores``, ``raw_scores``, ``bg_prob`` (stored CAMs), ``image``, ``motion`` (preprocessed), ``tags``
#: and ``spacing``. The ``baseline`` row uses the ``constant`` rule on another run's CAMs.
ROWS: dict[str, tuple[str, Callable[[dict[str, Any], Any], np.ndarray], Sequence[Any]]] = {
    "baseline": (
        "Baseline CAM (no L2G), constant background score",
        lambda ctx, t: labels_constant(ctx["scores"], ctx["bg_prob"], t),
        BG_CONSTANTS,
    ),
    "cam": (
        "L2G CAM, constant background score",
        lambda ctx, t: labels_constant(ctx["raw_scores"], ctx["bg_prob"], t),
        BG_CONSTANTS,
    ),
    "pcm": (
        "+ PCM revision",
        lambda ctx, t: labels_constant(ctx["scores"], ctx["bg_prob"], t),
        BG_CONSTANTS,
    ),
    "learned": (
        "+ background from the learned background channel",
        lambda ctx, t: labels_learned(ctx["scores"], ctx["bg_prob"], t),
        BG_THRESHOLDS,
    ),
    "motion": ("+ background outside the moving heart region (motion prior)", _motion, BG_THRESHOLDS),
    "anatomy": (
        "+ anatomy rules (LV blob picked by CAM and motion, Myo ring, RV beside the septum)",
        lambda ctx, t: _anatomy(ctx),
        ("default",),
    ),
    "anatomy_crf": (
        "+ dense CRF (full refinement)",
        lambda ctx, t: crf_labels(ctx["image"], _anatomy(ctx), t),
        CRF_CONFIDENCES,
    ),
    "priors": (
        "Priors only (no CAM): motion centre, blood pools, LV blob, Myo ring, RV beside it",
        lambda ctx, t: _priors(ctx),
        ("default",),
    ),
}
ROWS["pcm_crf"] = (
    "+ PCM revision, dense CRF on the photo (RGB)",
    lambda ctx, t: rgb_crf_labels(ctx["rgb"], ctx["scores"], t),
    (0.2, 0.3, 0.4, 0.5),
)
#: Rows scored per data set: ACDC has the anatomy rules; RGB photos (VOC) the CAM rows and an RGB CRF.
ROW_SETS: dict[str, list[str]] = {
    "acdc": ["baseline", "cam", "pcm", "learned", "motion", "anatomy", "anatomy_crf", "priors"],
    "rgb": ["baseline", "cam", "pcm", "learned", "pcm_crf"],
}
#: The row exported for stage 3 unless told otherwise, per row set.
DEFAULT_ROWS: dict[str, str] = {"acdc": "anatomy_crf", "rgb": "pcm_crf"}
DEFAULT_ROW = DEFAULT_ROWS["acdc"]


def row_set(manifest: dict[str, Any]) -> str:
    """``acdc`` for ACDC runs, ``rgb`` for photo data sets (VOC)."""
    return "acdc" if manifest.get("dataset", "acdc") == "acdc" else "rgb"


def rgb_crf_labels(rgb: np.ndarray, scores: np.ndarray, background: float) -> np.ndarray:
    """CAM labels refined by DeepLab's RGB dense CRF: ``[background, scores]`` as probabilities of each
    image ``(H, W, 3, S)`` uint8 (scores ``(C, H, W, S)``)."""
    out = np.zeros(scores.shape[1:], np.uint8)
    for z in range(scores.shape[-1]):
        probs = np.concatenate([np.full_like(scores[:1, ..., z], background), scores[..., z]])
        out[..., z] = dense_crf(rgb[..., z], probs, CRF_RGB).argmax(0)
    return out


def row_labels(row: str, ctx: dict[str, Any], value: Any) -> np.ndarray:
    """Labels of one volume by one row's rule, with a clear error for an unknown row."""
    if row not in ROWS:
        raise ValueError(f"unknown pseudo-label row {row!r}; expected one of {sorted(ROWS)}.")
    return ROWS[row][1](ctx, value).astype(np.uint8)


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


def volume_context(output_dir: str | os.PathLike, ds: SliceDataset, v: int, partner: bool = True) -> dict:
    """What a row's rule reads for volume ``v``: stored CAMs, preprocessed image and motion, tags, spacing;
    for an ES frame whose ED frame is in ``ds`` on the same grid, that frame's context as ``"ed"``."""
    vol = ds.volumes[v]
    if "rgb" in vol:  # an RGB data set: the photo for the CRF, no motion
        return {
            **load_cams(output_dir, volume_key(ds.items[v])),
            "rgb": vol["rgb"],
            "tags": vol["tags"].numpy(),
        }
    ctx = {
        **load_cams(output_dir, volume_key(ds.items[v])),
        "image": vol["image"].as_tensor()[0].numpy(),
        "motion": vol["motion"][0].float().numpy(),
        "tags": vol["tags"].numpy(),
        "spacing": ds.config.spacing,
    }
    item = ds.items[v]
    if partner and item.get("phase") == "ES":
        for u, other in enumerate(ds.items):
            same = other["patient"] == item["patient"] and other.get("phase") == "ED"
            if same and ds.volumes[u]["image"].shape == vol["image"].shape:
                ctx["ed"] = volume_context(output_dir, ds, u, partner=False)
                break
    return ctx


def read_cam_manifest(output_dir: str | os.PathLike) -> dict[str, Any]:
    """``output_dir/cam/manifest.json``, or a FileNotFoundError naming the command that makes it."""
    path = RunLayout(output_dir).cam.manifest
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: make the CAMs first with python -m monai.bundle run --config_file "
            f"\"['bundles/l2g_acdc/train.json','bundles/l2g_acdc/infer.json']\" --output_dir {output_dir}"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def cam_splits(output_dir: str | os.PathLike) -> list[str]:
    """The splits whose CAMs the run holds (none when stage 2 has not run)."""
    path = RunLayout(output_dir).cam.manifest
    return json.loads(path.read_text(encoding="utf-8"))["splits"] if path.is_file() else []


def split_dataset(output_dir: str | os.PathLike, split: str, progress: bool = True) -> Any:
    """The volumes of ``split`` that have stored CAMs (ACDC: a :class:`SliceDataset` on the run's cache;
    VOC: whole images)."""
    out = Path(output_dir)
    run = RunLayout(out)
    manifest = read_cam_manifest(out)
    items = [it for it in run.split(split) if volume_key(it) in manifest["volumes"]]
    if not items:
        raise ValueError(f"{run.cam.path}: no CAMs for split {split!r}; it has {manifest['splits']}.")
    return inference_volumes(manifest, items, out, progress)


def _score(
    out: Path,
    split: str,
    rows: Sequence[str],
    baseline_run: str | os.PathLike | None,
    progress: bool,
) -> tuple[dict[tuple[str, Any], DiceAccumulator], dict[tuple[str, Any], dict[str, list[float]]], int, int]:
    ds = split_dataset(out, split, progress)
    if any(not it.get("label") for it in ds.items):  # from the datalist, no volume loaded
        raise ValueError(f"split {split!r} has volumes without masks; pseudo labels cannot be scored there.")
    labels = list(range(ds.num_classes + 1))
    acc = {(r, t): DiceAccumulator(labels) for r in rows for t in ROWS[r][2]}
    per_volume: dict[tuple[str, Any], dict[str, list[float]]] = {k: {} for k in acc}
    for v in progress_bar(range(len(ds.volumes)), f"scoring pseudo labels ({split})", progress):
        key = volume_key(ds.items[v])
        ctx = volume_context(out, ds, v)
        base = None
        if "baseline" in rows:
            base = {**ctx, **load_cams(baseline_run, key)}  # type: ignore[arg-type]
        ref = ds.volumes[v]["label"][0].numpy()
        void = ref == IGNORE  # void pixels (VOC borders) are scored by nobody
        for (row, t), a in acc.items():
            pred = np.where(void, IGNORE, ROWS[row][1](base if row == "baseline" else ctx, t))
            a.update(pred, ref)
            one = DiceAccumulator(labels[1:])
            one.update(pred, ref)
            per_volume[(row, t)][key] = [round(float(d), 4) for d in one.compute()]
    return acc, per_volume, len(ds.volumes), len(ds)


def _mean_dice(acc: DiceAccumulator) -> float:
    return float(np.nanmean(acc.compute()[1:]))


def evaluate_pseudo(
    output_dir: str | os.PathLike,
    split: str = "training",
    select_split: str | None = "validation",
    baseline_run: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
    """Score the stored CAMs of one split as pseudo labels; write ``cam/evaluation_<split>.{json,md}``.

    Args:
        output_dir: the run folder (its ``cam/`` made by ``infer.json``).
        split: the split scored (its masks are read for scoring only).
        select_split: the split on which each row's swept setting is chosen (validation patients); None,
            or a split without CAMs, chooses on ``split`` itself (marked in the table).
        baseline_run: a plain-CAM run (``--l2g False``) with CAMs of the same volumes: adds its row.
        progress: progress bars on a terminal.

    Returns:
        ``{"rows": [{"row", "name", "setting", "dice", "mean_dice", "iou", "miou", "sweep", "per_volume"}],
        "selected_on", ...}``.
    """
    out = Path(output_dir)
    manifest = read_cam_manifest(out)
    classes = manifest["classes"]
    rows = [r for r in ROW_SETS[row_set(manifest)] if r != "baseline"]
    if baseline_run is not None:
        base_manifest = read_cam_manifest(baseline_run)
        missing = sorted(set(manifest["volumes"]) - set(base_manifest["volumes"]))
        if missing:
            raise ValueError(
                f"baseline run {baseline_run} has no CAMs for {len(missing)} volumes of {out} "
                f"(e.g. {missing[0]}); make them with the same infer.json run on the baseline."
            )
        rows.insert(0, "baseline")
    acc, per_volume, n_volumes, n_slices = _score(out, split, rows, baseline_run, progress)
    selected_on = split
    chooser = acc
    if select_split and select_split != split and select_split in manifest["splits"]:
        chooser, _, _, _ = _score(out, select_split, rows, baseline_run, progress)
        selected_on = select_split
    table = []
    for row in rows:
        name, _, values = ROWS[row]
        best = max(values, key=lambda t: _mean_dice(chooser[(row, t)]))
        dice, iou = acc[(row, best)].compute(), acc[(row, best)].compute_iou()
        table.append(
            {
                "row": row,
                "name": name,
                "setting": best,
                "dice": {c: float(d) for c, d in zip(classes, dice[1:], strict=True)},
                "mean_dice": float(np.nanmean(dice[1:])),
                "iou": {c: float(d) for c, d in zip(["background", *classes], iou, strict=True)},
                "miou": float(np.nanmean(iou)),
                "sweep": {str(t): _mean_dice(acc[(row, t)]) for t in values},
                "sweep_selection": {str(t): _mean_dice(chooser[(row, t)]) for t in values},
                "per_volume": per_volume[(row, best)],
            }
        )
    result = {
        "split": split,
        "selected_on": selected_on,
        "seed": manifest.get("seed"),
        "volumes": n_volumes,
        "slices": n_slices,
        "classes": classes,
        "rows": table,
    }
    stage = RunLayout(out).cam
    write_json(result, stage.evaluation(split))
    with atomic_write(stage.evaluation(split, ".md")) as tmp:
        tmp.write_text(markdown_table(result), encoding="utf-8")
    logger.info("pseudo labels on %s:\n%s", split, markdown_table(result))
    return result


def chosen_setting(output_dir: str | os.PathLike, row: str) -> Any:
    """The setting of ``row`` chosen by the latest evaluation (on the validation patients when it had
    them); the row's first value when no evaluation holds it."""
    for path in reversed(RunLayout(output_dir).cam.evaluations()):
        for r in json.loads(path.read_text(encoding="utf-8")).get("rows", []):
            if r["row"] == row:
                return r["setting"]
    return ROWS[row][2][0]


def markdown_table(result: dict[str, Any]) -> str:
    """The evaluation as a markdown table (one row per rule)."""
    classes = result["classes"]
    where = result["selected_on"]
    head = (
        f"| pseudo labels ({result['split']}: {result['volumes']} volumes, {result['slices']} slices) "
        f"| setting (chosen on {where}) | " + " | ".join(classes) + " | mean Dice | mIoU |\n"
    )
    head += "| --- | --- | " + " | ".join("---" for _ in classes) + " | --- | --- |\n"
    body = "".join(
        f"| {r['name']} | {r['setting']} | "
        + " | ".join(f"{r['dice'][c]:.3f}" for c in classes)
        + f" | {r['mean_dice']:.3f} | {r['miou']:.3f} |\n"
        for r in result["rows"]
    )
    return head + body
