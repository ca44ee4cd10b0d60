"""The default job: ``python -m acdc_wsss.demo`` (what ``make demo`` runs).

Without ``--dataset_dir`` it generates the synthetic phantom (no download); with it, it reads a real ACDC
folder. It then checks the data set, splits patients (stratified, seeded), writes the datalist, runs every
volume through the preprocessing chain into cached 2D slices, and prints a summary with a preview figure.
Later stages of the pipeline grow from here.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from acdc_wsss.data.acdc import (
    ACDC_CLASSES,
    DatasetError,
    make_datalist,
    read_datalist,
    split_patients,
    write_datalist,
)
from acdc_wsss.data.check import check_dataset, validated_patients
from acdc_wsss.data.phantom import ensure_phantom
from acdc_wsss.data.preprocess import PreprocessConfig
from acdc_wsss.data.slices import SliceDataset
from acdc_wsss.utils import atomic_write, setup_cli_logging, write_json

__all__ = ["dataset_summary", "main", "save_preview"]

logger = logging.getLogger(__name__)


def dataset_summary(ds: SliceDataset, splits: dict[str, list[str]]) -> dict[str, Any]:
    """Counts a user wants to see before training: patients per split, volumes, slices, tag frequencies."""
    tags = ds.tags().numpy()
    return {
        "patients": {k: len(v) for k, v in splits.items()},
        "volumes": len(ds.volumes),
        "slices": len(ds),
        "slice_shape": list(ds[0]["image"].shape),
        "slices_with_all_tags": round(float((tags.sum(1) == tags.shape[1]).mean()), 3),
        "slices_without_tags": round(float((tags.sum(1) == 0).mean()), 3),
        "tag_frequency": {c: round(float(f), 3) for c, f in zip(ds.classes, tags.mean(0), strict=True)},
        "groups": dict(Counter(it["group"] for it in ds.items if it["phase"] == "ED")),
    }


def save_preview(ds: SliceDataset, path: Path, volumes: int = 4) -> Path:
    """Save a PNG: for a few volumes, the mid slice with its gt outline and its ED-ES motion map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig.suptitle("preprocessed 128x128 slices (gt outline: RV cyan, Myo magenta, LV yellow)", fontsize=9)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    """Command line of the demo; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m acdc_wsss.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset_dir", help="real ACDC folder; default: the synthetic phantom")
    parser.add_argument(
        "--phantom_dir", default="data/phantom", help="where the phantom lives (data/phantom)"
    )
    parser.add_argument("--patients", type=int, default=10, help="phantom patients (10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the phantom and of the split (0)")
    parser.add_argument("--output_dir", help="run folder (runs/demo, or runs/demo-NAME for a dataset NAME)")
    parser.add_argument(
        "--skip_bad", "--skip-bad", dest="skip_bad", action="store_true", help="leave bad patients out"
    )
    args = parser.parse_args(argv)
    setup_cli_logging()
    try:
        if args.dataset_dir:
            data = Path(args.dataset_dir)
            out = Path(args.output_dir or f"runs/demo-{data.resolve().name}")
            if out.resolve().is_relative_to(data.resolve()):
                raise DatasetError(
                    f"--output_dir {out} lies inside the dataset {data}; choose a folder outside it."
                )
        else:
            out = Path(args.output_dir or "runs/demo")
            data = ensure_phantom(args.phantom_dir, patients=args.patients, seed=args.seed)
        print(check_dataset(data, deep=False, progress=False).summary().splitlines()[0])
        patients = validated_patients(data, skip_bad=args.skip_bad)
    except (DatasetError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    splits = split_patients(patients, seed=args.seed)
    out.mkdir(parents=True, exist_ok=True)
    datalist = write_datalist(make_datalist(patients, data, splits), out / "datalist.json")
    items = [it for key in splits for it in read_datalist(datalist, key)]
    ds = SliceDataset(items, PreprocessConfig(), ACDC_CLASSES, cache_dir=out / "cache")
    summary = dataset_summary(ds, splits)
    write_json(summary, out / "dataset_summary.json")
    preview = save_preview(ds, out / "preview.png")
    print(json.dumps(summary, indent=2))
    print(f"datalist: {datalist}\ncached slices: {out / 'cache'}\npreview: {preview}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
