"""Sweep the stage-3 anatomy fusion weight (``--infer_anatomy``) on a finished run's validation patients.

    python bench/anatomy.py --run runs/acdc-chain [--values None,0.5,0.6,0.7,0.8,0.9] [--split validation]

For every volume of ``--split`` (default: validation, the only split a setting may be chosen on), the run's
stage-3 network predicts once (flip TTA, as ``predict`` does); each value of ``--values`` then fuses those
probabilities with the stage-2 anatomy rules (``None``: the network alone), keeps the largest components and
is scored as mean 3D Dice over the volumes and the foreground classes, on the chain's preprocessed grid.
Nothing is written into the run. Prints one JSON line: ``sweep`` (value -> mean Dice), ``per_class``,
``chosen`` (the best value), ``selected_on``, ``volumes``, ``checkpoint``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np
import torch

from acdc_wsss.layout import RunLayout
from acdc_wsss.metrics import dice_per_class
from acdc_wsss.seg.components import AnatomyFusiond, VolumeSliceInferer, fuse_volume
from acdc_wsss.seg.infer import largest_components
from acdc_wsss.seg.model import load_seg


def _value(text: str) -> float | None:
    return None if text.strip() in ("None", "none", "") else float(text)


def sweep(
    run_dir: str, values: list[float | None], split: str = "validation", checkpoint: str = "last"
) -> dict[str, Any]:
    """Mean 3D Dice of each anatomy weight on ``split`` (see the module docstring)."""
    run = RunLayout(run_dir)
    manifest, model = load_seg(run.root, checkpoint, torch.device("cpu"))
    n = len(manifest["classes"])
    items = [it for it in run.split(split) if it.get("label")]
    if not items:
        raise SystemExit(f"error: split {split!r} of {run.datalist} has no volumes with masks to choose on.")
    ds = run.slices(manifest, items, num_workers=0, require_tags=False)
    fusion, inferer = AnatomyFusiond("pred", None, ds.config.spacing), VolumeSliceInferer(flip=True)
    dice: dict[str, list[np.ndarray]] = {str(v): [] for v in values}
    for v in sorted(
        range(len(ds.items)), key=lambda i: (ds.items[i]["patient"], ds.items[i]["phase"] != "ED")
    ):
        vol, item = ds.volumes[v], ds.items[v]
        probs = inferer(vol["image"][None], model)[0].numpy()  # (K, H, W, S)
        frame = {
            "image": vol["image"],
            "motion": vol["motion"],
            "patient": item["patient"],
            "phase": item["phase"],
        }
        rules = fusion.rules(frame) if item.get("pair") else None
        ref = vol["label"][0].numpy()
        for value in values:
            fused = probs if value is None or rules is None else fuse_volume(probs, rules, value)
            pred = largest_components(fused.argmax(0).astype(np.uint8), n)
            dice[str(value)].append(dice_per_class(pred, ref, range(1, n + 1)))
    per_class = {k: np.nanmean(np.stack(d), axis=0) for k, d in dice.items()}
    mean = {k: float(np.nanmean(d)) for k, d in per_class.items()}
    return {
        "split": split,
        "selected_on": split,
        "checkpoint": checkpoint,
        "volumes": len(items),
        "sweep": mean,
        "per_class": {
            k: dict(zip(manifest["classes"], map(float, d), strict=True)) for k, d in per_class.items()
        },
        "chosen": max(mean, key=lambda k: mean[k]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", required=True, help="a run folder with stage 3 trained (seg/)")
    parser.add_argument("--values", default="None,0.5,0.6,0.7,0.8,0.9", help="anatomy weights to try")
    parser.add_argument("--split", default="validation", help="split to choose on (validation)")
    parser.add_argument("--checkpoint", default="last", choices=["last", "best"])
    args = parser.parse_args(argv)
    if args.split == "testing":
        print("error: a setting is never chosen on the testing split it is reported on.", file=sys.stderr)
        return 2
    result = sweep(args.run, [_value(v) for v in args.values.split(",")], args.split, args.checkpoint)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
