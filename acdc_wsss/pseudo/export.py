"""Stage 2 export: pseudo labels as 2D arrays for stage 3 and as 3D NIfTI masks for 3D Slicer.

``export_pseudo(RUN, row, value)`` turns every volume with stored CAMs into labels with one evaluation
row's rule (see :data:`acdc_wsss.pseudo.rows.ROWS`) and writes, atomically:

- ``cam/pseudo/<patientXXX_frameYY>.npz``: ``labels`` ``(H, W, S)`` uint8 on the preprocessed grid;
  ``target``, the stage-3 training target: the same with uncertain pixels set to 255 (ignored by the
  loss; see :func:`acdc_wsss.pseudo.rules.uncertain_to_ignore`); and ``confidence`` ``(H, W, S)``
  float16 in [0, 1], how far each pixel lies from a label boundary, 0 on slices missing a tagged class
  (:func:`acdc_wsss.pseudo.rules.label_confidence`);
- ``cam/nifti/<patientXXX_frameYY>_pseudo.nii.gz``: the same labels mapped back through the inverse of the
  preprocessing onto the source image's grid (same shape, affine and orientation; uint8; 0 background,
  1 RV, 2 Myo, 3 LV), as the stage-3 masks are: one-hot channels interpolated linearly, then the argmax
  (:meth:`~acdc_wsss.data.slices.SliceDataset.labels_to_original`), ready to lay over the scan in 3D Slicer.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from acdc_wsss.data.slices import volume_key
from acdc_wsss.layout import RunLayout
from acdc_wsss.nifti import save_nifti
from acdc_wsss.pseudo.evaluate import chosen_setting
from acdc_wsss.pseudo.rows import DEFAULT_ROWS, ROW_SETS, row_labels, row_set, run_septal, volume_contexts
from acdc_wsss.pseudo.rules import label_confidence, uncertain_to_ignore
from acdc_wsss.pseudo.store import KeptLabels, inference_volumes, labels_fingerprint, read_cam_manifest
from acdc_wsss.utils import atomic_write, progress_bar, write_json, write_npz

__all__ = ["export_pseudo"]

logger = logging.getLogger(__name__)


def export_pseudo(
    output_dir: str | os.PathLike,
    row: str | None = None,
    value: Any = None,
    splits: list[str] | None = None,
    ignore_band: int = 1,
    progress: bool = True,
) -> Path:
    """Export pseudo labels of every volume with CAMs (or of ``splits``); return ``cam/``.

    Args:
        output_dir: the run folder.
        row: the evaluation row whose rule makes the labels (None: the full refinement of the data set,
            ``scan`` for ACDC, ``pcm_crf`` for photos).
        value: that row's setting (background score, threshold or CRF confidence); None takes the one the
            latest evaluation chose on the validation patients.
        splits: datalist splits to export (default: those the CAMs were made for).
        ignore_band: pixels each side of a class boundary ignored in ``target``.
        progress: progress bar on a terminal.
    """
    out = Path(output_dir)
    run = RunLayout(out)
    manifest = read_cam_manifest(out)
    kind = row_set(manifest)
    row = row or DEFAULT_ROWS[kind]
    if row not in ROW_SETS[kind] or row == "baseline":
        names = sorted(r for r in ROW_SETS[kind] if r != "baseline")
        raise ValueError(f"unknown pseudo-label row {row!r}; expected one of {names}.")
    if value is None:
        value = chosen_setting(out, row)
    items = [
        it
        for split in splits or manifest["splits"]
        for it in run.split(split)
        if volume_key(it) in manifest["volumes"]
    ]
    ds = inference_volumes(manifest, items, out, progress)
    stage = run.cam
    kept = KeptLabels(out, row, value)  # the evaluation's labels of this row, where it made them
    volumes = progress_bar(range(len(ds.volumes)), "exporting pseudo labels", progress)
    for v, ctx in volume_contexts(out, ds, volumes):
        key = volume_key(ds.items[v])
        labels = kept.get(key)
        if labels is None:
            labels = row_labels(row, ctx, value)
        tags = ds.volumes[v]["tags"].numpy()
        target = uncertain_to_ignore(labels, tags, ignore_band)
        confidence = label_confidence(labels, tags).astype(np.float16)
        write_npz(stage.pseudo_labels(key), labels=labels, target=target, confidence=confidence)
        if (
            kind == "rgb"
        ):  # photos: PNGs of class indices (labels; training target with 255) beside the arrays
            for path, arr in ((stage.pseudo_png(key), labels), (stage.pseudo_png(key, target=True), target)):
                with atomic_write(path) as tmp:
                    Image.fromarray(arr[..., 0]).save(tmp, format="PNG")
            continue
        back = ds.labels_to_original(v, torch.as_tensor(labels[None]))
        save_nifti(back[0].numpy().round(), back.affine.numpy(), stage.pseudo_nifti(key))
    write_json(
        {
            "row": row,
            "value": value,
            "ignore_band": ignore_band,
            "septal": None if kind == "rgb" else run_septal(out),
            "seed": manifest.get("seed"),
            "labels_fingerprint": labels_fingerprint(out),
            "volumes": [volume_key(it) for it in ds.items],
            "classes": manifest["classes"],
        },
        stage.pseudo_manifest,
    )
    logger.info(
        "pseudo labels of %d volumes written to %s%s",
        len(ds.volumes),
        stage.pseudo,
        "" if kind == "rgb" else f" (2D) and {stage.nifti} (NIfTI)",
    )
    return stage.path
