"""How well the ED-ES registration alone carries a patient's ED labels onto the ES images.

    python bench/registration.py --run runs/acdc [--split validation] [--margins 16 32 48 64] \
        [--levels 1 2,1] [--iterations 50 100 200]

For every patient of ``--split`` with both frames, the ED frame's mask is carried onto the ES images by
:func:`acdc_wsss.pseudo.rules.carry_labels` (the images only drive the registration) and scored against
the ES mask: pooled 2D Dice of RV, Myo and LV on the run's preprocessed grid, and their mean, per setting
of the registration's box margin (``FusionRules.margin_px``), coarse-to-fine levels
(``FusionRules.levels``, e.g. ``2,1``) and demons iterations per level (``FusionRules.iterations``);
``unregistered``: the ED masks as they lie. The masks measure the
registration, not the rules: this is the best the carried labels of stage 2's ED-ES fusion could be with
perfect ED labels. Prints one JSON line, with the seconds each setting took.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from acdc_wsss.layout import RunLayout
from acdc_wsss.metrics import DiceAccumulator
from acdc_wsss.pseudo.rules import FusionRules, carry_labels


def carried_dice(
    run_dir: Path,
    split: str,
    margins: list[int],
    levels: list[tuple[int, ...]],
    iterations: list[int] | None = None,
) -> dict[str, Any]:
    """Dice of the ED masks carried onto the ES frames of ``split``, per margin, levels and iterations."""
    run = RunLayout(run_dir)
    manifest = json.loads(run.cam.manifest.read_text(encoding="utf-8"))
    ds = run.slices(manifest, split, progress=False)
    frames: dict[str, dict[str, int]] = {}
    for v, item in enumerate(ds.items):
        if ds.volumes[v]["label"] is not None:
            frames.setdefault(item["patient"], {})[item["phase"]] = v
    pairs = [(ds.volumes[f["ED"]], ds.volumes[f["ES"]]) for f in frames.values() if {"ED", "ES"} <= set(f)]
    if not pairs:
        raise SystemExit(f"error: split {split!r} of {run.datalist} has no patient with both frames' masks.")
    still = DiceAccumulator([0, 1, 2, 3])  # the ED masks as they lie, for comparison
    for ed, es in pairs:
        still.update(ed["label"][0].numpy(), es["label"][0].numpy())
    results = []
    its_swept = iterations or [FusionRules.iterations]
    settings = [(m, lv, it) for m in margins for lv in levels for it in its_swept]
    for margin, lv, its in settings:
        rules = FusionRules(margin_px=margin, levels=lv, iterations=its)
        acc = DiceAccumulator([0, 1, 2, 3])
        start = time.perf_counter()
        for ed, es in pairs:
            ed_mask = ed["label"][0].numpy().astype(np.uint8)
            carried = carry_labels(ed_mask, ed["image"][0].numpy(), es["image"][0].numpy(), rules)
            acc.update(carried.argmax(0), es["label"][0].numpy())
        dice = acc.compute()[1:]
        results.append(
            {
                "margin_px": margin,
                "levels": list(lv),
                "iterations": its,
                "dice": [round(float(d), 3) for d in dice],
                "mean": round(float(np.mean(dice)), 4),
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
    unregistered = round(float(np.mean(still.compute()[1:])), 4)
    return {"split": split, "patients": len(pairs), "unregistered": unregistered, "results": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", required=True, help="run folder with stage-2 CAMs")
    parser.add_argument("--split", default="validation", help="split to measure on (validation)")
    parser.add_argument("--margins", nargs="+", type=int, default=[16, 32, 48, 64], help="box margins (px)")
    parser.add_argument("--levels", nargs="+", default=["1", "2,1"], help="shrink factors, coarse to fine")
    parser.add_argument(
        "--iterations", nargs="+", type=int, default=None, help="iterations per level (FusionRules' default)"
    )
    args = parser.parse_args(argv)
    if args.split == "testing":
        print("error: registration settings are never chosen on the testing split.", file=sys.stderr)
        return 2
    levels = [tuple(int(x) for x in text.split(",")) for text in args.levels]
    print(json.dumps(carried_dice(Path(args.run), args.split, args.margins, levels, args.iterations)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
