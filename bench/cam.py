"""Benchmark stage 2: multi-scale CAM inference and the dense CRF on a trained run.

    python bench/cam.py --data ../shared/data/acdc --run runs/acdc-l2g [--volumes 40]

``--run`` must hold a finished stage 1 (``l2g/``) trained on ``--data``. Prints one JSON line:
``cam_slices_per_s`` (scales 0.5/1/1.5/2 with flips: 8 forward passes per slice), ``crf_slices_per_s``
(4 labels, 10 mean-field iterations, 128 x 128), ``priors_slices_per_s`` and ``peak_rss_mb``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import torch

from acdc_wsss.cam_maps import CAM_SCALES, multiscale_cam
from acdc_wsss.l2g.model import load_l2g
from acdc_wsss.layout import RunLayout
from acdc_wsss.pseudo.rules import crf_labels, priors_labels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help="the ACDC folder the run was trained on")
    parser.add_argument("--run", required=True, help="run folder with a finished stage 1")
    parser.add_argument("--volumes", type=int, default=40, help="volumes of the training split to time (40)")
    args = parser.parse_args(argv)
    run = Path(args.run)
    manifest, model = load_l2g(run, "best", "cpu")
    if Path(manifest["dataset_dir"]).resolve() != Path(args.data).resolve():
        raise SystemExit(f"error: {run} was trained on {manifest['dataset_dir']}, not {args.data}.")
    layout = RunLayout(run)
    ds = layout.slices(manifest, layout.split("training")[: args.volumes])
    n = len(ds)
    t0 = time.perf_counter()
    for vol in ds.volumes:
        x = vol["image"].as_tensor().permute(3, 0, 1, 2).float()
        multiscale_cam(model.global_net, x, vol["tags"], CAM_SCALES, True)
    cam_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    labels = [
        priors_labels(v["image"].as_tensor()[0].numpy(), v["motion"][0].float().numpy(), v["tags"].numpy())
        for v in ds.volumes
    ]
    priors_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for vol, lab in zip(ds.volumes, labels, strict=True):
        crf_labels(vol["image"].as_tensor()[0].numpy(), lab, 0.7)
    crf_s = time.perf_counter() - t0
    result = {
        "bench": "cam",
        "run": str(run),
        "volumes": len(ds.volumes),
        "slices": n,
        "cam_slices_per_s": round(n / cam_s, 2),
        "cam_passes_per_slice": 2 * len(CAM_SCALES),
        "priors_slices_per_s": round(n / priors_s, 1),
        "crf_slices_per_s": round(n / crf_s, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": "cpu",
        "machine": platform.machine(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
