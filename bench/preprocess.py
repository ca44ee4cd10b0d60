"""Benchmark: every patient of a data set through the preprocessing chain into cached 128x128 slices.

    python bench/preprocess.py --data ../shared/data/acdc [--workers 2]

Prints one JSON line: ``volumes_per_s``, ``slices_per_s``, ``wall_s`` (cold: preprocessing and writing the
cache), ``cached_wall_s`` (a second pass served from the cache), ``check_s`` (the integrity check that runs
before it) and ``peak_rss_mb`` (this process plus its largest worker, an upper bound of the peak). With
``--roundtrip`` (after the memory reading), every mask goes back to its source grid: Dice per class and the
number of volumes whose shape or affine did not come back.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from acdc_wsss.data.acdc import make_datalist, read_datalist, write_datalist
from acdc_wsss.data.check import validated_patients
from acdc_wsss.data.preprocess import CENTRE_MODES, PreprocessConfig
from acdc_wsss.data.slices import SliceDataset, label_round_trip


def _peak_rss_mb() -> dict[str, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "peak_rss_mb": round(own + child, 1),
        "main_rss_mb": round(own, 1),
        "worker_rss_mb": round(child, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", required=True, help="ACDC folder (training/ and/or testing/, or imagesTr/ and/or imagesTs/)"
    )
    parser.add_argument("--workers", type=int, default=None, help="preprocessing workers (default: up to 2)")
    parser.add_argument("--spacing", type=float, default=1.5, help="in-plane spacing in mm (1.5)")
    parser.add_argument("--centre", default="motion", choices=CENTRE_MODES, help="crop centre (motion)")
    parser.add_argument(
        "--roundtrip", action="store_true", help="also map every mask back to its source grid and report Dice"
    )
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    patients = validated_patients(args.data, progress=False)
    check_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="acdc-wsss-bench-") as tmp:
        datalist = write_datalist(make_datalist(patients, args.data), Path(tmp) / "datalist.json")
        items = read_datalist(datalist)
        config = PreprocessConfig(spacing=args.spacing, centre=args.centre)
        t0 = time.perf_counter()
        ds = SliceDataset(
            items, config, cache_dir=Path(tmp) / "cache", num_workers=args.workers, progress=False
        )
        wall = time.perf_counter() - t0
        t0 = time.perf_counter()
        SliceDataset(items, config, cache_dir=Path(tmp) / "cache", num_workers=args.workers, progress=False)
        cached = time.perf_counter() - t0
        rss = _peak_rss_mb()
        extra = {}
        if args.roundtrip:
            rt = label_round_trip(ds)
            extra = {
                "roundtrip_classes": list(ds.classes),
                "roundtrip_dice_mean": np.round(np.nanmean(rt["dice"], axis=0), 4).tolist(),
                "roundtrip_dice_min": np.round(np.nanmin(rt["dice"], axis=0), 4).tolist(),
                "roundtrip_geometry_mismatch": len(rt["geometry_mismatch"]),
                "heart_kept_min": round(float(rt["heart_kept"].min()), 4),
                "volumes_heart_cut_over_1pct": int((rt["heart_kept"] < 0.99).sum()),
            }
    result = {
        "bench": "preprocess",
        "centre": args.centre,
        "data": str(args.data),
        "patients": len(patients),
        "volumes": len(ds.volumes),
        "slices": len(ds),
        "slice_shape": list(ds[0]["image"].shape),
        "volumes_per_s": round(len(ds.volumes) / wall, 2),
        "slices_per_s": round(len(ds) / wall, 1),
        "wall_s": round(wall, 2),
        "cached_wall_s": round(cached, 2),
        "check_s": round(check_s, 2),
        **rss,
        **extra,
        "workers": ds.num_workers,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
