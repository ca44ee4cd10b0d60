"""Cross-fitted relabelling: the training patients relabelled by networks that never saw them, scored by the
network trained on those labels on the validation patients.

    python bench/crossfit.py --run runs/acdc --name crossfit [--folds 3] [--fuse 0.4] [--temporal 0.3] \
        [--set KEY=VALUE] [--fold-set KEY=VALUE] [--anatomy none 0.4]

A self-training round (``--rounds``) relabels the patients with the network that learnt their labels, so
it keeps much of their errors. Here the training patients are cut into ``--folds`` folds (every N-th of each
pathology group, as ``bench/stage3.py --fold``), and:

1. for each fold K a network trains on the other training patients alone (``<run>-stage3/<name>-fold<K>``,
   the variant's own datalist; the validation patients are neither trained on nor relabelled; ``--set``,
   then ``--fold-set``, override its settings: ``--fold-set epochs=6`` trains the folds for fewer epochs);
2. it relabels fold K as the inference segments a patient (:func:`acdc_wsss.seg.rounds.relabel`): flip
   TTA, fused with the fold's stage-2 labels (made with its tags; their label gets ``--fuse``), each ES
   frame mixed with its ED frame carried onto it by registration (``--temporal``: the ED frame's weight),
   classes absent from a slice's tags removed, each class's largest 3D component, the 1-px ignore band.
   The labels of all folds go to ``<run>-stage3/<name>/crossfit/``;
3. a fresh network trains on them (``pseudo_dir``; ``--set`` overrides its settings as in
   ``bench/stage3.py``) in ``<run>-stage3/<name>`` and segments the validation patients once per
   ``--anatomy`` setting.

Every step resumes: a finished fold, its labels, or the final network are kept. The run is never written.
Prints one JSON line: the fold networks' settings and training minutes, ``training_labels`` (the stage-2
and the cross-fitted labels' Dice on the training patients, their masks read for this report only: nothing
is chosen on them), and the final network's ``results`` on the validation patients as ``bench/stage3.py``
prints them (``stage2_labels``: the validation patients' own stage-2 labels).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stage3 import (
    every_kth,
    fold_split,
    overrides,
    score_variant,
    train_variant,
    variant_folder,
    variant_path,
)

from acdc_wsss.data.slices import volume_key
from acdc_wsss.layout import MANIFEST, RunLayout
from acdc_wsss.seg.model import load_seg
from acdc_wsss.seg.rounds import labels_dice, relabel
from acdc_wsss.utils import read_json, write_json


def crossfit_labels(
    run: Path, name: str, folds: int, fuse: float, temporal: float | None, settings: dict, device: str
) -> tuple[Path, list[float]]:
    """Train the fold networks and relabel each fold (steps 1-2 of the module docstring); returns the
    labels' folder and the folds' training minutes."""
    training = read_json(RunLayout(run).datalist)["training"]
    patients = {it["patient"] for it in training}
    for fold in range(1, folds + 1):  # every fold must leave patients to train on and to relabel
        held = every_kth(training, folds, fold - 1)
        if not held or held == patients:
            raise SystemExit(
                f"error: fold {fold} of {folds} holds {len(held)} of the {len(patients)} training patients "
                "(every N-th of each pathology group); use fewer --folds"
            )
    dest = variant_path(run, name) / "crossfit"
    minutes, volumes = [], []
    for fold in range(1, folds + 1):
        fold_name = f"{name}-fold{fold}"
        fold_split(run, variant_path(run, fold_name), fold, folds, with_validation=False)
        folder = variant_folder(run, fold_name)
        minutes.append(train_variant(folder, settings, device))
        items = RunLayout(folder).split("validation")
        volumes += [volume_key(it) for it in items]
        if all((dest / f"{volume_key(it)}.npz").is_file() for it in items):
            continue  # this fold was relabelled by an earlier, interrupted call
        _, model = load_seg(folder, "last", device)
        relabel(run, model, dest, fuse=fuse, device=device, progress=False, items=items, temporal=temporal)
    record = read_json(dest / MANIFEST)
    write_json({**record, "source": "crossfit", "folds": folds, "volumes": sorted(volumes)}, dest / MANIFEST)
    return dest, minutes


def _weight(text: str) -> float | None:
    return None if text.strip().lower() == "none" else float(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", required=True, help="run folder with stage-2 pseudo labels")
    parser.add_argument("--name", required=True, help="variant name (its folders under <run>-stage3/)")
    parser.add_argument("--folds", type=int, default=3, help="folds over the training patients (3)")
    parser.add_argument("--fuse", type=float, default=0.4, help="the stage-2 label's weight (0.4)")
    parser.add_argument("--temporal", type=_weight, default=0.3, help="the ED frame's weight (0.3; None)")
    parser.add_argument("--set", action="append", default=[], help="SegConfig override key=value (repeat)")
    parser.add_argument(
        "--fold-set", action="append", default=[], help="override for the fold networks alone (repeat)"
    )
    parser.add_argument("--anatomy", nargs="+", default=["none", "0.4"])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.folds < 2:
        parser.error("--folds must be at least 2")
    if not 0 <= args.fuse < 1:
        parser.error("--fuse must be in [0, 1)")
    run = Path(args.run)
    settings = {"train_on_validation": False, **overrides(args.set)}
    if settings["train_on_validation"]:
        parser.error("a network trained on the validation patients cannot be scored on them")
    if "pseudo_dir" in settings:
        parser.error("pseudo_dir is this bench's own: the cross-fitted labels")
    fold_only = overrides(args.fold_set)
    if fold_only.keys() & {"pseudo_dir", "train_on_validation"}:
        parser.error("--fold-set cannot set pseudo_dir or train_on_validation: the folds' are this bench's")
    fold_settings = {**settings, **fold_only}
    labels, fold_minutes = crossfit_labels(
        run, args.name, args.folds, args.fuse, args.temporal, fold_settings, args.device
    )
    folder = variant_folder(run, args.name)
    minutes = train_variant(folder, {**settings, "pseudo_dir": str(labels)}, args.device)
    result = {
        "name": args.name,
        "settings": settings,
        "folds": args.folds,
        "fuse": args.fuse,
        "temporal": args.temporal,
        "fold_settings": fold_settings,
        "fold_minutes": fold_minutes,
        "train_minutes": minutes,
        "training_labels": {"stage2": labels_dice(run), "crossfit": labels_dice(run, labels)},
        **score_variant(folder, args.anatomy, "validation", args.device),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
