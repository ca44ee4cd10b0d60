"""Stage 3 evaluation: the predicted masks of a split against its masks on the original grid.

Dice and HD95 (mm) per class, patient and phase, and their means, through :mod:`acdc_wsss.metrics`;
``seg/evaluation_<split>.{json,csv,md}``.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from acdc_wsss.errors import DatasetError
from acdc_wsss.layout import RunLayout
from acdc_wsss.metrics import dice_per_class, hd95_per_class
from acdc_wsss.seg.infer import mask_name
from acdc_wsss.utils import atomic_write, progress_bar, write_json

__all__ = ["evaluate_seg", "markdown_table"]

logger = logging.getLogger(__name__)


def _score_volumes(
    out: Path,
    split: str,
    items: list[dict[str, Any]],
    where: Callable[[dict[str, Any]], Path],
    classes: list[str],
    progress: bool,
) -> list[dict[str, Any]]:
    """One row per volume: Dice and HD95 per class of the mask at ``where(item)`` against the item's."""
    labels = list(range(1, len(classes) + 1))
    rows = []
    for it in progress_bar(items, f"scoring {split}", progress):
        path = where(it)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found; segment the split first: python -m monai.bundle run --config_file "
                f"\"['bundles/deeplab_acdc/train.json','bundles/deeplab_acdc/inference.json']\" "
                f"--output_dir {out} --infer_split {split}"
            )
        pred_img, ref_img = nib.load(str(path)), nib.load(it["label"])
        if pred_img.shape != ref_img.shape or not np.allclose(pred_img.affine, ref_img.affine, atol=1e-4):
            raise ValueError(f"{path}: grid differs from its mask {it['label']}; predict again.")
        pred = np.asarray(pred_img.dataobj).astype(np.uint8)
        ref = np.asarray(ref_img.dataobj).astype(np.uint8)
        dice = dice_per_class(pred, ref, labels)
        hd = hd95_per_class(pred, ref, labels, ref_img.header.get_zooms()[:3])
        rows.append(
            {
                "patient": it["patient"],
                "phase": it["phase"],
                **{f"dice_{c}": float(d) for c, d in zip(classes, dice, strict=True)},
                **{f"hd95_{c}": float(h) for c, h in zip(classes, hd, strict=True)},
            }
        )

    return rows


def evaluate_seg(
    output_dir: str | os.PathLike,
    split: str = "testing",
    progress: bool = True,
    masks: Callable[[dict[str, Any]], Path] | None = None,
) -> dict[str, Any]:
    """Dice and HD95 of the predicted masks of one split against its masks, on the original grid.

    Writes ``seg/evaluation_<split>.json``, ``.csv`` (one row per patient and phase) and ``.md``.
    ``masks``: where another set of masks of a datalist item lies (e.g. the stage-2 pseudo labels' NIfTI),
    scored the same way and returned without writing anything.
    """
    out = Path(output_dir)
    run = RunLayout(out)
    items = [it for it in run.split(split) if it.get("label")]
    if not items:
        raise DatasetError(f"split {split!r} of {run.datalist} has no masks to score against.")
    source = run.seg.manifest if masks is None or run.seg.manifest.is_file() else run.cam.manifest
    manifest = json.loads(source.read_text(encoding="utf-8"))
    classes = manifest["classes"]
    where = masks or (lambda it: run.predictions.mask(mask_name(it)))
    rows = _score_volumes(out, split, items, where, classes, progress)

    def means(subset: list[dict[str, Any]]) -> dict[str, float]:
        with warnings.catch_warnings():  # a class missing from every volume of a subset: NaN, no warning
            warnings.simplefilter("ignore", RuntimeWarning)
            return _means(subset)

    def _means(subset: list[dict[str, Any]]) -> dict[str, float]:
        m = {
            k: float(np.nanmean([r[k] for r in subset])) for k in rows[0] if k.startswith(("dice_", "hd95_"))
        }
        m["dice_mean"] = float(np.nanmean([m[f"dice_{c}"] for c in classes]))
        m["hd95_mean"] = float(np.nanmean([m[f"hd95_{c}"] for c in classes]))
        return m

    result = {
        "split": split,
        "seed": manifest.get("seed"),
        "volumes": len(rows),
        "patients": len({r["patient"] for r in rows}),
        "classes": classes,
        "mean": means(rows),
        "by_phase": {
            ph: means([r for r in rows if r["phase"] == ph]) for ph in sorted({r["phase"] for r in rows})
        },
        "per_volume": rows,
    }
    if masks is not None:
        return result
    stage = run.seg
    write_json(result, stage.evaluation(split))
    with (
        atomic_write(stage.evaluation(split, ".csv")) as tmp,
        open(tmp, "w", newline="", encoding="utf-8") as f,
    ):
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with atomic_write(stage.evaluation(split, ".md")) as tmp:
        tmp.write_text(markdown_table(result), encoding="utf-8")
    logger.info("stage 3 on %s:\n%s", split, markdown_table(result))
    return result


def markdown_table(result: dict[str, Any]) -> str:
    """3D Dice and HD95 per class, overall and per phase."""
    classes = result["classes"]
    head = (
        f"| {result['split']} ({result['patients']} patients, {result['volumes']} volumes) | "
        + " | ".join(f"Dice {c}" for c in classes)
        + " | mean Dice | "
        + " | ".join(f"HD95 {c} (mm)" for c in classes)
        + " | mean HD95 |\n"
    )
    head += "| --- " * (2 * len(classes) + 3) + "|\n"

    def line(name: str, m: dict[str, float]) -> str:
        return (
            f"| {name} | "
            + " | ".join(f"{m[f'dice_{c}']:.3f}" for c in classes)
            + f" | {m['dice_mean']:.3f} | "
            + " | ".join(f"{m[f'hd95_{c}']:.1f}" for c in classes)
            + f" | {m['hd95_mean']:.1f} |\n"
        )

    body = line("all", result["mean"]) + "".join(line(ph, m) for ph, m in result["by_phase"].items())
    return head + body
