"""Stage 3 outputs on VOC: whole-image predictions as PNG and their mIoU (21 classes, void ignored).

The network, its training and its inference step are stage 3's own (:mod:`acdc_wsss.seg`); this module
only reads VOC images and writes PNGs instead of NIfTI volumes.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from acdc_wsss.crf import CRF_RGB, dense_crf
from acdc_wsss.layout import RunLayout
from acdc_wsss.metrics import DiceAccumulator
from acdc_wsss.seg.model import load_seg, predict_slices
from acdc_wsss.utils import atomic_write, progress_bar, write_json
from voc_adapter.data import VOC_CLASSES, read_mask
from voc_adapter.dataset import VOCVolumes

__all__ = ["evaluate_voc", "miou_table", "predict_voc"]

logger = logging.getLogger(__name__)


def predict_voc(
    output_dir: str | os.PathLike,
    split: str = "validation",
    checkpoint: str = "last",
    flip: bool = True,
    crf: bool = False,
    device: str = "cpu",
    progress: bool = True,
) -> Path:
    """Segment every image of ``split`` with the run's stage-3 network; write ``predictions/<id>.png``."""
    run = RunLayout(output_dir)
    dev = torch.device(device)
    manifest, model = load_seg(run.root, checkpoint, dev)
    datalist = json.loads(run.datalist.read_text(encoding="utf-8"))
    images = VOCVolumes(datalist[split])
    for v in progress_bar(range(len(images)), "segmenting images", progress):
        vol = images.volumes[v]
        probs = predict_slices(model, vol["image"][..., 0][None], dev, flip=flip)[0].numpy()
        if crf:
            probs = dense_crf(vol["rgb"][..., 0], probs, CRF_RGB)
        with atomic_write(run.predictions.png(images.items[v]["id"])) as tmp:
            Image.fromarray(probs.argmax(0).astype(np.uint8)).save(tmp, format="PNG")
    record = {"split": split, "seed": manifest.get("seed"), "checkpoint": checkpoint, "flip": flip}
    record["crf"] = crf
    write_json(record, run.predictions.manifest)
    return run.predictions.path


def evaluate_voc(output_dir: str | os.PathLike, split: str = "validation") -> dict[str, Any]:
    """Per-class IoU and mIoU over background + 20 classes of ``predictions/`` against the masks (255
    ignored); ``seg/evaluation_<split>.{json,md}``."""
    run = RunLayout(output_dir)
    datalist = json.loads(run.datalist.read_text(encoding="utf-8"))
    acc = DiceAccumulator(range(len(VOC_CLASSES) + 1))
    for item in datalist[split]:
        path = run.predictions.png(item["id"])
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found; segment the split first (stage 'evaluate' does both)."
            )
        ref = read_mask(item["label"])
        pred = np.array(Image.open(path))
        acc.update(np.where(ref == 255, 255, pred), ref)
    iou = acc.compute_iou()
    names = ["background", *VOC_CLASSES]
    trained = run.seg.manifest
    seed = json.loads(trained.read_text(encoding="utf-8")).get("seed") if trained.is_file() else None
    result = {
        "split": split,
        "seed": seed,
        "images": len(datalist[split]),
        "iou": {n: float(x) for n, x in zip(names, iou, strict=True)},
        "miou": float(np.nanmean(iou)),
    }
    write_json(result, run.seg.evaluation(split))
    with atomic_write(run.seg.evaluation(split, ".md")) as tmp:
        tmp.write_text(miou_table(result), encoding="utf-8")
    return result


def miou_table(result: dict[str, Any]) -> str:
    """Per-class IoU and mIoU as markdown (classes absent from the split show as nan)."""
    rows = "".join(f"| {n} | {x:.3f} |\n" for n, x in result["iou"].items())
    return (
        f"| {result['split']} ({result['images']} images) | IoU |\n| --- | --- |\n"
        + rows
        + f"| **mIoU** | **{result['miou']:.3f}** |\n"
    )
