"""One page per run: ``RUN/report.md`` with the tables, figures and masks a reader looks for first.

:func:`write_report` draws ``RUN/figures/`` (the data preview, the method panels from image to
prediction, the training curves) and writes ``report.md``, which links them together with the metric
tables (markdown and JSON) and the NIfTI masks with their 3D Slicer colour table. It only reads what the
stages wrote, so it can be redrawn at any time: ``python -m acdc_wsss report RUN``.
"""

from __future__ import annotations

import logging
import os
import platform
from collections import Counter
from pathlib import Path
from typing import Any

from acdc_wsss.config import versions
from acdc_wsss.data.slices import SliceDataset
from acdc_wsss.figures import figure_panels, save_preview, training_curves
from acdc_wsss.layout import RunLayout
from acdc_wsss.seg.model import ensemble_size, recorded_on_validation
from acdc_wsss.utils import atomic_write, read_json, write_json

__all__ = ["dataset_summary", "save_preview", "training_curves", "write_report"]

logger = logging.getLogger(__name__)


def dataset_summary(ds: SliceDataset, splits: dict[str, list[str]]) -> dict[str, Any]:
    """Counts a user wants to see before training: patients per split, volumes, slices, tag frequencies."""
    tags = ds.tags().numpy()
    return {
        "patients": {k: len(v) for k, v in splits.items()},
        "volumes": len(ds.volumes),
        "slices": len(ds),
        "slice_shape": list(ds[0]["image"].shape),
        "slices_with_all_tags": round(float((tags.sum(1) == tags.shape[1]).mean()), 3),
        "slices_without_tags": round(float((tags.sum(1) == 0).mean()), 3),
        "tag_frequency": {c: round(float(f), 3) for c, f in zip(ds.classes, tags.mean(0), strict=True)},
        "groups": dict(Counter(it["group"] for it in ds.items if it["phase"] == "ED")),
    }


def _table(path: Path) -> str:
    return path.read_text(encoding="utf-8").strip() if path.is_file() else "_not made yet_"


def _link(run: Path, path: Path) -> str:
    rel = path.relative_to(run).as_posix()
    return f"[`{rel}`]({rel})" if path.exists() else f"`{rel}` (not made yet)"


def _image(run: Path, path: Path, name: str, missing: str) -> str:
    return f"![{name}]({path.relative_to(run).as_posix()})" if path.is_file() else missing


def _draw_figures(run: RunLayout, l2g: dict[str, Any], baseline_run: str | os.PathLike | None) -> None:
    """``figures/``: the data preview (and ``dataset_summary.json``), the method panels, the curves."""
    if l2g:
        splits = l2g.get("splits", {})
        ds = run.slices(l2g, [it for key in splits for it in run.split(key)])
        write_json(dataset_summary(ds, splits), run.dataset_summary)
        save_preview(ds, run.data_preview)
    if run.cam.manifest.is_file():
        figure_panels(run.root, baseline_run, run.panels)
    training_curves(run.root, run.curves)


def _header(run: RunLayout, l2g: dict[str, Any]) -> list[str]:
    """Title, data set, seed, machine, versions and step times."""
    cfg = l2g.get("config", {})
    phantom = bool(l2g) and (Path(l2g["dataset_dir"]) / "phantom.json").is_file()
    seed = l2g.get("seed", cfg.get("seed"))
    summary = read_json(run.summary)
    lines = [
        f"# Run report: `{run.root.name}`",
        "",
        f"- data set: `{l2g.get('dataset_dir')}`{' (synthetic phantom)' if phantom else ''}"
        "; patients per split: " + ", ".join(f"{k} {len(v)}" for k, v in l2g.get("splits", {}).items()),
        f"- seed: {seed}; device: {cfg.get('device', '?')}; machine: {platform.machine()}, "
        f"{os.cpu_count()} CPU cores; versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()),
    ]
    if summary.get("wall_s"):
        lines.append(
            f"- wall time {summary['total_wall_s'] / 60:.1f} min: "
            + "; ".join(f"{k} {v:.0f} s" for k, v in summary["wall_s"].items())
        )
    return lines


def _tables(run: RunLayout) -> list[str]:
    """The test-patient table and the pseudo-label table, with links to every number."""
    root, seg, cam = run.root, run.seg, run.cam
    test = read_json(seg.evaluation("testing"))
    lines = [
        "",
        "## Test patients (stage 3 network, 3D Dice and HD95 on the original grid)",
        "",
        _table(seg.evaluation("testing", ".md")),
        "",
        f"Per volume: {_link(root, seg.evaluation('testing', '.csv'))}; "
        f"all numbers: {_link(root, seg.evaluation('testing'))}.",
    ]
    if test:
        lines.append(f"Test patients: {test.get('patients')} ({test.get('volumes')} volumes).")
    size = ensemble_size(read_json(seg.manifest)) if seg.manifest.is_file() else 1
    if size > 1:
        lines.append(
            f"The network is an ensemble of {size}, trained alike but for their seeds, whose probabilities "
            f"are averaged: `seg/` and {_link(root, run.seg_members)}."
        )
    return [
        *lines,
        *_rounds_table(run),
        "",
        "## Pseudo labels (stage 2, training patients, 2D Dice over slices)",
        "",
        _table(cam.evaluation("training", ".md")),
        "",
        f"All numbers and every swept setting: {_link(root, cam.evaluation('training'))}.",
        *_full_table_hint(cam.evaluation("training")),
    ]


def _full_table_hint(evaluation: Path) -> list[str]:
    """A line saying how to score the scan rules step by step, when the table holds the summary rows only."""
    rows = {r["row"] for r in read_json(evaluation).get("rows", [])} if evaluation.is_file() else set()
    if "scan_es" not in rows or "scan" in rows:  # not an ACDC table, or the full one
        return []
    return [
        "",
        "The scan rules step by step (LV, epicardium, RV, before the ED-ES fusion): run the chain command "
        "again with `--pseudo_table full`; the labels and the network are kept.",
    ]


def _rounds_table(run: RunLayout) -> list[str]:
    """The stage-3 round table (``seg/rounds.json``): round 0 is the network on the stage-2 labels."""
    rounds = read_json(run.rounds).get("rounds")
    if not rounds:
        return []
    lines = [
        "",
        "## Stage-3 rounds (labels: 2D Dice on the training patients; network: Dice on validation patients)",
        "",
        "| round | labels | labels' Dice RV / Myo / LV | labels' mean Dice | network's validation Dice |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rounds:
        dice = r["training_labels"] or {"dice": {}, "mean": float("nan")}
        per = " / ".join(f"{d:.3f}" for d in dice["dice"].values()) or "-"
        val = r.get("validation_dice")
        source = "stage 2" if r["labels"] == "stage 2" else f"network of round {r['round'] - 1}"
        val_text = f"{val:.3f}" if val is not None else "-"
        if val is not None and not r.get("validation_held_out", True):
            val_text += " (trained on their pseudo labels)"
        lines.append(f"| {r['round']} | {source} | {per} | {dice['mean']:.3f} | {val_text} |")
    lines += ["", f"All numbers: {_link(run.root, run.rounds)}."]
    return lines


def _figures_and_masks(run: RunLayout) -> list[str]:
    """The figures, the data counts and the masks for 3D Slicer."""
    root = run.root
    seen = recorded_on_validation(read_json(run.seg.manifest))
    return [
        "",
        "## What the method does",
        "",
        "Image, baseline CAM, L2G CAM, refined labels, pseudo label (white: ignored in training), the"
        " stage-3 network's own prediction (the masks in `predictions/` add the anatomy fusion, the ED"
        " frame's help, the dense CRF and the rules on the masks: the LV convex, the epicardium pulled in,"
        " an unenclosed basal LV removed, the ED frame's bright endocardium made LV, the ES RV cut at the ED"
        " frame's base) and the"
        " ground truth, on validation patients"
        + (" (stage 3 trained on their pseudo labels too: `train_on_validation`)" if seen else "")
        + ":",
        "",
        _image(root, run.panels, "panels", "_no panels yet_"),
        "",
        "## Training curves",
        "",
        _image(root, run.curves, "curves", "_no training yet_"),
        "",
        "## Data",
        "",
        _image(root, run.data_preview, "data", "_no data preview_"),
        "",
        f"Counts: {_link(root, run.dataset_summary)}; split: {_link(root, run.datalist)}.",
        "",
        "## Masks for 3D Slicer",
        "",
        f"- test-patient predictions: {_link(root, run.predictions.path)} (`*_seg.nii.gz`, uint8, 0"
        " background, 1 RV, 2 Myo, 3 LV, on the source image's grid; `*_seg.seg.nrrd`, the same as 3D"
        " Slicer segmentations with named, coloured segments)",
        f"- colour table: {_link(root, run.predictions.colour_table)}",
        f"- pseudo labels of the training patients: {_link(root, run.cam.nifti)}",
        "",
        "In 3D Slicer: drag the source `patientXXX_frameYY.nii.gz` and its `_seg.seg.nrrd` in; RV, Myo and"
        " LV appear by name. For the NIfTI mask, tick *Show Options* > *LabelMap* and pick the colour table"
        f" (drag `{run.predictions.colour_table.name}` in first) in the *Volumes* module's *Display* section."
        " The README gives the steps in full.",
        "",
    ]


def write_report(run: str | os.PathLike, baseline_run: str | os.PathLike | None = None) -> Path:
    """Draw ``RUN/figures/`` and write ``RUN/report.md`` (atomically); return the report's path.

    Args:
        run: a run folder of the whole chain (or of any stages of it; missing parts are marked).
        baseline_run: plain-CAM run for the panels' baseline column (default ``RUN/baseline`` if present).
    """
    layout = RunLayout(run)
    if not layout.datalist.is_file():
        raise FileNotFoundError(
            f"{layout.root} holds no run (no {layout.datalist.name}); make one: python -m acdc_wsss run"
        )
    if baseline_run is None and layout.baseline.cam.manifest.is_file():
        baseline_run = layout.baseline.root
    l2g = read_json(layout.l2g.manifest)
    _draw_figures(layout, l2g, baseline_run)
    lines = [*_header(layout, l2g), *_tables(layout), *_figures_and_masks(layout)]
    with atomic_write(layout.report) as tmp:
        tmp.write_text("\n".join(lines), encoding="utf-8")
    return layout.report
