"""Ablation of the ACDC anatomy rules: what each rule adds to the pseudo labels of a run's split.

    python bench/rules.py --run runs/acdc-l2g [--split validation]

``--run`` must hold stage-2 CAMs (``cam/``, made by ``bundles/l2g_acdc/infer.json``). Each row turns one
more rule on, cumulatively: the first is the plain rule set (LV = bright blob nearest the motion centre,
fixed 13 mm ring, RV = largest bright blob touching it, no tracking, no ED-ES link, no CAM); the last is
the default :func:`acdc_wsss.pseudo.rules.priors_labels` with the CAMs, as the ``anatomy`` row of the
stage-2 evaluation. Prints one JSON line: per row the pooled 2D Dice of RV, Myo, LV and their mean.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from acdc_wsss.metrics import DiceAccumulator
from acdc_wsss.pseudo.rows import volume_context
from acdc_wsss.pseudo.rules import es_lv_region, priors_labels
from acdc_wsss.pseudo.store import split_dataset

#: (row, settings added to the previous row); ``ed_es`` and ``cams`` are not priors_labels arguments.
STEPS: list[tuple[str, dict[str, Any]]] = [
    (
        "plain rules",
        {"track": False, "myo_k": float("inf"), "rv_reach_mm": 0.0, "ed_es": False, "cams": False},
    ),
    ("+ LV tracked along the LV axis", {"track": True}),
    ("+ myocardial ring grown by intensity", {"myo_k": 2.5}),
    ("+ RV followed beyond the search disc", {"rv_reach_mm": 20.0}),
    ("+ ES cavity inside the ED cavity", {"ed_es": True}),
    ("+ CAM helps pick the LV blob (the anatomy row)", {"cams": True}),
]


def _labels(ctx: dict[str, Any], settings: dict[str, Any]) -> np.ndarray:
    kw = {k: v for k, v in settings.items() if k not in ("ed_es", "cams")}
    within = None
    if settings["ed_es"] and "ed" in ctx:
        within = es_lv_region(_labels(ctx["ed"], settings))
    scores = ctx["scores"] if settings["cams"] else None
    return priors_labels(
        ctx["image"], ctx["motion"], ctx["tags"], ctx["spacing"], scores, lv_within=within, **kw
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", required=True, help="run folder with stage-2 CAMs")
    parser.add_argument("--split", default="validation", help="split to score (validation)")
    args = parser.parse_args(argv)
    run = Path(args.run)
    ds = split_dataset(run, args.split, progress=False)
    contexts = [volume_context(run, ds, v) for v in range(len(ds.volumes))]
    refs = [vol["label"][0].numpy() for vol in ds.volumes]
    settings: dict[str, Any] = {}
    rows = []
    for name, change in STEPS:
        settings = {**settings, **change}
        acc = DiceAccumulator([0, 1, 2, 3])
        for ctx, ref in zip(contexts, refs, strict=True):
            acc.update(_labels(ctx, settings), ref)
        dice = acc.compute()[1:]
        rows.append(
            {"row": name, "dice": [round(float(d), 3) for d in dice], "mean": round(float(dice.mean()), 4)}
        )
    print(json.dumps({"run": str(run), "split": args.split, "volumes": len(refs), "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
