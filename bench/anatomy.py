"""Sweep the stage-3 inference fusions (``--infer_anatomy``, ``--infer_temporal``), the CRF
(``--infer_crf``) and the rules on the predicted masks (``--infer_lv_hull``, ``--infer_epi_px``,
``--infer_rv_attached``, ``--infer_lv_enclosed``, ``--infer_lv_bright``, ``--infer_rv_descent``,
``--infer_rv_confident``) on a
finished run's validation patients.

    python bench/anatomy.py --run runs/acdc-chain [--values None,0.5,0.6,0.7,0.8,0.9] \
        [--temporal None] [--crf None] [--lv_hull false] [--epi_px 0] [--rv_attached false] \
        [--lv_enclosed false] [--lv_bright None] [--rv_descent None] [--rv_confident None] \
        [--split validation] [--side_deg 60]
    python bench/anatomy.py --run runs/acdc-stage3/default runs/acdc-stage3/cv1 runs/acdc-stage3/cv2 ...

For every volume of ``--split`` (default: validation, the only split a setting may be chosen on), the run's
stage-3 network predicts once (flip TTA, as ``predict`` does); each value of ``--values`` then fuses those
probabilities with the stage-2 anatomy rules (``None``: the network alone), and each value of ``--temporal``
mixes an ES frame's result with its ED frame's carried onto it by registration (``None``: not mixed); each
value of ``--crf`` refines the probabilities with a dense CRF of that strength on each slice
(:func:`acdc_wsss.crf.seg_kernels`; ``None``: none); each value of ``--lv_hull`` (``true``: each slice's LV
made convex over the myocardium), of ``--epi_px`` (the epicardium pulled in by that many pixels), of
``--rv_attached`` (``true``: the RV's pieces touching neither the myocardium nor the LV removed) and of
``--lv_enclosed`` (``true``: the most basal LV slice's LV removed where the wall holds less than half its
outline) and of ``--lv_bright`` (a share: on ED frames, the bright myocardium next to the LV made LV,
:func:`acdc_wsss.seg.masks.bright_endocardium`; ``None``: not) then acts on the labels' largest components, in
that order (:func:`acdc_wsss.seg.masks.slice_rules`); each value of ``--rv_descent`` (mm) then removes an ES
frame's RV from the slices basal to that distance below its ED frame's basal RV slice (``None``: kept),
except, for each value of ``--rv_confident``, a slice's RV whose mean probability is at least that share of
the frame's RV's on the other slices (``None``: always removed); with more than one value, the keys go on
``"<anatomy>/<temporal>/<crf>/<lv_hull>/<epi_px>/<rv_attached>/<lv_enclosed>/<lv_bright>/<rv_descent>/
<rv_confident>"``, an
axis written only where more than one value is swept); the result is scored as mean 3D Dice over the volumes
and the foreground classes, on the chain's preprocessed grid. Nothing is written into the run. Prints one JSON
line: ``sweep`` (value -> mean Dice), ``per_class``, ``per_phase``, ``volume_ratio`` (each class's predicted
over true voxels, median over the volumes: a boundary drawn too far out or too far in), ``chosen`` (the best
value), ``selected_on``, ``volumes``, ``checkpoint``, ``per_run``, ``hd95`` and ``hd95_per_class`` (mm, on the
chain's grid, mean over the volumes; not what chooses), and ``errors``: where the chosen setting goes wrong,
per phase (``confusion``: voxels, rows the masks' class and columns the prediction's, background first;
``by_position``: each class's pooled Dice and voxel counts on the heart's basal slice, the next one, the
middle ones, the last but one and the apical one, the heart's slices being those where the mask or the
prediction has a class). Several ``--run`` folders (the cross-validation folds of ``bench/stage3.py --fold``,
each with its own validation split) are pooled: every value is the mean over all their volumes, and
``per_run`` gives each run's own mean. ``--side_deg``: the sector around the shared septal direction in which
the rules fused at inference seek the RV (``RVRules.side_deg``; default: the rules' own), printed as
``side_deg``.
"""

from __future__ import annotations

import argparse
import json
import sys
from itertools import product
from typing import Any

import numpy as np
import torch
from rules import with_setting

from acdc_wsss.crf import seg_kernels
from acdc_wsss.layout import RunLayout
from acdc_wsss.metrics import dice_per_class, hd95_per_class
from acdc_wsss.pseudo.rules import ScanRules
from acdc_wsss.seg.components import (
    AnatomyFusiond,
    VolumeSliceInferer,
    check_anatomy,
    fuse_volume,
    mix_with_ed,
    slice_crf,
)
from acdc_wsss.seg.infer import largest_components
from acdc_wsss.seg.masks import RV, base_first, rv_after_descent, slice_rules
from acdc_wsss.seg.model import load_seg, recorded_on_validation, recorded_septal


def _value(text: str) -> float | None:
    return None if text.strip() in ("None", "none", "") else float(text)


#: The swept settings, in the order of a result's key: the rules' weight, the ED frame's weight, the CRF's
#: strength, the LV made convex, the epicardium's pull (pixels), the RV's detached pieces removed, the basal
#: LV removed where the wall does not surround it, the ED frame's bright endocardium made LV (a share), the
#: ES RV's descent (mm), the cut ES RV kept where the network is sure of it (a share of the rest's).
AXES = (
    "anatomy", "temporal", "crf", "lv_hull", "epi_px", "rv_attached", "lv_enclosed", "lv_bright",
    "rv_descent", "rv_confident",
)  # fmt: skip
#: The axes of the rules on each slice (:func:`~acdc_wsss.seg.masks.slice_rules`' arguments, in order).
SLICE_AXES = AXES[3:8]


def _flag(text: str) -> bool:
    return text.strip().lower() in ("true", "1", "yes")


PARSE = {
    "anatomy": _value,
    "temporal": _value,
    "crf": _value,
    "lv_hull": _flag,
    "epi_px": lambda t: int(t),
    "rv_attached": _flag,
    "lv_enclosed": _flag,
    "lv_bright": _value,
    "rv_descent": _value,
    "rv_confident": _value,
}


#: Where a slice lies in the heart's stack (the slices where the mask or the prediction has a class), base
#: first.
POSITIONS = ("base", "base+1", "mid", "apex-1", "apex")


def slice_positions(pred: np.ndarray, ref: np.ndarray) -> list[int | None]:
    """Each slice's index into :data:`POSITIONS` (None: outside the heart) for ``(H, W, S)`` labels: the
    heart's slices are those where ``ref`` or ``pred`` has a class, ordered from the base (read from
    ``ref``'s cross-sections, :func:`base_first`); the two ends first, then their neighbours, the rest
    ``mid``."""
    heart = np.flatnonzero(((ref > 0) | (pred > 0)).any(axis=(0, 1)))
    if not base_first(ref if ref.any() else pred):
        heart = heart[::-1]
    out: list[int | None] = [None] * ref.shape[-1]
    for rank, z in enumerate(heart):
        from_apex = len(heart) - 1 - rank
        out[z] = 0 if rank == 0 else 4 if from_apex == 0 else 1 if rank == 1 else 3 if from_apex == 1 else 2
    return out


def error_counts(pred: np.ndarray, ref: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Where one volume's ``(H, W, S)`` prediction goes wrong: the ``(n + 1, n + 1)`` confusion matrix
    (rows: the mask's class, columns: the prediction's; voxels) and, per slice position of
    :data:`POSITIONS` and foreground class, the voxels ``(5, n, 3)`` predicted but not in the mask, in the
    mask but not predicted, and in both."""
    confusion = np.bincount(ref.astype(np.int64).ravel() * (n + 1) + pred.ravel(), minlength=(n + 1) ** 2)
    counts = np.zeros((len(POSITIONS), n, 3), np.int64)
    for z, pos in enumerate(slice_positions(pred, ref)):
        if pos is None:
            continue
        for c in range(1, n + 1):
            p, r = pred[..., z] == c, ref[..., z] == c
            counts[pos, c - 1] += [(p & ~r).sum(), (r & ~p).sum(), (p & r).sum()]
    return confusion.reshape(n + 1, n + 1), counts


def _errors_json(errors: dict[str, list[np.ndarray]], classes: list[str]) -> dict[str, Any]:
    """The summed :func:`error_counts` of one setting, per phase, as JSON: ``confusion`` and
    ``by_position`` (each position's and class's pooled Dice, with its voxel counts)."""

    def dice(fp: int, fn: int, tp: int) -> float | None:
        return round(2 * tp / (2 * tp + fp + fn), 4) if tp + fp + fn else None

    return {
        "confusion": {ph: conf.tolist() for ph, (conf, _) in errors.items()},
        "by_position": {
            ph: {
                pos: {
                    c: {
                        "dice": dice(*map(int, counts[i, k])),
                        **dict(zip(("fp", "fn", "tp"), map(int, counts[i, k]), strict=True)),
                    }
                    for k, c in enumerate(classes)
                }
                for i, pos in enumerate(POSITIONS)
            }
            for ph, (_, counts) in errors.items()
        },
    }


def _name(setting: tuple, grid: dict[str, list]) -> str:
    """A setting's key: the rules' weight, then each other axis's value where more than one is swept,
    joined by ``/`` (``"0.4"``, ``"0.4/0.3"``, ``"0.4/0.3/10.0"``, ...)."""
    rest = zip(AXES[1:], setting[1:], strict=True)
    return "/".join([str(setting[0])] + [str(v) for axis, v in rest if len(grid[axis]) > 1])


def _mean(scores: list[np.ndarray]) -> float:
    """Mean Dice of the volumes' per-class scores: each class's mean over the volumes, then their mean."""
    return float(np.nanmean(np.nanmean(np.stack(scores), axis=0)))


def _score_run(
    run_dir: str, split: str, checkpoint: str, grid: dict[str, list], scan: ScanRules
) -> tuple[list[str], dict[str, dict[str, list[np.ndarray]]], dict[str, list[list[float]]], dict, dict]:
    """Score ``run_dir``'s network on ``split`` for every setting of ``grid`` (one list of values per axis of
    :data:`AXES`): the classes, and per setting each volume's Dice (by phase) and volume ratio, its summed
    :func:`error_counts` per phase, and each volume's HD95 per class (mm, on the chain's grid)."""
    run = RunLayout(run_dir)
    manifest, model = load_seg(run.root, checkpoint, torch.device("cpu"))
    if recorded_on_validation(manifest) and split == "validation":
        raise SystemExit(
            f"error: the network of {run.root} trained on the validation patients' pseudo labels, so it"
            " cannot choose a setting there; sweep a network trained without them: python bench/stage3.py"
            f" --run {run.root} --name default (trains with train_on_validation=False)."
        )
    n = len(manifest["classes"])
    for value in grid["anatomy"]:
        check_anatomy(value, n + 1)
    items = [it for it in run.split(split) if it.get("label")]
    if not items:
        raise SystemExit(f"error: split {split!r} of {run.datalist} has no volumes with masks to choose on.")
    ds = run.slices(manifest, items, num_workers=0, require_tags=False)
    fusion = AnatomyFusiond("pred", None, ds.config.spacing, septal=recorded_septal(manifest), rules=scan)
    inferer = VolumeSliceInferer(flip=True)
    names = [_name(setting, grid) for setting in product(*(grid[axis] for axis in AXES))]
    dice: dict[str, dict[str, list[np.ndarray]]] = {k: {"ED": [], "ES": []} for k in names}
    hd95: dict[str, list[np.ndarray]] = {k: [] for k in names}
    ratio: dict[str, list[list[float]]] = {k: [] for k in names}
    errors: dict[str, dict[str, list[np.ndarray]]] = {k: {} for k in names}
    ed: dict[str, Any] = {}
    for v in sorted(
        range(len(ds.items)), key=lambda i: (ds.items[i]["patient"], ds.items[i]["phase"] != "ED")
    ):
        vol, item = ds.volumes[v], ds.items[v]
        probs = inferer(vol["image"][None], model, motion=vol["motion"][None])[0].numpy()  # (K, H, W, S)
        image = vol["image"][0].numpy()
        frame = {"image": vol["image"], "motion": vol["motion"], "patient": item["patient"]}
        rules = fusion.rules({**frame, "phase": item["phase"]}) if item.get("pair") else None
        ref = vol["label"][0].numpy()
        spacing = (ds.config.spacing, ds.config.spacing, float(vol["image"].pixdim[-1]))
        phase = "ED" if item["phase"] == "ED" else "ES"
        partner = ed.pop(item["patient"], None) if phase == "ES" else None
        fields: dict = {}
        fused_by, labels_by = {}, {}
        for value in grid["anatomy"]:
            fused = probs if value is None or rules is None else fuse_volume(probs, rules, value)
            fused_by[value] = fused
            for t in grid["temporal"]:
                mixed = fused
                if t is not None and partner is not None and partner[0].shape == image.shape:
                    mixed = mix_with_ed(fused, image, partner[1][value], partner[0], t, fields)
                for crf in grid["crf"]:
                    refined = mixed if crf is None else slice_crf(mixed, image, seg_kernels(crf))
                    largest = largest_components(refined.argmax(0).astype(np.uint8), n)
                    for on_slices in product(*(grid[axis] for axis in SLICE_AXES)):
                        labels = slice_rules(largest, *on_slices, image=image, phase=phase)
                        labels_by[value, t, crf, on_slices] = labels
                        for d, sure in product(grid["rv_descent"], grid["rv_confident"]):
                            pred = labels
                            if d is not None and partner is not None:
                                ed_labels = partner[2][value, t, crf, on_slices]
                                pred = rv_after_descent(labels, ed_labels, spacing[2], d, refined[RV], sure)
                            name = _name((value, t, crf, *on_slices, d, sure), grid)
                            dice[name][phase].append(dice_per_class(pred, ref, range(1, n + 1)))
                            hd95[name].append(hd95_per_class(pred, ref, range(1, n + 1), spacing))
                            ratio[name].append(_ratio(pred, ref, n))
                            _add(errors[name], phase, error_counts(pred, ref.astype(np.uint8), n))
        if phase == "ED":
            ed[item["patient"]] = (image, fused_by, labels_by)
    return list(manifest["classes"]), dice, ratio, errors, hd95


def _add(errors: dict[str, list[np.ndarray]], phase: str, counts: tuple[np.ndarray, np.ndarray]) -> None:
    """Sum one volume's :func:`error_counts` into a setting's per-phase totals."""
    if phase in errors:
        errors[phase] = [a + b for a, b in zip(errors[phase], counts, strict=True)]
    else:
        errors[phase] = list(counts)


def _ratio(pred: np.ndarray, ref: np.ndarray, n: int) -> list[float]:
    """Each class's predicted over true voxels (nan where the class is absent from ``ref``)."""
    return [(pred == c).sum() / (ref == c).sum() if (ref == c).any() else np.nan for c in range(1, n + 1)]


def sweep(
    run_dirs: str | list[str],
    grid: dict[str, list],
    split: str = "validation",
    checkpoint: str = "last",
    side_deg: float | None = None,
) -> dict[str, Any]:
    """Mean 3D Dice of every setting of ``grid`` (values per axis of :data:`AXES`; an axis left out: off)
    on ``split`` (module docstring); with several runs (cross-validation folds), the mean over all their
    volumes."""
    run_dirs = [run_dirs] if isinstance(run_dirs, str) else run_dirs
    off = {
        "anatomy": [None],
        "temporal": [None],
        "crf": [None],
        "lv_hull": [False],
        "epi_px": [0],
        "rv_attached": [False],
        "lv_enclosed": [False],
        "lv_bright": [None],
        "rv_descent": [None],
        "rv_confident": [None],
    }
    grid = {**off, **grid}
    scan = ScanRules() if side_deg is None else with_setting(ScanRules(), "rv.side_deg", side_deg)
    dice: dict[str, dict[str, list[np.ndarray]]] = {}
    ratio: dict[str, list[list[float]]] = {}
    errors: dict[str, dict[str, list[np.ndarray]]] = {}
    hd95: dict[str, list[np.ndarray]] = {}
    per_run = {}
    for run_dir in run_dirs:
        classes, own, own_ratio, own_errors, own_hd95 = _score_run(run_dir, split, checkpoint, grid, scan)
        for k, values in own_hd95.items():
            hd95.setdefault(k, []).extend(values)
        for k, by_phase in own_errors.items():
            for phase, counts in by_phase.items():
                _add(errors.setdefault(k, {}), phase, tuple(counts))
        per_run[run_dir] = {k: _mean(d["ED"] + d["ES"]) for k, d in own.items()}
        for k, d in own.items():
            for phase, scores in d.items():
                dice.setdefault(k, {}).setdefault(phase, []).extend(scores)
            ratio.setdefault(k, []).extend(own_ratio[k])
    per_class = {k: np.nanmean(np.stack(d["ED"] + d["ES"]), axis=0) for k, d in dice.items()}
    mean = {k: _mean(d["ED"] + d["ES"]) for k, d in dice.items()}
    per_phase = {k: {ph: float(np.nanmean(np.stack(x))) for ph, x in d.items() if x} for k, d in dice.items()}
    chosen = max(mean, key=lambda k: mean[k])
    return {
        "split": split,
        "selected_on": split,
        "runs": len(run_dirs),
        "checkpoint": checkpoint,
        "side_deg": scan.rv.side_deg,
        "volumes": len(next(iter(ratio.values()))),  # one ratio row per volume scored
        "sweep": mean,
        "per_class": {k: dict(zip(classes, map(float, d), strict=True)) for k, d in per_class.items()},
        # mm on the chain's grid, mean over the volumes and the classes: reported, not chosen on
        "hd95": {k: float(np.nanmean(np.stack(h))) for k, h in hd95.items()},
        "hd95_per_class": {
            k: dict(zip(classes, np.nanmean(np.stack(h), axis=0).round(3).tolist(), strict=True))
            for k, h in hd95.items()
        },
        "per_phase": per_phase,
        "volume_ratio": {  # predicted / true voxels of each class, median over the volumes
            k: dict(zip(classes, np.nanmedian(r, axis=0).round(3).tolist(), strict=True))
            for k, r in ratio.items()
        },
        "chosen": chosen,
        "per_run": per_run,  # each run's (fold's) own mean Dice
        "errors": _errors_json(errors[chosen], classes),  # where the chosen setting goes wrong
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--run", required=True, nargs="+", help="run folder(s) with stage 3 trained (seg/); several: pooled"
    )
    parser.add_argument("--values", default="None,0.5,0.6,0.7,0.8,0.9", help="anatomy weights to try")
    parser.add_argument("--temporal", default="None", help="ED-ES mixing weights to try")
    parser.add_argument("--crf", default="None", help="the CRF's strengths to try (None: no CRF)")
    parser.add_argument("--lv_hull", default="false", help="the LV made convex or not: false,true")
    parser.add_argument("--epi_px", default="0", help="the epicardium's pulls to try (pixels)")
    parser.add_argument("--rv_attached", default="false", help="the RV's detached pieces removed: false,true")
    parser.add_argument("--lv_enclosed", default="false", help="the LV kept only inside the wall: false,true")
    parser.add_argument("--lv_bright", default="None", help="ED bright endocardium to LV: shares (None: off)")
    parser.add_argument("--rv_descent", default="None", help="the ES RV's descents to try (mm)")
    parser.add_argument(
        "--rv_confident", default="None", help="the cut ES RV kept at this share of the rest's probability"
    )
    parser.add_argument("--split", default="validation", help="split to choose on (validation)")
    parser.add_argument("--checkpoint", default="last", choices=["last", "best"])
    parser.add_argument("--side_deg", type=float, default=None, help="the rules' RV side (default: theirs)")
    args = parser.parse_args(argv)
    if args.split == "testing":
        print("error: a setting is never chosen on the testing split it is reported on.", file=sys.stderr)
        return 2
    texts = {axis: getattr(args, "values" if axis == "anatomy" else axis) for axis in AXES}
    grid = {axis: [PARSE[axis](v) for v in text.split(",")] for axis, text in texts.items()}
    result = sweep(args.run, grid, args.split, args.checkpoint, args.side_deg)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
