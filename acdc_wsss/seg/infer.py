"""Stage 3 inference: whole volumes to NIfTI masks and 3D Slicer segmentations on the source grid.

``predict(output_dir, ...)`` segments, with the trained ``seg/`` network of a run:

- a split of the run's datalist (default ``testing``: patients no stage trained on);
- every ED/ES frame of a dataset folder (``dataset_dir``, ACDC or imagesTr/imagesTs layout; masks not
  needed, e.g. the official ``testing/`` set);
- single NIfTI files (``images``): no ED/ES pair, so the whole field of view is segmented (the network is
  fully convolutional) and the largest component of each class is kept.

It runs the MONAI components of :mod:`acdc_wsss.seg.components` in a ``SupervisedEvaluator``, as the
bundle's ``inference.json`` does: the run's preprocessing chain, batched 2D slices (optional flip TTA),
anatomy fusion, optional dense CRF, each class's largest component, ``Invertd`` to the source grid, and
writes atomically ``predictions/<patientXXX_frameYY>_seg.nii.gz`` (uint8: 0 background, 1 RV, 2 Myo, 3 LV,
exactly the source image's shape and affine) with ``<patientXXX_frameYY>_seg.seg.nrrd`` beside it (the
same labels as a 3D Slicer segmentation with named, coloured segments) and ``acdc_labels.ctbl``.

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
from monai.transforms import KeepLargestConnectedComponent

from acdc_wsss.data.acdc import make_datalist
from acdc_wsss.data.check import validated_patients
from acdc_wsss.data.preprocess import PreprocessConfig
from acdc_wsss.errors import DatasetError
from acdc_wsss.layout import RunLayout
from acdc_wsss.seg.components import (
    DEFAULT_ANATOMY,
    DEFAULT_CRF,
    DEFAULT_EPI_PX,
    DEFAULT_LINEAR_INVERT,
    DEFAULT_LV_BRIGHT,
    DEFAULT_LV_ENCLOSED,
    DEFAULT_LV_HULL,
    DEFAULT_RV_ATTACHED,
    DEFAULT_RV_CONFIDENT,
    DEFAULT_RV_DESCENT,
    DEFAULT_TEMPORAL,
    PredictionRecord,
    TerminalProgress,
    WriteMaskd,
    fuse_with_rules,
    inference_evaluator,
    inference_postprocessing,
    inference_preprocessing,
    mask_name,
)
from acdc_wsss.seg.model import load_seg, recorded_septal, seg_manifest
from acdc_wsss.utils import moved

__all__ = [
    "check_inference_output",
    "fuse_with_rules",
    "inference_items",
    "largest_components",
    "mask_name",
    "predict",
]

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
    """Keep, for every class 1..num_classes, only its largest 3D connected component (26-connected):
    MONAI's ``KeepLargestConnectedComponent``, as inference's postprocessing runs it."""
    keep = KeepLargestConnectedComponent(list(range(1, num_classes + 1)), independent=True, connectivity=3)
    out = keep(torch.as_tensor(labels[None]))
    return np.asarray(out[0], dtype=labels.dtype)


def _single_file_config(path: Path, base: PreprocessConfig) -> PreprocessConfig:
    """A crop that holds the whole field of view of one file at the run's spacing (multiple of 8)."""
    img = nib.load(str(path))
    if len(img.shape) != 3:
        raise DatasetError(f"{path}: expected one 3D frame (H, W, slices), got shape {img.shape}.")
    zooms = img.header.get_zooms()[:2]
    size = [int(np.ceil(n * z / base.spacing / 8) * 8) for n, z in zip(img.shape[:2], zooms, strict=True)]
    side = max(max(size), base.roi_size[0], base.roi_size[1])
    return PreprocessConfig(**{**base.to_dict(), "roi_size": (side, side), "centre": "image"})


def _listed_items(
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


def inference_items(
    output_dir: str | os.PathLike,
    split: str | None = "testing",
    dataset_dir: str | None = None,
    images: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """The volumes to segment: single files (``images``), else every ED/ES frame of ``dataset_dir``, else
    the run's ``split``; each with ``has_pair`` (its ED/ES partner is known), ED frames before their ES
    frame (an ES frame's anatomy rules use its ED frame's). Refuses an empty list."""
    items = _listed_items(Path(output_dir), split, dataset_dir, images)
    if not items:
        where = RunLayout(output_dir).datalist
        raise DatasetError(f"nothing to segment: split {split!r} of {where} is empty.")
    items = sorted(items, key=lambda it: (it["patient"], it["phase"] != "ED"))
    return [{**it, "has_pair": bool(it.get("pair"))} for it in items]


def check_inference_output(
    output_dir: str | os.PathLike, dataset_dir: str | None = None, images: Sequence[str] | None = None
) -> None:
    """Refuse, before any work, a run without a finished stage 3 (with the command that makes it) and an
    output folder inside the folder of an input (inputs are never written into)."""
    out = Path(output_dir)
    for src in [dataset_dir, *(images or [])]:
        folder = None if src is None else (Path(src) if dataset_dir == src else Path(src).parent)
        if folder is not None and out.resolve().is_relative_to(folder.resolve()):
            raise DatasetError(f"output_dir {out} lies inside the input folder {folder}; choose one outside.")
    seg_manifest(out)


#: :func:`predict`'s arguments that it hands to
#: :func:`~acdc_wsss.seg.components.inference_postprocessing` and records with the masks (the chain's
#: record of its inference settings is built from it).
POSTPROCESSING = (
    "crf", "largest_component", "anatomy", "temporal", "rv_descent", "lv_hull", "epi_px", "rv_attached",
    "lv_enclosed", "lv_bright", "linear_invert", "rv_confident",
)  # fmt: skip


def predict(
    output_dir: str | os.PathLike,
    split: str | None = "testing",
    dataset_dir: str | None = None,
    images: Sequence[str] | None = None,
    checkpoint: str = "last",
    flip: bool = True,
    crf: bool = DEFAULT_CRF,
    largest_component: bool = True,
    anatomy: float | None = DEFAULT_ANATOMY,
    device: str = "cpu",
    progress: bool = True,
    nrrd: bool = True,
    temporal: float | None = DEFAULT_TEMPORAL,
    rv_descent: float | None = DEFAULT_RV_DESCENT,
    lv_hull: bool = DEFAULT_LV_HULL,
    epi_px: int = DEFAULT_EPI_PX,
    rv_attached: bool = DEFAULT_RV_ATTACHED,
    lv_enclosed: bool = DEFAULT_LV_ENCLOSED,
    lv_bright: float | None = DEFAULT_LV_BRIGHT,
    linear_invert: bool = DEFAULT_LINEAR_INVERT,
    rv_confident: float | None = DEFAULT_RV_CONFIDENT,
) -> Path:
    """Segment volumes with the run's stage-3 network; return ``output_dir/predictions``.

    Args:
        output_dir: the run folder (``seg/`` trained).
        split: datalist split to segment (used when neither ``dataset_dir`` nor ``images`` is given).
        dataset_dir: a dataset folder to segment instead (masks optional).
        images: NIfTI files (one frame each) to segment instead.
        checkpoint: ``last`` or ``best``.
        flip: average with the horizontally flipped slice.
        crf: dense CRF on each slice's fused probabilities before the argmax (grayscale MRI kernels,
            :data:`acdc_wsss.crf.CRF_SEG`; cross-validated, ``bench/anatomy.py --crf``).
        largest_component: keep each class's largest 3D component.
        anatomy: where a frame has its ED/ES pair, fuse the network's probabilities with the stage-2
            rules from the scan run on the frame, without tags (:func:`fuse_with_rules`; the rules' label
            gets this probability); None: the network alone. Chosen on the validation patients
            (``bench/stage3.py``).
        device: torch device.
        progress: progress bar on a terminal.
        nrrd: also write each mask as a 3D Slicer segmentation (``.seg.nrrd``).
        temporal: where a patient has both frames, the weight of the ED frame's probabilities, carried onto
            the ES frame by registration, in the ES frame's (:func:`~acdc_wsss.seg.components.mix_with_ed`);
            None: each frame alone. Chosen on the validation patients (``bench/anatomy.py``).
        rv_descent, lv_hull, epi_px, rv_attached, lv_enclosed, lv_bright: the rules on the predicted masks,
            chosen on the non-test patients (``bench/anatomy.py``): the ES RV cut (mm, None: kept), the LV
            convex, the epicardium's pull (px), the RV's detached pieces and the unenclosed basal LV
            removed, the ED frame's bright endocardium made LV (a share; None: not)
            (:func:`~acdc_wsss.seg.components.inference_postprocessing`).
        linear_invert: carry the masks back to the scan's grid as one-hot channels, linearly interpolated,
            then the argmax (False: nearest-neighbour); cross-validated (``bench/inference.py``).
        rv_confident: the ES RV cut keeps a slice's RV whose mean probability is at least this share of
            the frame's RV's on the uncut slices (None: always cut); cross-validated (``bench/anatomy.py``).
    """
    out = Path(output_dir)
    run = RunLayout(out)
    check_inference_output(out, dataset_dir, images)
    manifest, model = load_seg(out, checkpoint, torch.device(device))
    classes = manifest["classes"]
    items = inference_items(out, split, dataset_dir, images)
    base = PreprocessConfig(**manifest["preprocess"])
    # one chain for the run's volumes; a single file gets a crop that holds its whole field of view
    groups = (
        [([it], _single_file_config(Path(it["image"]), base)) for it in items] if images else [(items, base)]
    )
    writer = WriteMaskd(run.predictions.path, classes, nrrd=nrrd)
    bar = TerminalProgress(enabled=progress)
    after = {k: v for k, v in locals().items() if k in POSTPROCESSING}  # predict's own arguments
    settings = {"flip": flip, **after}
    septal = recorded_septal(manifest)
    for group, cfg in groups:
        chain = inference_preprocessing(cfg, len(classes))
        post = inference_postprocessing(
            chain, writer, spacing=cfg.spacing, num_classes=len(classes), septal=septal, **after
        )
        inference_evaluator(group, model, chain, post, device, flip, handlers=[bar]).run()
    source = "images" if images else ("dataset_dir" if dataset_dir else f"split {split}")
    record = {"checkpoint": checkpoint, "seed": manifest.get("seed"), **settings, "source": source}
    return PredictionRecord(writer, record).write()
