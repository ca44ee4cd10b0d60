"""Figure panels of stage 2: image, baseline CAM, L2G CAM, refined labels, exported pseudo label, gt."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from acdc_wsss.data.acdc import read_datalist
from acdc_wsss.data.preprocess import PreprocessConfig
from acdc_wsss.data.slices import SliceDataset, volume_key
from acdc_wsss.pseudo.evaluate import labels_constant
from acdc_wsss.pseudo.infer import load_cams
from acdc_wsss.utils import atomic_write

__all__ = ["figure_panels"]

logger = logging.getLogger(__name__)

#: Label colours: background transparent, RV cyan, Myo magenta, LV yellow.
_COLOURS = np.array([[0, 0, 0, 0], [0, 1, 1, 0.55], [1, 0, 1, 0.55], [1, 1, 0, 0.55]])


def figure_panels(
    run: str | os.PathLike,
    baseline_run: str | os.PathLike | None,
    out_png: str | os.PathLike,
    split: str = "training",
    slices: int = 4,
    background: float = 0.6,
) -> Path | None:
    """Save a PNG grid: per chosen slice (mid-ventricular slices of evenly spread volumes), the image, the
    baseline CAM and the L2G CAM (class maxima), the CAM labels at the constant ``background`` score, the
    exported pseudo label (``cam/pseudo``) and the ground truth.

    Args:
        run: L2G run with ``cam/`` (and ``cam/pseudo`` from the export).
        baseline_run: plain-CAM run with ``cam/`` (None: the column is left out).
        out_png: output file.
        split: datalist split to draw from.
        slices: number of rows.
        background: constant background score of the CAM-label column.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = Path(run)
    manifest = json.loads((run / "cam" / "manifest.json").read_text(encoding="utf-8"))
    if manifest.get("dataset", "acdc") != "acdc":
        logger.info("figure panels are drawn for ACDC runs; %s is a %s run.", run, manifest["dataset"])
        return None
    pre = PreprocessConfig(**manifest["preprocess"])
    items = [
        it for it in read_datalist(run / "datalist.json", split) if volume_key(it) in manifest["volumes"]
    ]
    picks = np.linspace(0, len(items) - 1, num=min(slices, len(items))).round().astype(int)
    ds = SliceDataset(
        [items[i] for i in picks], pre, manifest["classes"], cache_dir=run / "cache", progress=False
    )
    columns: Sequence[str] = ["image", *(["baseline CAM"] if baseline_run else []), "L2G CAM"]
    columns = [*columns, f"L2G CAM labels (bg {background})", "pseudo label", "ground truth"]
    fig, axes = plt.subplots(
        len(ds.volumes), len(columns), figsize=(2.4 * len(columns), 2.5 * len(ds.volumes))
    )
    axes = np.atleast_2d(axes)
    for r, vol in enumerate(ds.volumes):
        key = volume_key(ds.items[r])
        z = vol["image"].shape[-1] // 2
        image = vol["image"].as_tensor()[0, ..., z].numpy()
        cams = load_cams(run, key)
        pseudo_path = run / "cam" / "pseudo" / f"{key}.npz"
        pseudo = np.load(pseudo_path)["labels"][..., z] if pseudo_path.is_file() else None
        panels: list[tuple[np.ndarray, str]] = [(image, "gray")]
        if baseline_run:
            panels.append((load_cams(baseline_run, key)["scores"][..., z].max(axis=0), "jet"))
        panels.append((cams["scores"][..., z].max(axis=0), "jet"))
        for c, (data, cmap) in enumerate(panels):
            axes[r, c].imshow(
                data.T,
                cmap=cmap,
                origin="lower",
                vmin=None if cmap == "gray" else 0,
                vmax=None if cmap == "gray" else 1,
            )
        labels = [
            labels_constant(cams["scores"][..., z : z + 1], cams["bg_prob"][..., z : z + 1], background)[
                ..., 0
            ],
            pseudo,
            vol["label"][0, ..., z].numpy() if vol["label"] is not None else None,
        ]
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
    fig.suptitle("RV cyan, Myo magenta, LV yellow", fontsize=8)
    fig.tight_layout()
    out = Path(out_png)
    with atomic_write(out) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
    return out
