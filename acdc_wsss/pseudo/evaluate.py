"""Stage 2 evaluation: each row of :mod:`acdc_wsss.pseudo.rows` scored as pseudo labels against the masks
(evaluation only), as JSON and markdown.

A row with a swept setting is scored for every value; the value is chosen on ``select_split`` (the
validation patients) and the scored split is reported at that value, so nothing is tuned on the patients
it is scored on; without a selection split each row keeps its first (default) setting. Scores are 2D Dice
pooled over all slices of the split, 128 x 128 at the chain's spacing.
:func:`chosen_setting` reads the setting the latest evaluation chose (the export uses it).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from acdc_wsss.data.slices import volume_key
from acdc_wsss.labels import IGNORE
from acdc_wsss.layout import RunLayout
from acdc_wsss.metrics import DiceAccumulator
from acdc_wsss.pseudo.rows import DEFAULT_ROWS as _EXPORT_ROWS
from acdc_wsss.pseudo.rows import ROW_SETS, ROWS, row_set, volume_contexts
from acdc_wsss.pseudo.rules.temporal import registration_workers
from acdc_wsss.pseudo.store import KeptLabels, labels_fingerprint, load_cams, read_cam_manifest, split_dataset
from acdc_wsss.utils import atomic_write, identity, moved, progress_bar, write_json

__all__ = ["FIXED_DEFAULT", "chosen_setting", "evaluate_pseudo", "markdown_table", "selects", "table_rows"]

logger = logging.getLogger(__name__)

#: ``selected_on`` of an evaluation with no selection split: each row's first setting, chosen on nothing.
FIXED_DEFAULT = "fixed default"

#: Names that lived here before 0.2.0.
__getattr__ = moved(
    __name__,
    {
        **dict.fromkeys(
            ("BG_CONSTANTS", "BG_THRESHOLDS", "CRF_CONFIDENCES", "DEFAULT_ROW", "DEFAULT_ROWS", "row_labels"),
            "acdc_wsss.pseudo.rows",
        ),
        **dict.fromkeys(
            ("labels_constant", "labels_learned", "crf_labels", "rgb_crf_labels"), "acdc_wsss.pseudo.rules"
        ),
        "cam_splits": "acdc_wsss.pseudo.store",
    },
)


def _accumulators(rows: Sequence[str], class_ids: list[int]) -> dict[tuple[str, Any], DiceAccumulator]:
    return {(r, t): DiceAccumulator(class_ids) for r in rows for t in ROWS[r][2]}


class _GroupScores(Dataset):
    """Item ``i``: every row at every setting scored on the volumes of ``groups[i]`` (one patient, ED before
    ES, so the ES rules reuse the ED context), as ``({(row, t): DiceAccumulator}, {(row, t): {volume:
    Dice}})``, for :func:`_score` to merge. A DataLoader worker (forked where the platform can) scores one
    group at a time; the labels of each of ``keep``'s rows and settings are written there."""

    def __init__(
        self,
        out: Path,
        ds: Any,
        rows: Sequence[str],
        baseline_run: str | os.PathLike | None,
        keep: Sequence[KeptLabels],
        groups: list[list[int]],
    ) -> None:
        self.out, self.ds, self.rows, self.baseline_run = out, ds, rows, baseline_run
        self.keep = {(k.row, k.value): k for k in keep}
        self.groups = groups
        self.class_ids = list(range(ds.num_classes + 1))

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(
        self, i: int
    ) -> tuple[dict[tuple[str, Any], DiceAccumulator], dict[tuple[str, Any], dict]]:
        ds, keep, class_ids = self.ds, self.keep, self.class_ids
        acc = _accumulators(self.rows, class_ids)
        per_volume: dict[tuple[str, Any], dict[str, list[float]]] = {k: {} for k in acc}
        for v, ctx in volume_contexts(self.out, ds, self.groups[i]):
            key = volume_key(ds.items[v])
            base = None
            if "baseline" in self.rows:
                base = {**ctx, **load_cams(self.baseline_run, key)}  # type: ignore[arg-type]
            ref = ds.volumes[v]["label"][0].numpy()
            void = ref == IGNORE  # void pixels (VOC borders) are scored by nobody
            for (row, t), a in acc.items():
                made = ROWS[row][1](base if row == "baseline" else ctx, t)
                if (row, t) in keep:
                    keep[(row, t)].put(key, made)
                pred = np.where(void, IGNORE, made)
                a.update(pred, ref)
                one = DiceAccumulator(class_ids[1:])
                one.update(pred, ref)
                per_volume[(row, t)][key] = [round(float(d), 4) for d in one.compute()]
        return acc, per_volume


def patient_groups(items: Sequence[dict[str, Any]]) -> list[list[int]]:
    """Indices of ``items`` in runs of one patient (in order; an item without a patient stands alone)."""
    groups: list[list[int]] = []
    for v, item in enumerate(items):
        patient = item.get("patient")
        if groups and patient is not None and items[groups[-1][-1]].get("patient") == patient:
            groups[-1].append(v)
        else:
            groups.append([v])
    return groups


def _score(
    out: Path,
    split: str,
    rows: Sequence[str],
    baseline_run: str | os.PathLike | None,
    progress: bool,
    keep: Sequence[KeptLabels] = (),
    workers: int | None = None,
) -> tuple[dict[tuple[str, Any], DiceAccumulator], dict[tuple[str, Any], dict[str, list[float]]], int, int]:
    """Each row at each setting scored on ``split``, one patient per task on ``workers`` processes (None:
    one per CPU core); the labels of ``keep``'s rows and settings are kept. The sums are exact integers, so
    the result does not depend on the number of workers."""
    ds = split_dataset(out, split, progress)
    if any(not it.get("label") for it in ds.items):  # from the datalist, no volume loaded
        raise ValueError(f"split {split!r} has volumes without masks; pseudo labels cannot be scored there.")
    acc = _accumulators(rows, list(range(ds.num_classes + 1)))
    per_volume: dict[tuple[str, Any], dict[str, list[float]]] = {k: {} for k in acc}
    groups = patient_groups(ds.items)
    n = min(registration_workers() if workers is None else workers, len(groups))
    loader = DataLoader(
        _GroupScores(out, ds, rows, baseline_run, keep, groups),
        batch_size=None,
        num_workers=n if n > 1 else 0,
        collate_fn=identity,
        generator=torch.Generator(),  # the global random state is left as it was
    )
    for sums, scores in progress_bar(loader, f"scoring pseudo labels ({split})", progress, len(groups)):
        for k, a in sums.items():
            acc[k].merge(a)
            per_volume[k].update(scores[k])
    return acc, per_volume, len(ds.volumes), len(ds)


def _mean_dice(acc: DiceAccumulator) -> float:
    return float(np.nanmean(acc.compute()[1:]))


def _table(
    rows: list[str],
    acc: dict[tuple[str, Any], DiceAccumulator],
    chooser: dict[tuple[str, Any], DiceAccumulator] | None,
    per_volume: dict[tuple[str, Any], dict[str, list[float]]],
    classes: list[str],
) -> list[dict[str, Any]]:
    """Each row at its setting chosen on ``chooser`` (the selection split; its first setting without one)."""
    table = []
    for row in rows:
        name, _, values = ROWS[row]
        best = values[0] if chooser is None else max(values, key=lambda t: _mean_dice(chooser[(row, t)]))
        dice, iou = acc[(row, best)].compute(), acc[(row, best)].compute_iou()
        table.append(
            {
                "row": row,
                "name": name,
                "setting": best,
                "dice": {c: float(d) for c, d in zip(classes, dice[1:], strict=True)},
                "mean_dice": float(np.nanmean(dice[1:])),
                "iou": {c: float(d) for c, d in zip(["background", *classes], iou, strict=True)},
                "miou": float(np.nanmean(iou)),
                "sweep": {str(t): _mean_dice(acc[(row, t)]) for t in values},
                "sweep_selection": (
                    {str(t): _mean_dice(chooser[(row, t)]) for t in values} if chooser is not None else None
                ),
                "per_volume": per_volume[(row, best)],
            }
        )
    return table


def selects(select_split: str | None, split: str, splits: Mapping[str, object]) -> bool:
    """Whether settings are chosen on ``select_split`` when ``split`` is scored: it is given, is another
    split than the scored one, and the run has it; otherwise every row keeps its default setting."""
    return bool(select_split) and select_split != split and select_split in splits


def table_rows(kind: str, asked: Sequence[str] | None = None) -> list[str]:
    """The rows :func:`evaluate_pseudo` scores of row set ``kind`` (``acdc`` or ``rgb``), in the table's
    order: ``asked`` (None: all but the baseline) and the exported row; an unknown row is refused."""
    rows = [r for r in ROW_SETS[kind] if r != "baseline"]
    if asked is None:
        return rows
    unknown = sorted(set(asked) - set(rows))
    if unknown:
        raise ValueError(f"unknown pseudo-label rows {unknown}; expected some of {rows}.")
    return [r for r in rows if r in asked or r == _EXPORT_ROWS[kind]]


def evaluate_pseudo(
    output_dir: str | os.PathLike,
    split: str = "training",
    select_split: str | None = "validation",
    baseline_run: str | os.PathLike | None = None,
    progress: bool = True,
    workers: int | None = None,
    rows: Sequence[str] | None = None,
) -> dict:
    """Score the stored CAMs of one split as pseudo labels; write ``cam/evaluation_<split>.{json,md}``.

    Args:
        output_dir: the run folder (its ``cam/`` made by ``infer.json``).
        split: the split scored (its masks are read for scoring only).
        select_split: the split on which each row's swept setting is chosen (validation patients); None,
            the scored split itself, or a split without CAMs: every row takes its first (default) setting,
            marked ``selected_on: "fixed default"`` in the JSON and the table (never chosen on ``split``).
        baseline_run: a plain-CAM run (``--l2g False``) with CAMs of the same volumes: adds its row.
        progress: progress bars on a terminal.
        workers: processes that score patients side by side (None: one per CPU core; 1: this process).
        rows: the rows scored, in the table's order (None: every row of the data set; the exported row is
            always scored, since the export reads its kept labels and chosen setting).

    Returns:
        ``{"rows": [{"row", "name", "setting", "dice", "mean_dice", "iou", "miou", "sweep", "per_volume"}],
        "selected_on", "labels_fingerprint" (:func:`~acdc_wsss.pseudo.store.labels_fingerprint`), ...}``.
    """
    out = Path(output_dir)
    manifest = read_cam_manifest(out)
    classes = manifest["classes"]
    rows = table_rows(row_set(manifest), rows)
    if baseline_run is not None:
        base_manifest = read_cam_manifest(baseline_run)
        missing = sorted(set(manifest["volumes"]) - set(base_manifest["volumes"]))
        if missing:
            raise ValueError(
                f"baseline run {baseline_run} has no CAMs for {len(missing)} volumes of {out} "
                f"(e.g. {missing[0]}); make them with the same infer.json run on the baseline."
            )
        rows.insert(0, "baseline")
    export_row = _EXPORT_ROWS[row_set(manifest)]
    # the export row's labels are kept at every setting for the export; those not chosen are dropped below
    keep = [KeptLabels(out, export_row, t, clear=True) for t in ROWS[export_row][2]]
    acc, per_volume, n_volumes, n_slices = _score(out, split, rows, baseline_run, progress, keep, workers)
    chooser: dict[tuple[str, Any], DiceAccumulator] | None = None
    selected_on = FIXED_DEFAULT
    if selects(select_split, split, manifest["splits"]):
        chooser, _, _, _ = _score(out, select_split, rows, baseline_run, progress, keep, workers)
        selected_on = select_split
    else:
        logger.warning(
            "no CAMs of a selection split (%s) beside the scored %r: every row uses its first (default) "
            "setting, nothing is tuned on the scored split.",
            select_split,
            split,
        )
    table = _table(rows, acc, chooser, per_volume, classes)
    chosen = next(r["setting"] for r in table if r["row"] == export_row)
    for k in keep:
        if k.value != chosen:
            k.discard()
    result = {
        "split": split,
        "selected_on": selected_on,
        "seed": manifest.get("seed"),
        "volumes": n_volumes,
        "slices": n_slices,
        "classes": classes,
        "labels_fingerprint": labels_fingerprint(out),
        "rows": table,
    }
    stage = RunLayout(out).cam
    write_json(result, stage.evaluation(split))
    with atomic_write(stage.evaluation(split, ".md")) as tmp:
        tmp.write_text(markdown_table(result), encoding="utf-8")
    logger.info("pseudo labels on %s:\n%s", split, markdown_table(result))
    return result


def chosen_setting(output_dir: str | os.PathLike, row: str) -> Any:
    """The setting of ``row`` chosen by the latest evaluation (on the validation patients when it had
    them); the row's first value when no evaluation holds it."""
    for path in reversed(RunLayout(output_dir).cam.evaluations()):
        for r in json.loads(path.read_text(encoding="utf-8")).get("rows", []):
            if r["row"] == row:
                return r["setting"]
    return ROWS[row][2][0]


def markdown_table(result: dict[str, Any]) -> str:
    """The evaluation as a markdown table (one row per rule)."""
    classes = result["classes"]
    where = result["selected_on"]
    head = (
        f"| pseudo labels ({result['split']}: {result['volumes']} volumes, {result['slices']} slices) "
        f"| setting (chosen on {where}) | " + " | ".join(classes) + " | mean Dice | mIoU |\n"
    )
    head += "| --- | --- | " + " | ".join("---" for _ in classes) + " | --- | --- |\n"
    body = "".join(
        f"| {r['name']} | {r['setting']} | "
        + " | ".join(f"{r['dice'][c]:.3f}" for c in classes)
        + f" | {r['mean_dice']:.3f} | {r['miou']:.3f} |\n"
        for r in result["rows"]
    )
    return head + body
