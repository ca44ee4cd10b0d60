"""Benchmark stage 1: an epoch of L2G and of the plain-CAM baseline on one data set.

    python bench/train.py --data ../shared/data/acdc [--batch_size 8] [--width 0.25]

Prints one JSON line: per method ``slices_per_s`` and ``epoch_s`` for a full epoch (data loading included),
``model_s_per_batch`` (forward and backward on batches already in memory, median of ``--model_batches``);
``data_s`` (one pass over the data loader alone) and ``data_overhead`` (``data_s`` over the rest of the
epoch, the model's own time); ``l2g_overhead`` (L2G's epoch time over the baseline's, minus 1) and
``peak_rss_mb``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from torch.utils.data import DataLoader

from acdc_wsss.data.acdc import make_datalist, read_datalist, write_datalist
from acdc_wsss.data.check import validated_patients
from acdc_wsss.data.slices import SliceDataset
from acdc_wsss.l2g import L2GConfig, L2GModel, build_l2g_optimizer, make_step


def _epoch(step, loader: DataLoader) -> tuple[float, int]:
    engine = SimpleNamespace(state=SimpleNamespace(iteration=0))
    t0 = time.perf_counter()
    n = 0
    for batch in loader:
        engine.state.iteration += 1
        step(engine, batch)
        n += 1
    return time.perf_counter() - t0, n


def _model_per_batch(step, batches: list) -> float:
    engine = SimpleNamespace(state=SimpleNamespace(iteration=0))
    times = []
    for batch in batches:
        engine.state.iteration += 1
        t0 = time.perf_counter()
        step(engine, batch)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help="ACDC folder")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--width", type=float, default=0.25, help="backbone width factor (0.25, the default)")
    parser.add_argument("--num_views", type=int, default=6)
    parser.add_argument("--model_batches", type=int, default=10, help="batches timed without data loading")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    patients = validated_patients(args.data, progress=False)
    result: dict = {"bench": "train", "data": str(args.data), "patients": len(patients)}
    with tempfile.TemporaryDirectory(prefix="acdc-wsss-bench-") as tmp:
        path = write_datalist(make_datalist(patients, args.data), Path(tmp) / "datalist.json")
        ds = SliceDataset(read_datalist(path), cache_dir=Path(tmp) / "cache", progress=False)
        result["slices"] = len(ds)
        for name, l2g in (("baseline", False), ("l2g", True)):
            cfg = L2GConfig(l2g=l2g, width=args.width, num_views=args.num_views, batch_size=args.batch_size)
            model = L2GModel(ds.num_classes, 1, cfg)
            step = make_step(
                cfg,
                model,
                model.global_net,
                model.local_net,
                build_l2g_optimizer(model, cfg),
                torch.device("cpu"),
            )
            loader = DataLoader(ds, batch_size=args.batch_size, shuffle=True)
            epoch_s, _ = _epoch(step, loader)
            t0 = time.perf_counter()
            for _ in loader:
                pass
            data_s = time.perf_counter() - t0
            batches = [b for _, b in zip(range(args.model_batches), loader, strict=False)]
            result[name] = {
                "slices_per_s": round(len(ds) / epoch_s, 1),
                "epoch_s": round(epoch_s, 2),
                "model_s_per_batch": round(_model_per_batch(step, batches), 4),
                "data_s": round(data_s, 3),
                "data_overhead": round(data_s / max(epoch_s - data_s, 1e-9), 4),
            }
    result["l2g_overhead"] = round(result["l2g"]["epoch_s"] / result["baseline"]["epoch_s"] - 1, 3)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result.update(
        batch_size=args.batch_size,
        width=args.width,
        num_views=args.num_views,
        cpus=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        device="cpu",
        machine=platform.machine(),
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
