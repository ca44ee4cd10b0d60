"""Inference settings scored on the original grid: each setting of ``predict``'s post-processing options
segments the chosen split of one or more stage-3 runs, and the masks are scored in 3D against the masks on
the scan's own grid, as the chain's evaluation does.

    python bench/inference.py --run RUN-stage3/default RUN-stage3/cv1 RUN-stage3/cv2 RUN-stage3/cv3 \
        --option linear_invert=false,true [--option crf=false,true ...] [--split validation]

``bench/anatomy.py`` sweeps the settings that act on the chain's grid and caches what they share; this
command runs the whole inference once per setting, so it also measures what happens on the way back to the
scan's grid (``linear_invert``). Several ``--run`` folders are pooled, as in ``bench/anatomy.py``: the
four folds of ``bench/stage3.py --fold`` score every non-test patient with a network that never saw it.
Every run is read, never written: each setting predicts into a temporary folder that links to the run's
files. A network that trained on the validation patients is refused there, and the testing split is never
chosen on. Prints one JSON line: per setting the pooled mean 3D Dice, per class and per phase, the mean
HD95 (mm, original grid), each run's own mean Dice, and the best setting (``chosen``).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import tempfile
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

from acdc_wsss.seg import evaluate_seg, predict
from acdc_wsss.seg.infer import POSTPROCESSING
from acdc_wsss.seg.model import recorded_on_validation, seg_manifest

#: What a run's folder holds that inference reads (linked into each setting's temporary folder; ``seg/``
#: file by file, since the evaluation writes there).
_READ = ("seg_members", "cam", "cache", "l2g", "datalist.json", "dataset_summary.json")


def _parse(name: str, text: str) -> Any:
    default = inspect.signature(predict).parameters[name].default
    if text.strip().lower() in ("none", "null"):
        return None
    if isinstance(default, bool):
        if text.strip().lower() not in ("true", "false"):
            raise ValueError(f"--option {name}: expected true or false, got {text!r}")
        return text.strip().lower() == "true"
    return type(default)(text) if default is not None else float(text)


def options(pairs: list[str]) -> dict[str, list[Any]]:
    """``--option NAME=V1,V2`` pairs as lists of values of ``predict``'s post-processing options, each
    read as its default's type; an unknown name or a bad value is refused (ValueError) with what there is."""
    grid: dict[str, list[Any]] = {}
    for pair in pairs:
        name, _, values = pair.partition("=")
        if name not in POSTPROCESSING or not values:
            raise ValueError(f"--option takes NAME=V1,V2 with NAME one of {', '.join(POSTPROCESSING)}")
        grid[name] = [_parse(name, v) for v in values.split(",")]
    return grid


def _linked(run: Path, where: Path) -> Path:
    """A folder in ``where`` whose entries link to ``run``'s inference inputs (:data:`_READ`)."""
    folder = Path(tempfile.mkdtemp(prefix="setting-", dir=where))
    for name in _READ:
        if (run / name).exists():
            os.symlink((run / name).resolve(), folder / name)
    (folder / "seg").mkdir()
    for path in (run / "seg").iterdir():
        if not path.name.startswith("evaluation_"):
            os.symlink(path.resolve(), folder / "seg" / path.name)
    return folder


def score(runs: list[Path], grid: dict[str, list[Any]], split: str) -> dict[str, Any]:
    """Segment ``split`` of each run once per setting of ``grid`` and pool the per-volume scores."""
    names = list(grid)
    rows: dict[str, list[dict[str, Any]]] = {}
    per_run: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as tmp:
        for values in product(*grid.values()):
            setting = dict(zip(names, values, strict=True))
            key = json.dumps(setting)
            for run in runs:
                folder = _linked(run, Path(tmp))
                predict(folder, split=split, progress=False, **setting)
                volumes = evaluate_seg(folder, split, progress=False)["per_volume"]
                rows.setdefault(key, []).extend(volumes)
                per_run.setdefault(str(run), {})[key] = _mean(volumes)
    classes = [k[5:] for k in rows[next(iter(rows))][0] if k.startswith("dice_")]
    mean = {k: _mean(v) for k, v in rows.items()}
    return {
        "split": split,
        "runs": [str(r) for r in runs],
        "volumes": len(next(iter(rows.values()))),
        "sweep": mean,
        "per_class": {k: {c: _mean(v, [f"dice_{c}"]) for c in classes} for k, v in rows.items()},
        "per_phase": {
            k: {ph: _mean([r for r in v if r["phase"] == ph]) for ph in ("ED", "ES")} for k, v in rows.items()
        },
        "hd95": {k: _mean(v, [f"hd95_{c}" for c in classes]) for k, v in rows.items()},
        "per_run": per_run,
        "chosen": max(mean, key=lambda k: mean[k]),
    }


def _mean(volumes: list[dict[str, Any]], keys: list[str] | None = None) -> float:
    """The mean over ``volumes`` of each volume's mean of ``keys`` (default: its Dice of every class)."""
    per = [
        np.nanmean([float(v[k]) for k in (keys or [k for k in v if k.startswith("dice_")])]) for v in volumes
    ]
    return float(np.nanmean(per)) if per else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", required=True, nargs="+", help="run folder(s) with stage 3; several: pooled")
    parser.add_argument(
        "--option", action="append", default=[], help="NAME=V1,V2: a post-processing option's values"
    )
    parser.add_argument("--split", default="validation", help="split to choose on (validation)")
    args = parser.parse_args(argv)
    try:
        grid = options(args.option) or {"linear_invert": [False, True]}
    except ValueError as error:
        parser.error(str(error))
    if args.split == "testing":
        print("error: a setting is never chosen on the testing split it is reported on.", file=sys.stderr)
        return 2
    runs = [Path(r) for r in args.run]
    for run in runs:
        if args.split == "validation" and recorded_on_validation(seg_manifest(run)):
            print(
                f"error: the network of {run} trained on the validation patients' pseudo labels, so it cannot"
                " choose a setting there; sweep a network trained without them (python bench/stage3.py"
                f" --run {run} --name default).",
                file=sys.stderr,
            )
            return 2
    print(json.dumps(score(runs, grid, args.split)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
