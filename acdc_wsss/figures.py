"""The figures of a run (``RUN/figures/``): the data preview, the method panels from image to prediction,
and the training curves. They read only what the stages wrote; :func:`acdc_wsss.report.write_report`
draws them all.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from acdc_wsss.data.slices import SliceDataset, volume_key
from acdc_wsss.labels import argmax_labels
from acdc_wsss.layout import RunLayout
from acdc_wsss.pseudo.store import load_cams
from acdc_wsss.seg.model import load_seg, predict_slices, recorded_on_validation
from acdc_wsss.utils import atomic_write, read_json

__all__ = ["figure_panels", "save_preview", "training_curves"]

logger = logging.getLogger(__name__)

#: Label colours: background transparent, RV cyan, Myo magenta, LV yellow; 255 (ignored) white.
_COLOURS = np.zeros((256, 4))
_COLOURS[1:4] = [[0, 1, 1, 0.55], [1, 0, 1, 0.55], [1, 1, 0, 0.55]]
_COLOURS[255] = [1, 1, 1, 0.7]


def _figure() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path, dpi: int = 90) -> Path:
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    _figure().close(fig)
    return path


def save_preview(ds: SliceDataset, path: Path, volumes: int = 4) -> Path:
    """Save a PNG: for a few volumes, the mid slice with its gt outline and its ED-ES motion map."""
    plt = _figure()
    picks = np.linspace(0, len(ds.volumes) - 1, num=min(volumes, len(ds.volumes))).round().astype(int)
    fig, axes = plt.subplots(2, len(picks), figsize=(3 * len(picks), 6.2), squeeze=False)
    for col, v in enumerate(picks):
        vol, item = ds.volumes[v], ds.items[v]
        z = vol["image"].shape[-1] // 2
        axes[0, col].imshow(vol["image"].as_tensor()[0, ..., z].numpy().T, cmap="gray", origin="lower")
        if vol["label"] is not None:
            lab = vol["label"][0, ..., z].numpy().T
            axes[0, col].contour(lab, levels=[0.5, 1.5, 2.5], colors=["c", "m", "y"])
        tags = ", ".join(c for c, on in zip(ds.classes, vol["tags"][z].tolist(), strict=True) if on) or "none"
        axes[0, col].set_title(f"{item['patient']} {item['phase']} z={z}\ntags: {tags}", fontsize=8)
        motion = vol["motion"][0, ..., z].float().numpy().T
        axes[1, col].imshow(motion, cmap="magma", origin="lower", vmin=0, vmax=1)
        axes[1, col].set_title("ED-ES motion map", fontsize=8)
        for ax in axes[:, col]:
            ax.axis("off")
    fig.suptitle("preprocessed slices (gt outline: RV cyan, Myo magenta, LV yellow)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path, dpi=100)


def training_curves(run: str | os.PathLike, out_png: str | os.PathLike) -> Path | None:
    """Save the training curves of the run's stages (loss and validation metrics per epoch): stage 1 (with
    the baseline classifier in ``RUN/baseline`` when there is one) and stage 3. None when nothing trained."""
    layout = RunLayout(run)
    seg = read_json(layout.seg.manifest)
    stages = {
        "stage 1 L2G": read_json(layout.l2g.manifest).get("history", []),
        "stage 1 baseline": read_json(layout.baseline.l2g.manifest).get("history", []),
        "stage 3": seg.get("history", []),
    }
    stages = {k: v for k, v in stages.items() if v}
    if not stages:
        return None
    plt = _figure()
    fig, (loss_ax, val_ax) = plt.subplots(1, 2, figsize=(11, 4))
    val_keys = {
        "stage 1 L2G": ("cam_dice_mean", "CAM Dice"),
        "stage 1 baseline": ("cam_dice_mean", "CAM Dice"),
        "stage 3": ("pseudo_dice", "agreement with pseudo labels"),
    }
    # a network trained on the validation patients' pseudo labels is not held out there
    seen = " (trained on their pseudo labels)" if recorded_on_validation(seg) else ""
    for name, history in stages.items():
        epochs = [h["epoch"] for h in history]
        loss_ax.plot(epochs, [h["loss"] for h in history], marker="o", label=name)
        key, what = val_keys[name]
        values = [h.get("val", {}).get(key) for h in history]
        if any(v is not None for v in values):
            val_ax.plot(epochs, values, marker="o", label=f"{name}: {what}")
        if name == "stage 3" and any("dice_mean" in h.get("val", {}) for h in history):
            dice = [h.get("val", {}).get("dice_mean") for h in history]
            what = f"Dice vs gt (report only){seen}"
            val_ax.plot(epochs, dice, marker="s", linestyle="--", label=f"{name}: {what}")
    loss_ax.set(title="training loss", xlabel="epoch", yscale="log")
    val_ax.set(title="validation patients", xlabel="epoch", ylim=(0, 1))
    for ax in (loss_ax, val_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, Path(out_png))


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
    finished network) and the ground truth. None (nothing drawn) for a run of another data set than ACDC.

    Args:
        run: L2G run with ``cam/`` (and ``cam/pseudo`` from the export).
        baseline_run: plain-CAM run with ``cam/`` (None: the column is left out).
        out_png: output file.
        split: datalist split to draw from (default: validation when it has CAMs, else training).
        slices: number of rows.
    """
    plt = _figure()
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
        _panel_row(axes[r], volume_key(ds.items[r]), vol, layout, baseline_run, net)
    for c, name in enumerate(columns):
        axes[0, c].set_title(name, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{split} patients; RV cyan, Myo magenta, LV yellow, ignored white", fontsize=8)
    fig.tight_layout()
    return _save(fig, Path(out_png), dpi=80)


def _panel_row(
    axes: Any,
    key: str,
    vol: dict[str, Any],
    run: RunLayout,
    baseline_run: str | os.PathLike | None,
    net: nn.Module | None,
) -> None:
    """One row of :func:`figure_panels`: the mid slice of volume ``key`` in every column."""
    z = vol["image"].shape[-1] // 2
    image = vol["image"].as_tensor()[0, ..., z].numpy()
    panels: list[tuple[np.ndarray, str]] = [(image, "gray")]
    if baseline_run:
        panels.append((load_cams(baseline_run, key)["scores"][..., z].max(axis=0), "jet"))
    panels.append((load_cams(run.root, key)["scores"][..., z].max(axis=0), "jet"))
    for c, (data, cmap) in enumerate(panels):
        axes[c].imshow(
            data.T,
            cmap=cmap,
            origin="lower",
            vmin=None if cmap == "gray" else 0,
            vmax=None if cmap == "gray" else 1,
        )
    pseudo_path = run.cam.pseudo_labels(key)
    pseudo = np.load(pseudo_path) if pseudo_path.is_file() else None
    labels = [pseudo["labels"][..., z] if pseudo else None, pseudo["target"][..., z] if pseudo else None]
    if net:
        x = vol["image"].as_tensor()[None, ..., z].float()
        labels.append(argmax_labels(predict_slices(net, x, torch.device("cpu"), flip=True))[0].numpy())
    labels.append(vol["label"][0, ..., z].numpy() if vol["label"] is not None else None)
    for c, lab in enumerate(labels, start=len(panels)):
        axes[c].imshow(image.T, cmap="gray", origin="lower")
        if lab is not None:
            axes[c].imshow(_COLOURS[lab.astype(int).T], origin="lower")
    axes[0].set_ylabel(f"{key} z={z}", fontsize=7)


def _finished_network(run: RunLayout) -> nn.Module | None:
    """The stage-3 network of ``run`` on the CPU, or None when it holds no finished one."""
    if not run.seg.complete:
        return None
    return load_seg(run.root, "last")[1]
