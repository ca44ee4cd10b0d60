"""What the label maps and the ``.npz`` writer cost on a finished run, the old way and the current way.

    python bench/speed.py --run runs/acdc [--cams 16]

On the run's validation patients:

- ``stage1_validation``: one stage-1 validation pass (``evaluate_classifier`` on ``l2g/best.pt``, as each
  epoch runs it), and inside it the label maps of every background score of the sweep made with
  ``torch.argmax`` and with :func:`acdc_wsss.labels.argmax_labels` (the same maps, checked);
- ``stage3_validation``: stage 3's network (``seg/last.pt``) on each volume, and its label maps both ways;
- ``stage3_augmentation``: the training augmentation over the same slices with their pseudo targets, with
  MONAI's metadata tracking on (the old way) and off (:func:`acdc_wsss.seg.data.untracked`, the current
  way), the same random draws (the samples checked equal); per batch of 8 beside one training step of a
  fresh stage-3 network on a batch of 8 (forward, backward, AdamW), for scale;
- ``cam_files``: ``--cams`` of the run's CAM files written again into a temporary folder with
  ``numpy.savez_compressed`` and with :func:`acdc_wsss.utils.write_npz`: seconds and bytes.

Seconds are wall time on this machine, each pair measured one after the other. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import set_track_meta
from torch.utils.data import DataLoader

from acdc_wsss.cam_maps import cam_scores
from acdc_wsss.l2g.config import L2GConfig
from acdc_wsss.l2g.evaluate import BG_SWEEP, evaluate_classifier
from acdc_wsss.l2g.model import load_l2g, pool_weight
from acdc_wsss.labels import argmax_labels
from acdc_wsss.layout import RunLayout
from acdc_wsss.seg.config import SegConfig
from acdc_wsss.seg.data import PseudoLabelSlices, augmentation, read_targets
from acdc_wsss.seg.model import SegNet, load_seg, network_slices, predict_slices
from acdc_wsss.utils import read_json, write_npz


def _both_ways(maps: list[torch.Tensor]) -> dict[str, float]:
    """Seconds of the label maps of ``maps`` by ``torch.argmax`` and by ``argmax_labels``; refuses a
    difference."""
    start = time.perf_counter()
    old = [m.argmax(1) for m in maps]
    mid = time.perf_counter()
    new = [argmax_labels(m) for m in maps]
    end = time.perf_counter()
    if not all(torch.equal(a, b) for a, b in zip(old, new, strict=True)):
        raise SystemExit("error: argmax_labels and torch.argmax disagree on this run's maps.")
    return {"argmax_s": round(mid - start, 2), "argmax_labels_s": round(end - mid, 2)}


def _timed(work: Callable[[], Any]) -> float:
    start = time.perf_counter()
    work()
    return round(time.perf_counter() - start, 2)


def stage1(run: RunLayout, ds: Any) -> dict[str, Any]:
    """One stage-1 validation pass, and its label maps both ways."""
    manifest, model = load_l2g(run.root, "best")
    weight = pool_weight(L2GConfig(**manifest["config"]))
    loader = DataLoader(ds, batch_size=32)
    net, classes = model.global_net, list(manifest["classes"])
    seconds = _timed(lambda: evaluate_classifier(net, loader, torch.device("cpu"), classes, weight))
    maps = []
    with torch.no_grad():
        for batch in loader:
            scores = cam_scores(
                net.eval()(batch["image"])["pcm"], tuple(batch["image"].shape[2:]), batch["tags"]
            )
            for bg in BG_SWEEP:
                maps.append(torch.cat([torch.full_like(scores[:, :1], bg), scores], dim=1))
    return {"pass_s": seconds, **_both_ways(maps)}


def stage3(run: RunLayout, ds: Any) -> dict[str, Any]:
    """Stage 3's network on each validation volume, and its label maps both ways."""
    _, model = load_seg(run.root, "last")
    probs: list[torch.Tensor] = []

    def predict() -> None:
        for vol in ds.volumes:
            x = network_slices(model, vol["image"].as_tensor(), vol["motion"])
            probs.append(predict_slices(model, x, "cpu"))

    return {"network_s": _timed(predict), **_both_ways(probs)}


def stage3_augmentation(run: RunLayout, ds: Any, steps: int = 5) -> dict[str, Any]:
    """The training augmentation over ``ds``'s slices both ways (module docstring), and a training step."""
    cfg = SegConfig()
    targets = read_targets(run.root, ds)
    samples: dict[str, list[dict[str, torch.Tensor]]] = {}

    def one_pass(way: str) -> None:
        aug = augmentation(cfg)
        aug.set_random_state(0)

        def tracked(d: Any) -> Any:  # the old way: tracking on inside untracked's switch
            set_track_meta(True)
            try:
                return aug(d)
            finally:
                set_track_meta(False)

        data = PseudoLabelSlices(ds, targets, aug if way == "untracked" else tracked)
        samples[way] = [data[i] for i in range(len(data))]

    seconds = {way: _timed(lambda w=way: one_pass(w)) for way in ("tracked", "untracked")}
    same = all(all(torch.equal(a[k], b[k]) for k in a) for a, b in zip(*samples.values(), strict=True))
    net = SegNet(4, 1, cfg)
    opt = torch.optim.AdamW(net.parameters(), cfg.lr)
    x, y = torch.randn(8, 1, 128, 128), torch.randint(0, 4, (8, 128, 128))

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(net(x)["logits"], y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up
    per_batch = {way: round(t / len(samples[way]) * 8, 4) for way, t in seconds.items()}
    return {
        "slices": len(samples["tracked"]),
        "tracked_s": seconds["tracked"],
        "untracked_s": seconds["untracked"],
        "same_samples": same,
        "tracked_per_batch_s": per_batch["tracked"],
        "untracked_per_batch_s": per_batch["untracked"],
        "training_step_s": round(_timed(lambda: [step() for _ in range(steps)]) / steps, 4),
    }


def cam_files(run: RunLayout, count: int) -> dict[str, Any]:
    """``count`` CAM files written again both ways."""
    paths = sorted(run.cam.cams.glob("*.npz"))[:count]
    if not paths:
        raise SystemExit(f"error: {run.cam.cams} holds no CAMs; run the chain on {run.root} first.")
    arrays = []
    for p in paths:
        with np.load(p) as z:
            arrays.append({k: z[k] for k in z.files})
    with tempfile.TemporaryDirectory() as tmp:
        old = _timed(
            lambda: [np.savez_compressed(Path(tmp) / f"old{i}.npz", **a) for i, a in enumerate(arrays)]
        )
        new = _timed(lambda: [write_npz(Path(tmp) / f"new{i}.npz", **a) for i, a in enumerate(arrays)])
        size = {w: sum(f.stat().st_size for f in Path(tmp).glob(f"{w}*.npz")) for w in ("old", "new")}
    return {
        "files": len(paths),
        "savez_compressed_s": old,
        "write_npz_s": new,
        "savez_compressed_bytes": size["old"],
        "write_npz_bytes": size["new"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", required=True, help="a finished run folder (the chain's)")
    parser.add_argument("--cams", type=int, default=16, help="CAM files to write again")
    args = parser.parse_args(argv)
    run = RunLayout(args.run)
    if not run.seg.complete:
        print(f"error: {args.run} holds no finished stage 3; run the chain there first.", file=sys.stderr)
        return 2
    ds = run.slices(read_json(run.cam.manifest), "validation", progress=False)
    result = {
        "run": str(args.run),
        "threads": torch.get_num_threads(),
        "stage1_validation": stage1(run, ds),
        "stage3_validation": stage3(run, ds),
        "stage3_augmentation": stage3_augmentation(run, ds),
        "cam_files": cam_files(run, args.cams),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
