"""Benchmark stage 3: training and inference speed of the segmentation network on a run's pseudo labels.

    python bench/segment.py --data ../shared/data/acdc --run runs/acdc-l2g [--device cuda]

``--run`` must hold stage-2 pseudo labels (``cam/pseudo/``) made from ``--data``. Times training steps
(augmentation, forward, backward, AdamW) over ``--train_slices`` slices of the training split, and flip-TTA
inference over every slice of the testing split. Prints one JSON line: ``train_slices_per_s``,
``infer_slices_per_s``, ``peak_rss_mb`` (and ``peak_gpu_mb`` on CUDA), the device and the settings.
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
import torch.nn.functional as F
from torch.utils.data import DataLoader

from acdc_wsss.labels import IGNORE
from acdc_wsss.layout import RunLayout
from acdc_wsss.seg import SegConfig, SegNet, predict_slices
from acdc_wsss.seg.data import PseudoLabelSlices, augmentation, read_targets


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help="the ACDC folder the run was made from")
    parser.add_argument("--run", required=True, help="run folder with stage-2 pseudo labels")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--network", default="deeplab", choices=["deeplab", "unet"])
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--train_slices", type=int, default=320, help="training slices timed (320)")
    args = parser.parse_args(argv)
    run, device = RunLayout(args.run), torch.device(args.device)
    datalist = json.loads(run.datalist.read_text(encoding="utf-8"))
    if Path(datalist["base_dir"]).resolve() != Path(args.data).resolve():
        raise SystemExit(f"{run.root} was made from {datalist['base_dir']}, not {args.data}.")
    manifest = json.loads(run.cam.manifest.read_text(encoding="utf-8"))
    train = run.slices(manifest, "training")
    test = run.slices(manifest, "testing")
    cfg = SegConfig(network=args.network, width=args.width, device=str(device))
    torch.manual_seed(0)
    net = SegNet(len(manifest["classes"]) + 1, 1, cfg).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    loader = DataLoader(
        PseudoLabelSlices(train, read_targets(run.root, train), augmentation(cfg)),
        batch_size=args.batch_size,
        shuffle=True,
    )
    net.train()
    seen, t0 = 0, 0.0
    for i, batch in enumerate(loader):
        if i == 1:  # the first step (allocation, cuDNN autotuning) is not timed
            _sync(device)
            t0, seen = time.perf_counter(), 0
        x, y = batch["image"].to(device), batch["target"].to(device)
        loss = F.cross_entropy(net(x)["logits"], y, ignore_index=IGNORE)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += len(x)
        if seen >= args.train_slices and i >= 1:
            break
    _sync(device)
    train_s = time.perf_counter() - t0
    images = torch.cat([vol["image"].as_tensor().permute(3, 0, 1, 2).float() for vol in test.volumes])
    predict_slices(net, images[:8], device, flip=True)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    predict_slices(net, images, device, flip=True)
    _sync(device)
    infer_s = time.perf_counter() - t0
    result = {
        "bench": "segment",
        "run": str(run.root),
        "network": args.network,
        "width": args.width,
        "batch_size": args.batch_size,
        "train_slices": seen,
        "train_slices_per_s": round(seen / train_s, 1),
        "test_volumes": len(test.volumes),
        "infer_slices": len(images),
        "infer_slices_per_s": round(len(images) / infer_s, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "device": str(device),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }
    if device.type == "cuda":
        result["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        result["gpu"] = torch.cuda.get_device_name(device)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
