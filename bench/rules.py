"""Stage-2 rules on a run's split: what each step from the scan adds, and the sweeps that chose its settings.

    python bench/rules.py --run runs/acdc [--splits training validation]
    python bench/rules.py --run runs/acdc --sweep [--split validation]

``--run`` must hold stage-2 CAMs (``cam/``, made by ``bundles/l2g_acdc/infer.json`` or the chain). The
ablation scores the cumulative rows of :mod:`acdc_wsss.pseudo.rows` (``priors``: the template rules, then
``scan_lv``, ``scan_myo``, ``scan``, ``scan_es``, ``scan_cam``) on each split: pooled 2D Dice of RV, Myo,
LV, their mean, per phase, and the seconds each row took. ``scan_cam``'s weight is chosen on the validation
split.

``--sweep`` varies one group of settings of :class:`acdc_wsss.pseudo.rules.ScanRules` at a time, in the
order of :data:`SWEEPS`, each group's best carried into the next (coordinate descent from the defaults, each
frame's own rules first, then the ED-ES fusion, then where the boundaries lie: the epicardium pulled in,
the RV grown out, then how wide the side is where RV seeds are sought around the septal direction the
training patients share, 180 degrees being anywhere, then the LV-RV swap check on that side: 0 degrees
being off, and how much rounder the chain on the anti-septal side must be), on the validation split only,
and names the best values: how the defaults were chosen. ``--groups es_fusion`` (or ``boundaries``,
``side``, ``swap``, ``registration``: the ED-ES registration's box margin and its coarse-to-fine levels;
``threshold``: the blood-pool threshold, two-class Otsu, three-class upper cut, or per volume the one whose
LV chain scores best; ``schedule``: the registration's coarse-to-fine levels and iterations per level, each
setting's seconds telling its cost) sweeps that group alone (the others at their defaults).
Both print one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from acdc_wsss.metrics import DiceAccumulator
from acdc_wsss.pseudo.rows import (
    CAM_WEIGHTS,
    SCAN_STEPS,
    context_scan_labels,
    row_labels,
    volume_contexts,
)
from acdc_wsss.pseudo.rules import ScanRules
from acdc_wsss.pseudo.store import split_dataset

#: One group of settings per line: the ScanRules field path and the values tried (the default among them).
SWEEPS: dict[str, dict[str, tuple[Any, ...]]] = {
    "smoothing": {"smooth_sigma": (0.0, 0.7, 1.0)},
    "lv_chain": {"chain.w_round": (1.0, 2.0, 3.0), "chain.min_iou": (0.1, 0.2, 0.3)},
    "epicardium": {"epi.prior": (0.25, 0.5, 1.0), "epi.myo_k": (1.0, 1.5, 2.0)},
    "epicardium_edge": {"epi.edge_weight": (0.0, 0.5, 1.0)},
    "rv": {"rv.sector_deg": (70.0, 80.0, 90.0), "rv.beta": (0.3, 0.35, 0.4), "rv.max_mm": (70.0, 80.0, 90.0)},
    "es_fusion": {
        "es_step": ("fused",),
        "fusion.iterations": (100, 200),
        "fusion.weight": (0.4, 0.5, 0.6),
        "fusion.label_sigma": (0.0, 0.5, 1.0),
    },
    "boundaries": {"es_step": ("fused",), "epi.offset_px": (0.0, 0.5, 1.0, 1.5), "rv.grow_px": (0, 1, 2)},
    "side": {"es_step": ("fused",), "rv.side_deg": (45.0, 60.0, 90.0, 180.0)},
    "swap": {"es_step": ("fused",), "chain.swap_deg": (0.0, 45.0), "chain.swap_round": (0.0, 0.1, 0.2)},
    "registration": {
        "es_step": ("fused",),
        "fusion.margin_px": (16, 32, 48),
        "fusion.levels": ((1,), (2, 1)),
    },
    "threshold": {"es_step": ("fused",), "thresholds": (("otsu",), ("upper",), ("otsu", "upper"))},
    "schedule": {
        "es_step": ("fused",),
        "fusion.levels": ((1,), (2, 1), (4, 2, 1)),
        "fusion.iterations": (100, 200),
    },
}
#: The rules the sweep starts from: each frame's own rules; the last group switches the ES fusion on.
SWEEP_START = ScanRules(es_step="scan")


def with_setting(rules: ScanRules, path: str, value: Any) -> ScanRules:
    """``rules`` with one setting (``field`` or ``part.field``, as in :data:`SWEEPS`) replaced."""
    if "." not in path:
        return dataclasses.replace(rules, **{path: value})
    part, name = path.split(".")
    return dataclasses.replace(rules, **{part: dataclasses.replace(getattr(rules, part), **{name: value})})


def _score(contexts: list[dict], refs: list[np.ndarray], phases: list[str], labels_of: Any) -> dict[str, Any]:
    acc = {k: DiceAccumulator([0, 1, 2, 3]) for k in ("all", "ED", "ES")}
    start = time.perf_counter()
    for ctx, ref, phase in zip(contexts, refs, phases, strict=True):
        pred = labels_of(ctx)
        acc["all"].update(pred, ref)
        if phase in acc:
            acc[phase].update(pred, ref)
    dice = acc["all"].compute()[1:]
    return {
        "dice": [round(float(d), 3) for d in dice],
        "mean": round(float(dice.mean()), 4),
        "ed": round(float(np.nanmean(acc["ED"].compute()[1:])), 4),
        "es": round(float(np.nanmean(acc["ES"].compute()[1:])), 4),
        "seconds": round(time.perf_counter() - start, 1),
    }


def _load(run: Path, split: str) -> tuple[list[dict], list[np.ndarray], list[str]]:
    ds = split_dataset(run, split, progress=False)
    contexts = [ctx for _, ctx in volume_contexts(run, ds, range(len(ds.volumes)))]
    refs = [vol["label"][0].numpy() for vol in ds.volumes]
    return contexts, refs, [it.get("phase", "") for it in ds.items]


def ablation(run: Path, splits: list[str]) -> dict[str, Any]:
    """The cumulative rows on each split; ``scan_cam``'s weight chosen on ``validation``."""
    data = {s: _load(run, s) for s in dict.fromkeys(["validation", *splits])}
    cam = {w: _score(*data["validation"], lambda c, w=w: row_labels("scan_cam", c, w)) for w in CAM_WEIGHTS}
    best = max(CAM_WEIGHTS, key=lambda w: cam[w]["mean"])
    rows = []
    for row in ("priors", *SCAN_STEPS, "scan_cam"):
        value = best if row == "scan_cam" else "default"
        scores = {s: _score(*data[s], lambda c, r=row, v=value: row_labels(r, c, v)) for s in splits}
        rows.append({"row": row, "setting": value, **scores})
    return {"rows": rows, "cam_weight_sweep_validation": {str(w): cam[w]["mean"] for w in CAM_WEIGHTS}}


def sweep(run: Path, split: str, groups: list[str] | None = None) -> dict[str, Any]:
    """Each group of :data:`SWEEPS` (or of ``groups``, the others at their defaults) over its grid, in
    order, each group's best kept for the next, on ``split``; ``chosen`` holds every setting's final value."""
    data = _load(run, split)
    out: dict[str, Any] = {}
    chosen: dict[str, Any] = {}
    for group, grid in SWEEPS.items():
        if groups and group not in groups:
            continue
        results = []
        for values in itertools.product(*grid.values()):
            rules = SWEEP_START
            for path, value in [*chosen.items(), *zip(grid, values, strict=True)]:
                rules = with_setting(rules, path, value)
            score = _score(*data, lambda c, r=rules: context_scan_labels(c, r))
            results.append({"settings": dict(zip(grid, values, strict=True)), **score})
        best = max(results, key=lambda r: r["mean"])
        chosen.update(best["settings"])
        out[group] = {"best": best["settings"], "mean": best["mean"], "results": results}
    return {**out, "chosen": chosen}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", required=True, help="run folder with stage-2 CAMs")
    parser.add_argument(
        "--splits", nargs="+", default=["training", "validation"], help="splits the ablation scores"
    )
    parser.add_argument("--sweep", action="store_true", help="sweep the settings on --split instead")
    parser.add_argument("--split", default="validation", help="split the sweep chooses on (validation)")
    parser.add_argument("--groups", nargs="+", choices=list(SWEEPS), help="sweep these groups only")
    args = parser.parse_args(argv)
    run = Path(args.run)
    result = sweep(run, args.split, args.groups) if args.sweep else ablation(run, args.splits)
    print(json.dumps({"run": str(run), **({"split": args.split} if args.sweep else {}), **result}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
