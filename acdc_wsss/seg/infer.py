"""Stage 3 inference and evaluation: whole volumes to NIfTI masks on the source grid, Dice and HD95.

``predict(output_dir, ...)`` segments, with the trained ``seg/`` network of a run:

- a split of the run's datalist (default ``testing``: patients no stage trained on);
- every ED/ES frame of an ACDC-layout folder (``dataset_dir``; masks not needed, e.g. the official
  ``testing/`` set);
- single NIfTI files (``images``): no ED/ES pair, so the whole field of view is segmented (the network is
  fully convolutional) and the largest component of each class is kept.

Each volume goes through the run's preprocessing chain, batched 2D slices (optional flip TTA and dense
CRF), optional largest-component clean-up, the inverse of the chain, and is written atomically as
``predictions/<patientXXX_frameYY>_seg.nii.gz``: uint8 (0 background, 1 RV, 2 Myo, 3 LV) with exactly the
source image's shape and affine, next to ``acdc_labels.ctbl``, the 3D Slicer colour table naming them.

:mod:`acdc_wsss.seg.evaluate` scores them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage as ndi

from acdc_wsss.crf import CRF_MRI, dense_crf
from acdc_wsss.data.acdc import make_datalist
from acdc_wsss.data.check import validated_patients
from acdc_wsss.data.preprocess import PreprocessConfig
from acdc_wsss.data.slices import SliceDataset, volume_key
from acdc_wsss.errors import DatasetError
from acdc_wsss.layout import RunLayout
from acdc_wsss.nifti import save_nifti, write_colour_table
from acdc_wsss.pseudo.rules import es_lv_region, scan_labels
from acdc_wsss.seg.model import load_seg, predict_slices, volume_slices
from acdc_wsss.utils import moved, progress_bar, write_json

__all__ = ["fuse_with_rules", "largest_components", "mask_name", "predict"]

logger = logging.getLogger(__name__)

#: Names that lived here before 0.2.0 (import them from :mod:`acdc_wsss.seg`).
__getattr__ = moved(
    __name__,
    {
        "evaluate_seg": "acdc_wsss.seg.evaluate",
        "markdown_table": "acdc_wsss.seg.evaluate",
        "SLICER_COLOURS": "acdc_wsss.nifti",
    },
)


def largest_components(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Keep, for every class 1..num_classes, only its largest 3D connected component (26-connected)."""
    out = labels.copy()
    structure = np.ones((3,) * labels.ndim, bool)
    for c in range(1, num_classes + 1):
        comps, n = ndi.label(labels == c, structure)
        if n > 1:
            sizes = np.bincount(comps.ravel())[1:]
            out[(comps > 0) & (comps != 1 + int(sizes.argmax()))] = 0
    return out


def fuse_with_rules(probs: np.ndarray, rules: np.ndarray, confidence: float) -> np.ndarray:
    """Product of experts: the network's ``(S, K, H, W)`` probabilities times the rules' ``(S, H, W)``
    labels read as probabilities (``confidence`` on the rule's label, the rest shared), renormalised."""
    k = probs.shape[1]
    rest = (1 - confidence) / (k - 1)
    prior = np.eye(k, dtype=np.float32)[rules].transpose(0, 3, 1, 2) * (confidence - rest) + rest
    fused = probs * prior
    return fused / fused.sum(axis=1, keepdims=True)


def _single_file_config(path: Path, base: PreprocessConfig) -> PreprocessConfig:
    """A crop that holds the whole field of view of one file at the run's spacing (multiple of 8)."""
    img = nib.load(str(path))
    if len(img.shape) != 3:
        raise DatasetError(f"{path}: expected one 3D frame (H, W, slices), got shape {img.shape}.")
    zooms = img.header.get_zooms()[:2]
    size = [int(np.ceil(n * z / base.spacing / 8) * 8) for n, z in zip(img.shape[:2], zooms, strict=True)]
    side = max(max(size), base.roi_size[0], base.roi_size[1])
    return PreprocessConfig(**{**base.to_dict(), "roi_size": (side, side), "centre": "image"})


def _items_from(
    output_dir: Path, split: str | None, dataset_dir: str | None, images: Sequence[str] | None
) -> list[dict[str, Any]]:
    if images:
        items = []
        for p in images:
            path = Path(p)
            if not path.is_file():
                raise DatasetError(f"{path}: no such NIfTI file.")
            stem = path.name.removesuffix(".gz").removesuffix(".nii")
            items.append({"image": str(path.resolve()), "patient": stem, "frame": 0, "phase": "frame"})
        return items
    if dataset_dir is not None:
        # the dataset root or a testing/-style folder of patients; masks optional (scored where present)
        data = Path(dataset_dir).resolve()
        patients = validated_patients(data, progress=False, require_masks=False)
        datalist = make_datalist(patients, data)
        paths = ("image", "label", "pair", "cine")
        return [{**it, **{k: str(data / it[k]) for k in paths if it.get(k)}} for it in datalist["training"]]
    return RunLayout(output_dir).split(split or "testing")


def mask_name(item: dict[str, Any]) -> str:
    """The name of an item's mask: its volume key, or a single file's stem."""
    return item["patient"] if item.get("phase") == "frame" else volume_key(item)


def _refuse_inside(out: Path, dataset_dir: str | None, images: Sequence[str] | None) -> None:
    """Refuse an output folder inside the folder of an input (inputs are never written into)."""
    for src in [dataset_dir, *(images or [])]:
        folder = None if src is None else (Path(src) if dataset_dir == src else Path(src).parent)
        if folder is not None and out.resolve().is_relative_to(folder.resolve()):
            raise DatasetError(f"output_dir {out} lies inside the input folder {folder}; choose one outside.")


def _jobs(
    run: RunLayout, manifest: dict[str, Any], items: list[dict[str, Any]], images: bool
) -> list[tuple[SliceDataset, int]]:
    """The volumes to segment as ``(dataset, index)``: through the run's chain and cache, or (single
    files) through a chain whose crop holds the whole field of view. ED frames come first: an ES frame's
    anatomy rules seek its LV inside its ED frame's."""
    if images:
        base = PreprocessConfig(**manifest["preprocess"])
        sets = [
            SliceDataset(
                [it],
                _single_file_config(Path(it["image"]), base),
                manifest["classes"],
                progress=False,
                num_workers=0,
                require_tags=False,
            )
            for it in items
        ]
    else:
        sets = [run.slices(manifest, items, num_workers=0, require_tags=False)]
    jobs: list[tuple[SliceDataset, int]] = []
    for ds in sets:
        order = sorted(
            range(len(ds.items)), key=lambda i: (ds.items[i]["patient"], ds.items[i]["phase"] != "ED")
        )
        jobs += [(ds, v) for v in order]
    return jobs


def _anatomy_rules(
    x: torch.Tensor,
    vol: dict[str, Any],
    item: dict[str, Any],
    spacing: float,
    ed_rules: dict[str, np.ndarray],
) -> np.ndarray:
    """The stage-2 rules' labels from the scan (``(S, H, W)``, no tags: none at inference) of a frame ``x``
    ``(S, 1, H, W)`` with its ED/ES pair; an ED frame's labels are kept in ``ed_rules`` for its ES frame,
    whose LV is sought inside them."""
    image, motion = x[:, 0].permute(1, 2, 0).numpy(), vol["motion"][0].float().numpy()
    ed = ed_rules.get(item["patient"]) if item["phase"] == "ES" else None
    within = es_lv_region(ed) if ed is not None and ed.shape == image.shape else None
    rules = scan_labels(image, motion, None, spacing, lv_within=within)
    if item["phase"] == "ED":
        ed_rules[item["patient"]] = rules
    return rules.transpose(2, 0, 1)


def _labels(
    probs: np.ndarray, x: torch.Tensor, crf: bool, largest_component: bool, num_classes: int
) -> np.ndarray:
    """``(H, W, S)`` uint8 labels of ``(S, K, H, W)`` probabilities: argmax (after a dense CRF on the
    slice ``x`` when ``crf``), then each class's largest 3D component when ``largest_component``."""
    if crf:
        img = x[:, 0].numpy()
        labels = np.stack([dense_crf(img[z], probs[z], CRF_MRI).argmax(0) for z in range(len(x))])
    else:
        labels = probs.argmax(1)
    labels = labels.transpose(1, 2, 0).astype(np.uint8)  # (H, W, S)
    if largest_component:
        labels = largest_components(labels, num_classes)
    return labels


def predict(
    output_dir: str | os.PathLike,
    split: str | None = "testing",
    dataset_dir: str | None = None,
    images: Sequence[str] | None = None,
    checkpoint: str = "last",
    flip: bool = True,
    crf: bool = False,
    largest_component: bool = True,
    anatomy: float | None = 0.5,
    device: str = "cpu",
    progress: bool = True,
) -> Path:
    """Segment volumes with the run's stage-3 network; return ``output_dir/predictions``.

    Args:
        output_dir: the run folder (``seg/`` trained).
        split: datalist split to segment (used when neither ``dataset_dir`` nor ``images`` is given).
        dataset_dir: an ACDC-layout folder to segment instead (masks optional).
        images: NIfTI files (one frame each) to segment instead.
        checkpoint: ``last`` or ``best``.
        flip: average with the horizontally flipped slice.
        crf: dense CRF on each slice's probabilities (grayscale MRI kernels).
        largest_component: keep each class's largest 3D component.
        anatomy: where a frame has its ED/ES pair, fuse the network's probabilities with the stage-2
            rules from the scan run on the frame, without tags (:func:`fuse_with_rules`; the rules' label
            gets this probability); None: the network alone. Chosen on the validation patients
            (``bench/stage3.py``).
        device: torch device.
        progress: progress bar on a terminal.
    """
    out = Path(output_dir)
    run = RunLayout(out)
    _refuse_inside(out, dataset_dir, images)
    dev = torch.device(device)
    manifest, model = load_seg(out, checkpoint, dev)
    classes = manifest["classes"]
    items = _items_from(out, split, dataset_dir, images)
    if not items:
        raise DatasetError(f"nothing to segment: split {split!r} of {run.datalist} is empty.")
    written = []
    ed_rules: dict[str, np.ndarray] = {}
    for ds, v in progress_bar(_jobs(run, manifest, items, bool(images)), "segmenting volumes", progress):
        vol, item = ds.volumes[v], ds.items[v]
        x = vol["image"].as_tensor().permute(3, 0, 1, 2).float()  # (S, 1, H, W)
        probs = predict_slices(model, volume_slices(vol["image"], model.context), dev, flip=flip).numpy()
        if anatomy is not None and item.get("pair"):
            rules = _anatomy_rules(x, vol, item, ds.config.spacing, ed_rules)
            probs = fuse_with_rules(probs, rules, anatomy)
        labels = _labels(probs, x, crf, largest_component, len(classes))
        back = ds.to_original(v, torch.as_tensor(labels[None], dtype=torch.float32))
        path = run.predictions.mask(mask_name(item))
        save_nifti(back[0].numpy().round(), back.affine.numpy(), path)
        written.append(path.name)
    write_colour_table(run.predictions.colour_table, classes)
    source = "images" if images else ("dataset_dir" if dataset_dir else f"split {split}")
    settings = {"flip": flip, "crf": crf, "largest_component": largest_component, "anatomy": anatomy}
    record = {"checkpoint": checkpoint, "seed": manifest.get("seed"), **settings, "source": source}
    write_json({**record, "files": written, "classes": classes}, run.predictions.manifest)
    where, table = run.predictions.path, run.predictions.colour_table.name
    logger.info("%d masks written to %s (3D Slicer colour table: %s)", len(written), where, table)
    return where
