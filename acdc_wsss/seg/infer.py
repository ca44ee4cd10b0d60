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

``evaluate_seg(output_dir, split)`` scores those files against the masks on the original grid: Dice and
HD95 (mm) per class, patient and phase, and their means, through :mod:`acdc_wsss.metrics`; CSV, JSON and
markdown in ``seg/``.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import warnings
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
from acdc_wsss.metrics import dice_per_class, hd95_per_class
from acdc_wsss.nifti import save_nifti, write_colour_table
from acdc_wsss.pseudo.priors import es_lv_region, priors_labels
from acdc_wsss.seg.train import load_seg, predict_slices
from acdc_wsss.utils import atomic_write, progress_bar, write_json

__all__ = [
    "evaluate_seg",
    "fuse_with_rules",
    "largest_components",
    "predict",
]

logger = logging.getLogger(__name__)


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
        data = Path(dataset_dir)
        patients = validated_patients(data, progress=False)
        datalist = make_datalist(patients, data)
        return [
            {
                **it,
                **{k: str(data.resolve() / it[k]) for k in ("image", "label", "pair", "cine") if it.get(k)},
            }
            for it in datalist["training"]
        ]
    return RunLayout(output_dir).split(split or "testing")


def _output_name(item: dict[str, Any]) -> str:
    """The name of an item's mask: its volume key, or a single file's stem."""
    return item["patient"] if item.get("phase") == "frame" else volume_key(item)


def predict(
    output_dir: str | os.PathLike,
    split: str | None = "testing",
    dataset_dir: str | None = None,
    images: Sequence[str] | None = None,
    checkpoint: str = "last",
    flip: bool = True,
    crf: bool = False,
    largest_component: bool = True,
    anatomy: float | None = 0.7,
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
            anatomy rules run on the frame (:func:`fuse_with_rules`; the rules' label gets this
            probability); None: the network alone. 0.7 was chosen on the validation patients.
        device: torch device.
        progress: progress bar on a terminal.
    """
    out = Path(output_dir)
    run = RunLayout(out)
    for src in [dataset_dir, *(images or [])]:
        folder = None if src is None else (Path(src) if dataset_dir == src else Path(src).parent)
        if folder is not None and out.resolve().is_relative_to(folder.resolve()):
            raise DatasetError(f"output_dir {out} lies inside the input folder {folder}; choose one outside.")
    dev = torch.device(device)
    manifest, model = load_seg(out, checkpoint, dev)
    classes = manifest["classes"]
    base = PreprocessConfig(**manifest["preprocess"])
    items = _items_from(out, split, dataset_dir, images)
    if not items:
        raise DatasetError(f"nothing to segment: split {split!r} of {run.datalist} is empty.")
    target = run.predictions
    groups: list[tuple[PreprocessConfig, list[dict[str, Any]], Path | None]]
    if images:
        groups = [(_single_file_config(Path(it["image"]), base), [it], None) for it in items]
    else:
        groups = [(base, items, run.cache)]
    jobs: list[tuple[SliceDataset, int]] = []
    for config, group, cache in groups:
        ds = SliceDataset(
            group, config, classes, cache_dir=cache, progress=False, num_workers=0, require_tags=False
        )
        # ED frames first: an ES frame's anatomy rules seek its LV inside its ED frame's
        order = sorted(
            range(len(ds.items)), key=lambda i: (ds.items[i]["patient"], ds.items[i]["phase"] != "ED")
        )
        jobs += [(ds, v) for v in order]
    written = []
    ed_rules: dict[str, np.ndarray] = {}
    for ds, v in progress_bar(jobs, "segmenting volumes", progress):
        vol, item = ds.volumes[v], ds.items[v]
        x = vol["image"].as_tensor().permute(3, 0, 1, 2).float()  # (S, 1, H, W)
        probs = predict_slices(model, x, dev, flip=flip).numpy()  # (S, K, H, W)
        if anatomy is not None and item.get("pair"):
            image, motion = x[:, 0].permute(1, 2, 0).numpy(), vol["motion"][0].float().numpy()
            ed = ed_rules.get(item["patient"]) if item["phase"] == "ES" else None
            within = es_lv_region(ed) if ed is not None and ed.shape == image.shape else None
            rules = priors_labels(image, motion, None, ds.config.spacing, lv_within=within)
            if item["phase"] == "ED":
                ed_rules[item["patient"]] = rules
            probs = fuse_with_rules(probs, rules.transpose(2, 0, 1), anatomy)
        if crf:
            img = x[:, 0].numpy()
            labels = np.stack([dense_crf(img[z], probs[z], CRF_MRI).argmax(0) for z in range(len(x))])
        else:
            labels = probs.argmax(1)
        labels = labels.transpose(1, 2, 0).astype(np.uint8)  # (H, W, S)
        if largest_component:
            labels = largest_components(labels, len(classes))
        back = ds.to_original(v, torch.as_tensor(labels[None], dtype=torch.float32))
        path = target.mask(_output_name(item))
        save_nifti(back[0].numpy().round(), back.affine.numpy(), path)
        written.append(path.name)
    write_colour_table(target.colour_table, classes)
    write_json(
        {
            "checkpoint": checkpoint,
            "seed": manifest.get("seed"),
            "flip": flip,
            "crf": crf,
            "largest_component": largest_component,
            "anatomy": anatomy,
            "source": "images" if images else ("dataset_dir" if dataset_dir else f"split {split}"),
            "files": written,
            "classes": classes,
        },
        target.manifest,
    )
    logger.info(
        "%d masks written to %s (3D Slicer colour table: %s)",
        len(written),
        target.path,
        target.colour_table.name,
    )
    return target.path


def evaluate_seg(
    output_dir: str | os.PathLike, split: str = "testing", progress: bool = True
) -> dict[str, Any]:
    """Dice and HD95 of the predicted masks of one split against its masks, on the original grid.

    Writes ``seg/evaluation_<split>.json``, ``.csv`` (one row per patient and phase) and ``.md``.
    """
    out = Path(output_dir)
    run = RunLayout(out)
    items = [it for it in run.split(split) if it.get("label")]
    if not items:
        raise DatasetError(f"split {split!r} of {run.datalist} has no masks to score against.")
    manifest = json.loads(run.seg.manifest.read_text(encoding="utf-8"))
    classes = manifest["classes"]
    labels = list(range(1, len(classes) + 1))
    rows = []
    for it in progress_bar(items, f"scoring {split}", progress):
        path = run.predictions.mask(_output_name(it))
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
