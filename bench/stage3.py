"""Stage-3 variants on a run's pseudo labels, scored on the validation patients: how the stage-3 defaults
(network, loss, confidence weighting) and the inference fusion with the rules were chosen.

    python bench/stage3.py --run runs/acdc --name unet --set network=unet [--set loss=dice_ce] \
        [--anatomy none 0.6 0.7 0.8] [--split validation] [--drop_every 3]

``--run`` must hold stage-2 pseudo labels (``cam/pseudo/``). Each variant trains in its own folder
``<run>-stage3/<name>`` (the run's datalist, cache and stage-2 output linked, never written; on the
training patients alone, ``train_on_validation=False``, unless ``--set`` says otherwise), resumes there
when interrupted, then segments ``--split`` once per ``--anatomy`` setting (the weight of the tag-free
rules fused with the network at inference; ``none``: the network alone) and scores the masks in 3D on the
original grid. Prints one JSON line: the settings, the training minutes, and per anatomy setting the mean
Dice, per class and per phase, and the mean HD95 (mm); ``best_anatomy`` is the best on the split;
``stage2_labels``: the stage-2 pseudo labels of the split (``cam/nifti``) scored the same way.

``--drop_every K`` trains on fewer patients: every K-th training patient of each pathology group (in name
order) is left out, through the variant's own datalist. It measures what more patients are worth.

``--fold K`` (with ``--folds N``, default 3) cross-validates over the training patients: fold K of N (every
N-th training patient of each pathology group in name order, starting at the K-th) becomes the variant's
validation split, and the other training patients with the run's validation patients are its training
set, through the variant's own datalist. Folds 1..N and the plain variant (the validation patients
themselves, fold 0) score every non-test patient once, each with a network that never saw it:
``bench/anatomy.py --run`` with all N+1 variant folders pools them for a choice on 4x the patients.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from acdc_wsss.data.slices import volume_key
from acdc_wsss.layout import RunLayout
from acdc_wsss.seg import SegConfig, evaluate_seg, predict, run_seg
from acdc_wsss.utils import read_json, write_json


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _flag(text: str) -> bool:
    """``true`` or ``false`` (any case) as a bool; anything else is refused."""
    if text.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() == "true"


def overrides(pairs: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` pairs as SegConfig overrides, each value read as JSON where it parses (``12``,
    ``true``, ``[16, 32]``), else kept as text."""
    return {k: _value(v) for k, v in (kv.split("=", 1) for kv in pairs)}


def variant_path(run: Path, name: str, kind: str = "stage3") -> Path:
    """``<run>-<kind>/<name>``: where a variant of ``run`` lives."""
    return run.parent / f"{run.name}-{kind}" / name


def variant_folder(run: Path, name: str, kind: str = "stage3", stage2: bool = True) -> Path:
    """``<run>-<kind>/<name>`` (:func:`variant_path`): links to the run's datalist (unless the variant has
    its own), stage-1 and (with ``stage2``) stage-2 outputs, and a cache folder of its own that links the
    run's cache files: the run itself is never written, not even by a preprocessing it had not cached."""
    folder = variant_path(run, name, kind)
    src = RunLayout(run)
    link_into(folder, (src.datalist, src.l2g.path, *((src.cam.path,) if stage2 else ())))
    link_cache(run, folder)
    return folder


def link_cache(run: Path, folder: Path) -> None:
    """Give ``folder`` a cache folder of its own holding links to each of ``run``'s cache files: it reads
    what the run cached, and what it adds stays in ``folder``, never in the run."""
    cache = RunLayout(run).cache
    link_into(RunLayout(folder).cache, sorted(cache.glob("*")) if cache.is_dir() else ())


def link_into(folder: Path, paths: Iterable[Path]) -> None:
    """Make ``folder`` and link each of ``paths`` into it under its own name (an existing entry is kept)."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        link = folder / path.name
        if not link.exists():
            os.symlink(path.resolve(), link)


def every_kth(items: list[dict[str, Any]], every: int, start: int) -> set[str]:
    """The patients of ``items`` at ``start``, ``start + every``, ... of each pathology group (name order)."""
    groups: dict[str, set[str]] = {}
    for item in items:
        groups.setdefault(item.get("group", ""), set()).add(item["patient"])
    return {p for names in groups.values() for p in sorted(names)[start::every]}


def _write_datalist(datalist: dict[str, Any], folder: Path) -> int:
    """Write ``folder``'s own datalist (never over a link to the run's); returns its training patients."""
    target = folder / "datalist.json"
    if target.is_symlink():
        raise SystemExit(f"error: {folder} already trains on the run's own datalist; pick another --name")
    folder.mkdir(parents=True, exist_ok=True)
    write_json(datalist, target)
    return len({it["patient"] for it in datalist["training"]})


def fewer_patients(run: Path, folder: Path, every: int) -> int:
    """Write ``folder``'s own datalist: the run's, without every ``every``-th training patient of each
    pathology group (name order). Returns the training patients kept."""
    datalist = read_json(RunLayout(run).datalist)
    dropped = every_kth(datalist["training"], every, every - 1)
    datalist["training"] = [it for it in datalist["training"] if it["patient"] not in dropped]
    return _write_datalist(datalist, folder)


def fold_split(run: Path, folder: Path, fold: int, folds: int, with_validation: bool = True) -> int:
    """Write ``folder``'s own datalist for cross-validation fold ``fold`` (1..``folds``): that fold of the
    training patients (every ``folds``-th of each pathology group, from the ``fold``-th) is the validation
    split; the other training patients (and, ``with_validation``, the run's validation patients) train. The
    testing split is kept. Returns the training patients."""
    if not 1 <= fold <= folds:
        raise SystemExit(f"error: --fold must be 1..{folds} (fold 0 is the run's own validation split)")
    datalist = read_json(RunLayout(run).datalist)
    held = every_kth(datalist["training"], folds, fold - 1)
    training = [it for it in datalist["training"] if it["patient"] not in held]
    validation = [it for it in datalist["training"] if it["patient"] in held]
    extra = datalist["validation"] if with_validation else []
    datalist["training"], datalist["validation"] = training + extra, validation
    return _write_datalist(datalist, folder)


def train_variant(folder: Path, settings: dict[str, Any], device: str = "cpu") -> float:
    """Train stage 3 with ``settings`` in the variant ``folder`` (resumed when interrupted, kept when
    finished); returns the minutes it took."""
    cfg = SegConfig(output_dir=str(folder), progress=False, device=device, **settings)
    start = time.perf_counter()
    layout = RunLayout(folder)
    if not layout.seg.complete:
        cfg.resume = layout.seg.last.is_file()
        run_seg(cfg)
    return round((time.perf_counter() - start) / 60, 1)


def score_variant(
    folder: Path, anatomy: list[str], split: str, device: str = "cpu", flip: bool = True
) -> dict[str, Any]:
    """Segment ``split`` with the variant's network once per ``anatomy`` setting (``flip``: with flip TTA)
    and score it in 3D on the original grid: ``results`` per setting, ``best_anatomy``, and
    ``stage2_labels``: the stage-2 labels of the split scored the same way (None where they were not
    exported)."""
    layout = RunLayout(folder)
    results = {}
    for a in anatomy:
        weight = None if a == "none" else float(a)
        predict(folder, split=split, anatomy=weight, device=device, flip=flip, progress=False)
        results[a] = brief(evaluate_seg(folder, split, progress=False))
    best = max(results, key=lambda a: results[a]["mean"]["dice_mean"])
    nifti = [layout.cam.pseudo_nifti(volume_key(it)) for it in layout.split(split)]
    stage2 = None
    if nifti and all(p.is_file() for p in nifti):  # the labels it learnt from, scored the same way
        ev = evaluate_seg(
            folder, split, progress=False, masks=lambda it: layout.cam.pseudo_nifti(volume_key(it))
        )
        stage2 = brief(ev)
    return {"results": results, "best_anatomy": best, "stage2_labels": stage2}


def brief(ev: dict[str, Any]) -> dict[str, Any]:
    """An evaluation's means and per-phase mean Dice, rounded for the JSON line."""
    return {
        "mean": {k: round(v, 4) for k, v in ev["mean"].items()},
        "by_phase": {ph: round(m["dice_mean"], 4) for ph, m in ev["by_phase"].items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", required=True, help="run folder with stage-2 pseudo labels")
    parser.add_argument("--name", required=True, help="variant name (its folder under <run>-stage3/)")
    parser.add_argument("--set", action="append", default=[], help="SegConfig override key=value (repeat)")
    parser.add_argument("--anatomy", nargs="+", default=["none", "0.5", "0.6", "0.7", "0.8"])
    parser.add_argument("--split", default="validation", help="split scored (validation)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--flip", type=_flag, default=True, help="flip TTA at inference (true: the default, false: none)"
    )
    parser.add_argument("--drop_every", type=int, default=None, help="leave out every K-th training patient")
    parser.add_argument("--fold", type=int, default=None, help="cross-validation fold K (1..--folds) scored")
    parser.add_argument("--folds", type=int, default=3, help="folds over the training patients (3)")
    args = parser.parse_args(argv)
    run = Path(args.run)
    settings = {"train_on_validation": False, **overrides(args.set)}
    if settings["train_on_validation"] and args.split == "validation":
        parser.error("a network trained on the validation patients cannot be scored on them")
    if args.drop_every is not None:
        if args.drop_every < 2:
            parser.error("--drop_every must be at least 2")
        fewer_patients(run, variant_path(run, args.name), args.drop_every)
    if args.fold is not None:
        if args.drop_every is not None or args.split != "validation":
            parser.error("--fold scores its own validation split: it takes neither --drop_every nor --split")
        fold_split(run, variant_path(run, args.name), args.fold, args.folds)
    folder = variant_folder(run, args.name)
    minutes = train_variant(folder, settings, args.device)
    layout = RunLayout(folder)
    print(
        json.dumps(
            {
                "name": args.name,
                "settings": settings,
                "split": args.split,
                "training_patients": len({it["patient"] for it in layout.split("training")}),
                "train_minutes": minutes,
                "flip": args.flip,
                **score_variant(folder, args.anatomy, args.split, args.device, args.flip),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
