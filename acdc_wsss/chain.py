"""The whole chain on a dataset folder: ``python -m acdc_wsss run --dataset_dir DIR --output_dir RUN``.

Stage 1 (L2G classifiers), stage 2 (CAMs, pseudo-label evaluation and export), stage 3 (DeepLab-v2 on the
pseudo labels), inference on the test patients and their evaluation, in that order. Each step is skipped
when its valid output is already there (a finished run, CAMs of the same checkpoint and settings, pseudo
labels newer than the CAMs, a finished network, masks newer than it), and an interrupted training resumes
from its ``last.pt``; ``--overwrite`` redoes everything. The patient split (``--splits``) is made once, by
patient and stratified by group: test patients are never seen by any training step, and their masks are
read only by the final evaluation. ``RUN/summary.json`` records the wall time of every step.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from acdc_wsss.data.acdc import USER_ERRORS
from acdc_wsss.engine import LAST
from acdc_wsss.l2g import L2GConfig, run_l2g
from acdc_wsss.pseudo import CamConfig, evaluate_pseudo, export_pseudo, figure_panels, run_cam
from acdc_wsss.seg import SegConfig, evaluate_seg, predict, run_seg
from acdc_wsss.utils import setup_cli_logging, write_json

__all__ = ["main", "run_chain"]

logger = logging.getLogger(__name__)


def _manifest(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _complete(stage_dir: Path) -> bool:
    return _manifest(stage_dir / "manifest.json").get("status") == "complete"


def _newer(path: Path, than: Path) -> bool:
    return path.is_file() and than.is_file() and path.stat().st_mtime >= than.stat().st_mtime


def run_chain(
    dataset_dir: str | None,
    output_dir: str,
    splits: dict[str, float] | None = None,
    overwrite: bool = False,
    device: str = "cpu",
    progress: bool = True,
    l2g: dict[str, Any] | None = None,
    seg: dict[str, Any] | None = None,
    baseline_run: str | None = None,
) -> dict[str, Any]:
    """Run every stage that has no valid output yet; return the summary (also in ``RUN/summary.json``).

    Args:
        dataset_dir: ACDC folder (None: the phantom).
        output_dir: the run folder.
        splits: patient fractions, e.g. ``{"training": 0.6, "validation": 0.2, "testing": 0.2}``.
        overwrite: redo every step.
        device: torch device.
        progress: progress bars on a terminal.
        l2g: extra stage-1 settings (:class:`~acdc_wsss.l2g.L2GConfig` fields).
        seg: extra stage-3 settings (:class:`~acdc_wsss.seg.SegConfig` fields).
        baseline_run: a plain-CAM run with CAMs of the same volumes, for the stage-2 table and figure.
    """
    out = Path(output_dir)
    times: dict[str, float] = {}
    done: dict[str, str] = {}

    def step(name: str, skip: bool, fn: Callable[[], Any]) -> Any:
        if skip and not overwrite:
            done[name] = "kept"
            logger.info("%s: valid output found, kept (--overwrite redoes it)", name)
            return None
        t0 = time.perf_counter()
        logger.info("%s ...", name)
        result = fn()
        times[name] = round(time.perf_counter() - t0, 1)
        done[name] = "ran"
        return result

    l2g_dir, seg_dir = out / "l2g", out / "seg"
    l2g_cfg = L2GConfig(
        **{
            "dataset_dir": dataset_dir,
            "output_dir": str(out),
            "device": device,
            "progress": progress,
            **({"splits": splits} if splits else {}),
            **(l2g or {}),
            "overwrite": overwrite,
            "resume": (l2g_dir / LAST).exists() and not overwrite,
        }
    )
    step("stage 1: L2G classifiers", _complete(l2g_dir), lambda: run_l2g(l2g_cfg))
    cam_cfg = CamConfig(output_dir=str(out), device=device, progress=progress, overwrite=overwrite)
    step("stage 2: CAMs", False, lambda: run_cam(cam_cfg))  # run_cam keeps up-to-date CAMs itself
    cams = out / "cam" / "manifest.json"
    evaluation = out / "cam" / "evaluation_training.json"
    step(
        "stage 2: pseudo-label evaluation",
        _newer(evaluation, cams),
        lambda: evaluate_pseudo(out, "training", baseline_run=baseline_run, progress=progress),
    )
    pseudo = out / "cam" / "pseudo" / "manifest.json"
    step(
        "stage 2: pseudo-label export",
        _newer(pseudo, evaluation),
        lambda: export_pseudo(out, progress=progress),
    )
    panels = out / "cam" / "panels.png"
    step(
        "stage 2: figure panels",
        _newer(panels, pseudo),
        lambda: figure_panels(out, baseline_run, panels),
    )
    seg_cfg = SegConfig(
        **{
            "output_dir": str(out),
            "device": device,
            "progress": progress,
            **(seg or {}),
            "overwrite": overwrite or not _newer(seg_dir / "manifest.json", pseudo),
            "resume": (seg_dir / LAST).exists()
            and not overwrite
            and _newer(seg_dir / "manifest.json", pseudo),
        }
    )
    step(
        "stage 3: segmentation network",
        _complete(seg_dir) and _newer(seg_dir / "manifest.json", pseudo),
        lambda: run_seg(seg_cfg),
    )
    masks = out / "predictions" / "manifest.json"
    step(
        "inference: test patients",
        _newer(masks, seg_dir / LAST) and _manifest(masks).get("source") == "split testing",
        lambda: predict(out, "testing", device=device, progress=progress),
    )
    result = step(
        "evaluation: test patients",
        _newer(out / "seg" / "evaluation_testing.json", masks),
        lambda: evaluate_seg(out, "testing", progress=progress),
    )
    result = result or _manifest(out / "seg" / "evaluation_testing.json")
    pseudo_rows = _manifest(evaluation).get("rows", [])
    summary = {
        "dataset_dir": dataset_dir,
        "output_dir": str(out),
        "steps": done,
        "wall_s": times,
        "total_wall_s": round(sum(times.values()), 1),
        "pseudo_labels_training": {r["row"]: r["mean_dice"] for r in pseudo_rows},
        "test": result.get("mean", {}),
    }
    write_json(summary, out / "summary.json")
    return summary


def _splits(text: str) -> dict[str, float]:
    try:
        return {k: float(v) for k, v in (part.split("=") for part in text.split(","))}
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            "--splits wants name=fraction pairs such as training=0.6,validation=0.2,testing=0.2, "
            f"got {text!r}"
        ) from e


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m acdc_wsss", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="the whole chain on a dataset folder")
    run.add_argument("--dataset_dir", default=None, help="ACDC folder (default: the synthetic phantom)")
    run.add_argument("--output_dir", default="runs/acdc", help="run folder (default: runs/acdc)")
    run.add_argument("--splits", type=_splits, default=None, help="patient fractions (default 0.6/0.2/0.2)")
    run.add_argument("--overwrite", action="store_true", help="redo every step")
    run.add_argument("--device", default=None, help="torch device (default: cuda when available)")
    run.add_argument("--l2g_epochs", type=int, default=None, help="stage-1 epochs (default 8)")
    run.add_argument("--seg_epochs", type=int, default=None, help="stage-3 epochs (default 12)")
    run.add_argument("--baseline_run", default=None, help="plain-CAM run for the stage-2 table and figure")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    setup_cli_logging()
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        summary = run_chain(
            args.dataset_dir,
            args.output_dir,
            splits=args.splits,
            overwrite=args.overwrite,
            device=device,
            progress=not args.no_progress,
            l2g={"epochs": args.l2g_epochs} if args.l2g_epochs else None,
            seg={"epochs": args.seg_epochs} if args.seg_epochs else None,
            baseline_run=args.baseline_run,
        )
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t = {k: float(v) for k, v in summary["test"].items()}
    nan = float("nan")
    print(
        f"\ntest patients: mean Dice {t.get('dice_mean', nan):.3f} (RV {t.get('dice_RV', nan):.3f}, "
        f"Myo {t.get('dice_Myo', nan):.3f}, LV {t.get('dice_LV', nan):.3f}), "
        f"mean HD95 {t.get('hd95_mean', nan):.1f} mm; wall time {summary['total_wall_s'] / 60:.1f} min"
    )
    print(f"masks: {Path(args.output_dir) / 'predictions'}; tables: {Path(args.output_dir) / 'seg'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
