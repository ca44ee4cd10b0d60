"""Figure panels of what the method does: image, baseline CAM, L2G CAM, refined labels, the pseudo label
(training target), the stage-3 prediction and the ground truth."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from acdc_wsss.data.slices import volume_key
from acdc_wsss.layout import RunLayout
from acdc_wsss.pseudo.infer import load_cams
from acdc_wsss.utils import atomic_write

__all__ = ["figure_panels"]

logger = logging.getLogger(__name__)

#: Label colours: background transparent, RV cyan, Myo magenta, LV yellow; 255 (ignored) white.
_COLOURS = np.zeros((256, 4))
_COLOURS[1:4] = [[0, 1, 1, 0.55], [1, 0, 1, 0.55], [1, 1, 0, 0.55]]
_COLOURS[255] = [1, 1, 1, 0.7]


def figure_panels(
    run: str | os.PathLike,
    baseline_run: str | os.PathLike | None,
    out_png: str | os.PathLike,
    split: str | None = None,
    slices: int = 4,
) -> Path | None:
    """Save a PNG grid, one row per mid-ventricular slice of evenly spread volumes: the image, the baseline
    CAM and the L2G CAM (class maxima), the refined labels and the pseudo label (the stage-3 target,
    ignored pixels white) from ``cam/pseudo``, the stage-3 network's prediction (when ``seg/`` holds a
    finished network) and the ground truth.

    Args:
        run: L2G run with ``cam/`` (and ``cam/pseudo`` from the export).
        baseline_run: plain-CAM run with ``cam/`` (None: the column is left out).
        out_png: output file.
        split: datalist split to draw from (default: validation when it has CAMs, else training).
        slices: number of rows.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layout = RunLayout(run)
    manifest = json.loads(layout.cam.manifest.read_text(encoding="utf-8"))
    if manifest.get("dataset", "acdc") != "acdc":
        logger.info("figure panels are drawn for ACDC runs; %s is a %s run.", run, manifest["dataset"])
        return None
    if split is None:
        split = "validation" if "validation" in manifest.get("splits", []) else "training"
    items = [it for it in layout.split(split) if volume_key(it) in manifest["volumes"]]
    picks = np.linspace(0, len(items) - 1, num=min(slices, len(items))).round().astype(int)
    ds = layout.slices(manifest, [items[i] for i in picks])
    net = _finished_network(layout)
    columns: Sequence[str] = ["image", *(["baseline CAM"] if baseline_run else []), "L2G CAM"]
    columns = [*columns, "refined", "pseudo label", *(["network prediction"] if net else []), "ground truth"]
    fig, axes = plt.subplots(
        len(ds.volumes), len(columns), figsize=(2.4 * len(columns), 2.5 * len(ds.volumes))
    )
    axes = np.atleast_2d(axes)
    for r, vol in enumerate(ds.volumes):
        key = volume_key(ds.items[r])
        z = vol["image"].shape[-1] // 2
        image = vol["image"].as_tensor()[0, ..., z].numpy()
        panels: list[tuple[np.ndarray, str]] = [(image, "gray")]
        if baseline_run:
            panels.append((load_cams(baseline_run, key)["scores"][..., z].max(axis=0), "jet"))
        panels.append((load_cams(run, key)["scores"][..., z].max(axis=0), "jet"))
        for c, (data, cmap) in enumerate(panels):
            axes[r, c].imshow(
                data.T,
                cmap=cmap,
                origin="lower",
                vmin=None if cmap == "gray" else 0,
                vmax=None if cmap == "gray" else 1,
            )
        pseudo_path = layout.cam.pseudo_labels(key)
        pseudo = np.load(pseudo_path) if pseudo_path.is_file() else None
        labels = [pseudo["labels"][..., z] if pseudo else None, pseudo["target"][..., z] if pseudo else None]
        if net:
            x = vol["image"].as_tensor()[None, ..., z].float()
            labels.append(_predict(net, x)[0].numpy())
        labels.append(vol["label"][0, ..., z].numpy() if vol["label"] is not None else None)
        for c, lab in enumerate(labels, start=len(panels)):
            axes[r, c].imshow(image.T, cmap="gray", origin="lower")
            if lab is not None:
                axes[r, c].imshow(_COLOURS[lab.astype(int).T], origin="lower")
        axes[r, 0].set_ylabel(f"{key} z={z}", fontsize=7)
    for c, name in enumerate(columns):
        axes[0, c].set_title(name, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{split} patients; RV cyan, Myo magenta, LV yellow, ignored white", fontsize=8)
    fig.tight_layout()
    out = Path(out_png)
    with atomic_write(out) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
    return out


def _finished_network(run: RunLayout) -> Any:
    """The stage-3 network of ``run`` on the CPU, or None when it holds no finished one."""
    from acdc_wsss.seg import load_seg

    manifest = run.seg.manifest
    if not manifest.is_file() or json.loads(manifest.read_text(encoding="utf-8")).get("status") != "complete":
        return None
    return load_seg(run.root, "last")[1]


def _predict(net: Any, x: Any) -> Any:
    from acdc_wsss.seg.model import predict_slices

    return predict_slices(net, x, torch.device("cpu"), flip=True).argmax(1)
