"""The whole chain on a dataset folder: ``python -m acdc_wsss run --dataset_dir DIR --output_dir RUN``.

Stage 1 (L2G classifiers), stage 2 (CAMs, pseudo-label evaluation and export), stage 3 (DeepLab-v2 on the
pseudo labels), inference on the test patients and their evaluation, in that order. Each step is skipped
when its valid output is already there (a finished run, CAMs of the same checkpoint and settings, pseudo
labels made from those CAMs by the current rules, a finished network, masks newer than it made with the
current settings and rules), and an interrupted training resumes
from its ``last.pt``; ``--overwrite`` redoes everything. The patient split (``--splits``) is made once, by
patient and stratified by group: test patients are never seen by any training step, and their masks are
read only by the final evaluation. ``RUN/summary.json`` records the wall time of every step.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acdc_wsss.config import VOLATILE
from acdc_wsss.data.check import validated_patients
from acdc_wsss.errors import USER_ERRORS, DatasetError, describe
from acdc_wsss.l2g import L2GConfig, run_l2g
from acdc_wsss.layout import RunLayout, StageLayout
from acdc_wsss.pseudo import CamConfig, evaluate_pseudo, export_pseudo, run_cam
from acdc_wsss.pseudo.evaluate import chosen_setting, table_rows
from acdc_wsss.pseudo.rows import DEFAULT_ROWS, SUMMARY_ROWS
from acdc_wsss.pseudo.rules import rules_source
from acdc_wsss.pseudo.store import labels_fingerprint
from acdc_wsss.report import write_report
from acdc_wsss.seg import SegConfig, evaluate_seg, predict, run_seg
from acdc_wsss.seg.infer import POSTPROCESSING
from acdc_wsss.utils import ensure_writable, read_json, setup_cli_logging, write_json

__all__ = ["main", "run_chain"]

logger = logging.getLogger(__name__)


def _newer(path: Path, than: Path) -> bool:
    return path.is_file() and than.is_file() and path.stat().st_mtime >= than.stat().st_mtime


#: Settings that change how a step runs, not what it makes: a finished step is kept whatever they are
#: (those a resumed run may change, but for its length, and where the run lives).
OPERATIONAL = (VOLATILE - {"epochs"}) | {"output_dir"}


def _trained_with(stage: StageLayout, cfg: Any, ignore: frozenset[str] = frozenset()) -> bool:
    """Whether ``stage``'s manifest records ``cfg``'s settings, the operational ones and ``ignore`` aside
    (a setting the manifest predates counts as its default)."""
    if not stage.manifest.is_file():
        return False
    recorded = read_json(stage.manifest).get("config", {})
    wanted = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    defaults = {f.name: f.default for f in dataclasses.fields(cfg) if f.default is not dataclasses.MISSING}
    skip = OPERATIONAL | ignore
    return all(recorded.get(k, defaults.get(k)) == v for k, v in wanted.items() if k not in skip)


#: Stage-1 settings that say where the data lie, not what the classifiers learn from: a finished stage 1 is
#: kept when the dataset folder moves (the run's datalist holds the patients), and ``skip_bad`` changes
#: nothing on a dataset without problems (with one, the check refuses the run without it).
LOCATION = frozenset({"dataset_dir", "phantom_dir", "skip_bad"})


def _classifier_config(stage: StageLayout, cfg: Any, overwrite: bool) -> Any:
    """``cfg`` (a stage-1 config) to train ``stage``: resumed from its ``last.pt`` when its manifest records
    the same settings (or none), trained again from scratch when it records others."""
    same = not stage.manifest.is_file() or _trained_with(stage, cfg, LOCATION)
    return dataclasses.replace(
        cfg, overwrite=overwrite or not same, resume=stage.last.exists() and not overwrite and same
    )


def _preflight(dataset_dir: str | None, out: Path, skip_bad: bool, progress: bool) -> None:
    """Refuse, before any work, an output folder inside the dataset or one that cannot be written, and a
    dataset with a problem (every file is read, also when the run's later steps are already done)."""
    if dataset_dir is not None:
        data = Path(dataset_dir)
        if out.resolve().is_relative_to(data.resolve()):
            raise DatasetError(
                f"--output_dir {out} lies inside the dataset {data}; choose a folder outside it "
                "(the dataset folder is never written into)."
            )
    ensure_writable(out)
    if dataset_dir is not None:
        validated_patients(Path(dataset_dir), skip_bad=skip_bad, progress=progress)


@dataclass(frozen=True)
class Step:
    """One step of the chain.

    Attributes:
        name: what the log and ``summary.json`` call it.
        done: whether its valid output is there already (then it is kept, unless ``--overwrite``).
        run: makes the output from the step's settings.
        settings: makes the step's settings at its turn (they may depend on what earlier steps wrote), so
            bad settings are refused even when the step is kept.
    """

    name: str
    done: Callable[[], bool]
    run: Callable[[Any], Any]
    settings: Callable[[], Any] = lambda: None


def _steps(
    run: RunLayout,
    l2g_cfg: L2GConfig,
    seg: dict[str, Any],
    overwrite: bool,
    baseline_run: str | None,
    baseline: bool,
    train_baseline: bool,
    pseudo_table: str = "summary",
) -> list[Step]:
    """The chain's steps in order, each with its done-check: stage 1 (and the baseline classifier),
    stage 2 (CAMs, also of ``baseline_run`` when ``baseline``; evaluation; export), stage 3, inference and
    evaluation on the test patients."""
    out, device, progress = str(run.root), l2g_cfg.device, l2g_cfg.progress

    def resume(stage: StageLayout) -> bool:
        return stage.last.exists() and not overwrite

    def cams(output_dir: str) -> Callable[[], CamConfig]:
        return lambda: CamConfig(output_dir=output_dir, device=device, progress=progress, overwrite=overwrite)

    def seg_config() -> SegConfig:
        base = SegConfig(output_dir=out, device=device, progress=progress, **seg)
        # trained on the current pseudo labels, with the settings asked for now (else trained again); the
        # last self-training round's network records its round's labels as pseudo_dir
        rounds = frozenset({"pseudo_dir"}) if base.rounds else frozenset()
        fresh = _newer(run.seg.manifest, run.cam.pseudo_manifest) and _trained_with(run.seg, base, rounds)
        return dataclasses.replace(base, overwrite=overwrite or not fresh, resume=resume(run.seg) and fresh)

    base = run.baseline

    def base_config() -> L2GConfig:
        return _classifier_config(
            base.l2g, dataclasses.replace(l2g_cfg, output_dir=str(base.root), l2g=False), overwrite
        )

    def classifiers(stage: StageLayout, cfg: Callable[[], L2GConfig]) -> Callable[[], bool]:
        # finished, with the settings asked for now (else trained again, and every later step with it)
        return lambda: stage.complete and _trained_with(stage, cfg(), LOCATION)

    def l2g_config() -> L2GConfig:
        return _classifier_config(run.l2g, l2g_cfg, overwrite)

    steps = [Step("stage 1: L2G classifiers", classifiers(run.l2g, l2g_config), run_l2g, l2g_config)]
    if train_baseline:
        steps.append(
            Step("stage 1: baseline classifier", classifiers(base.l2g, base_config), run_l2g, base_config)
        )
    steps.append(Step("stage 2: CAMs", lambda: False, run_cam, cams(out)))  # run_cam keeps up-to-date CAMs
    if baseline_run is not None and baseline:
        steps.append(Step("stage 2: baseline CAMs", lambda: False, run_cam, cams(baseline_run)))
    masks = run.predictions.manifest
    return [
        *steps,
        *_label_steps(run, baseline_run, progress, pseudo_table),
        Step(
            "stage 3: segmentation network",
            lambda: run.seg.complete and not seg_config().overwrite,
            run_seg,
            seg_config,
        ),
        Step(
            "inference: test patients",
            lambda: _newer(masks, run.seg.last) and _predicted_as_the_chain_does(masks),
            lambda _: predict(out, "testing", device=device, progress=progress),
        ),
        Step(
            "evaluation: test patients",
            lambda: _newer(run.seg.evaluation("testing"), masks),
            lambda _: evaluate_seg(out, "testing", progress=progress),
        ),
    ]


#: The stage-2 tables the chain can score: ``summary`` (the CAM rows, the priors and the exported row) or
#: ``full`` (every row: the scan rules step by step as well).
PSEUDO_TABLES = ("summary", "full")


def _table_rows(pseudo_table: str) -> list[str]:
    """The rows :func:`~acdc_wsss.pseudo.evaluate_pseudo` scores for ``pseudo_table``."""
    if pseudo_table not in PSEUDO_TABLES:
        raise ValueError(f"pseudo_table is one of {list(PSEUDO_TABLES)}, got {pseudo_table!r}.")
    return table_rows("acdc", SUMMARY_ROWS if pseudo_table == "summary" else None)


def _label_steps(run: RunLayout, baseline_run: str | None, progress: bool, pseudo_table: str) -> list[Step]:
    """Stage 2's table on the training patients (``pseudo_table``'s rows) and the export of the labels."""
    out, evaluation, rows = str(run.root), run.cam.evaluation("training"), _table_rows(pseudo_table)
    return [
        Step(
            "stage 2: pseudo-label evaluation",
            lambda: _newer(evaluation, run.cam.manifest) and _scored(run, rows),
            lambda _: evaluate_pseudo(
                out, "training", baseline_run=baseline_run, progress=progress, rows=rows
            ),
        ),
        Step(
            "stage 2: pseudo-label export",
            lambda: _exported_as_chosen(run),
            lambda _: export_pseudo(out, progress=progress),
        ),
    ]


def _exported_as_chosen(run: RunLayout) -> bool:
    """Whether the exported pseudo labels are newer than the CAMs and made by the exported row at the
    setting the latest table chose, by the current rules: a table scored again on the same CAMs
    (``--pseudo_table full`` on a finished run) leaves them, and stage 3, as they are."""
    if not _newer(run.cam.pseudo_manifest, run.cam.manifest):
        return False
    made = read_json(run.cam.pseudo_manifest)
    row = made.get("row")
    return (
        row == DEFAULT_ROWS["acdc"]
        and made.get("value") == chosen_setting(run.root, row)
        and made.get("labels_fingerprint") == labels_fingerprint(run.root)
    )


def _scored(run: RunLayout, rows: list[str]) -> bool:
    """Whether the run's table of the training patients holds ``rows``, scored with the current rules on
    the current CAMs (:func:`~acdc_wsss.pseudo.store.labels_fingerprint`; a table made before the rules
    changed is not)."""
    table = read_json(run.cam.evaluation("training"))
    scored = {r["row"] for r in table.get("rows", [])}
    return set(rows) <= scored and table.get("labels_fingerprint") == labels_fingerprint(run.root)


#: What the chain's inference records (``predictions/manifest.json``): the settings it leaves to
#: :func:`~acdc_wsss.seg.predict`'s defaults, read from its signature so that they never drift apart.
_RECORDED = ("checkpoint", "flip", *POSTPROCESSING)
CHAIN_INFERENCE = {
    "source": "split testing",
    **{k: inspect.signature(predict).parameters[k].default for k in _RECORDED},
}


def _predicted_as_the_chain_does(masks: Path) -> bool:
    """The masks were made from the test patients with the settings and the rules the chain's inference uses
    now (masks made by another command, or before a default or a rule changed, are made again)."""
    record = read_json(masks)
    current = {**CHAIN_INFERENCE, "rules_source": rules_source()}
    return all(record.get(k) == v for k, v in current.items())


def _take(step: Step, overwrite: bool, times: dict[str, float], done: dict[str, str]) -> None:
    """Run ``step`` unless its valid output is there (and not ``overwrite``); record what happened."""
    settings = step.settings()
    if step.done() and not overwrite:
        done[step.name] = "kept"
        logger.info("%s: valid output found, kept (--overwrite redoes it)", step.name)
        return
    t0 = time.perf_counter()
    logger.info("%s ...", step.name)
    step.run(settings)
    times[step.name] = round(time.perf_counter() - t0, 1)
    done[step.name] = "ran"


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
    baseline: bool = False,
    pseudo_table: str = "summary",
) -> dict[str, Any]:
    """Run every step that has no valid output yet; return the summary (also in ``RUN/summary.json``).

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
        baseline: train that plain-CAM classifier too, in ``RUN/baseline`` (when ``baseline_run`` is None).
        pseudo_table: the stage-2 table scored on the training patients: ``summary`` (the CAM rows, the
            priors and the exported row) or ``full`` (the scan rules step by step too; about 3 min more on
            2 AVX2 cores). The exported labels are the same.
    """
    out = Path(output_dir)
    _table_rows(pseudo_table)  # refused before any work
    run = RunLayout(out)
    times: dict[str, float] = {}
    done: dict[str, str] = {}
    _preflight(dataset_dir, out, bool((l2g or {}).get("skip_bad")), progress)
    l2g_cfg = L2GConfig(
        **{
            "dataset_dir": dataset_dir,
            "output_dir": str(out),
            "device": device,
            "progress": progress,
            **({"splits": splits} if splits else {}),
            **(l2g or {}),
        }
    )
    train_baseline = baseline and baseline_run is None
    if train_baseline:
        baseline_run = str(run.baseline.root)
    steps = _steps(run, l2g_cfg, seg or {}, overwrite, baseline_run, baseline, train_baseline, pseudo_table)
    for step in steps:
        _take(step, overwrite, times, done)
    summary = {
        "dataset_dir": dataset_dir,
        "output_dir": str(out),
        "steps": done,
        "wall_s": times,
        "total_wall_s": round(sum(times.values()), 1),
        "seed": l2g_cfg.seed,
        "pseudo_labels_training": {
            r["row"]: r["mean_dice"] for r in read_json(run.cam.evaluation("training")).get("rows", [])
        },
        "test": read_json(run.seg.evaluation("testing")).get("mean", {}),
    }
    write_json(summary, run.summary)
    _take(Step("report", lambda: False, lambda _: write_report(out, baseline_run)), overwrite, times, done)
    write_json(summary, run.summary)
    return summary


def _setting(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"a stage setting is KEY=VALUE, such as width=0.5; got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _splits(text: str) -> dict[str, float]:
    try:
        return {k: float(v) for k, v in (part.split("=") for part in text.split(","))}
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            "--splits wants name=fraction pairs such as training=0.6,validation=0.2,testing=0.2, "
            f"got {text!r}"
        ) from e


def add_run_arguments(parser: argparse.ArgumentParser, output_dir: str | None) -> None:
    """The options of a whole-chain run (shared by ``python -m acdc_wsss run`` and the demo)."""
    parser.add_argument("--dataset_dir", default=None, help="ACDC folder (default: the synthetic phantom)")
    parser.add_argument("--output_dir", default=output_dir, help=f"run folder (default: {output_dir})")
    parser.add_argument("--splits", type=_splits, default=None, help="patient fractions (0.6/0.2/0.2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, training and phantom (0)")
    parser.add_argument("--overwrite", action="store_true", help="redo every step")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available)")
    parser.add_argument("--l2g_epochs", type=int, default=None, help="stage-1 epochs (default 8)")
    parser.add_argument("--seg_epochs", type=int, default=None, help="stage-3 epochs (default 8)")
    parser.add_argument("--skip_bad", action="store_true", help="leave patients with problems out")
    parser.add_argument("--backbone", default=None, help="stage-1 backbone (resnet18|34|50|101|38)")
    parser.add_argument("--pretrained", default=None, help="local ImageNet weights of the stage-1 backbone")
    parser.add_argument("--seg_backbone", default=None, help="stage-3 DeepLab backbone (resnet18|34|50|101)")
    parser.add_argument(
        "--seg_pretrained", default=None, help="local ImageNet weights of the stage-3 backbone"
    )
    for stage, cls in (("l2g", "L2GConfig"), ("seg", "SegConfig")):
        parser.add_argument(
            f"--{stage}",
            type=_setting,
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help=f"a stage setting ({cls} field), repeatable, e.g. --{stage} width=0.5",
        )
    parser.add_argument(
        "--pseudo_table",
        choices=PSEUDO_TABLES,
        default="summary",
        help="stage-2 table on the training patients: summary (CAM rows, priors, the exported row) or full "
        "(the scan rules step by step too; slower, the same labels)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_from_arguments(args: argparse.Namespace, baseline: bool) -> int:
    """Run the chain for parsed :func:`add_run_arguments` options, print where the results are and return
    the exit status (2 and one ``error:`` line for bad input)."""
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    l2g = {"seed": args.seed, "split_seed": args.seed, "skip_bad": args.skip_bad}
    seg: dict[str, Any] = {"seed": args.seed}
    if args.l2g_epochs:
        l2g["epochs"] = args.l2g_epochs
    if args.seg_epochs:
        seg["epochs"] = args.seg_epochs
    for target, prefix in ((l2g, ""), (seg, "seg_")):
        for key in ("backbone", "pretrained"):
            if getattr(args, prefix + key, None) is not None:
                target[key] = getattr(args, prefix + key)
    l2g.update(args.l2g)
    seg.update(args.seg)
    try:
        summary = run_chain(
            args.dataset_dir,
            args.output_dir,
            splits=args.splits,
            overwrite=args.overwrite,
            device=device,
            progress=not args.no_progress,
            l2g=l2g,
            seg=seg,
            baseline_run=getattr(args, "baseline_run", None),
            baseline=baseline,
            pseudo_table=args.pseudo_table,
        )
    except USER_ERRORS as e:
        print(f"error: {describe(e)}", file=sys.stderr)
        return 2
    t = {k: float(v) for k, v in summary["test"].items()}
    nan = float("nan")
    out = Path(args.output_dir)
    print(
        f"\ntest patients: mean Dice {t.get('dice_mean', nan):.3f} (RV {t.get('dice_RV', nan):.3f}, "
        f"Myo {t.get('dice_Myo', nan):.3f}, LV {t.get('dice_LV', nan):.3f}), "
        f"mean HD95 {t.get('hd95_mean', nan):.1f} mm; wall time {summary['total_wall_s'] / 60:.1f} min\n"
        f"results in {out}/:\n"
        f"  report.md             the page to open first (tables, figures, masks)\n"
        f"  seg/evaluation_testing.md|json|csv   test Dice and HD95\n"
        f"  cam/evaluation_training.md|json      pseudo-label table\n"
        f"  figures/              panels.png (image to prediction), curves.png, data.png\n"
        f"  predictions/          NIfTI masks, .seg.nrrd (drag into 3D Slicer), acdc_labels.ctbl"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m acdc_wsss", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="the whole chain on a dataset folder")
    add_run_arguments(run, "runs/acdc")
    run.add_argument("--baseline_run", default=None, help="plain-CAM run for the stage-2 table and figure")
    run.add_argument("--baseline", action="store_true", help="also train the plain-CAM baseline")
    report = sub.add_parser("report", help="redraw RUN/report.md and RUN/figures from a run's outputs")
    report.add_argument("run", help="run folder")
    args = parser.parse_args(argv)
    setup_cli_logging()
    if args.command == "report":
        try:
            print(write_report(args.run))
        except USER_ERRORS as e:
            print(f"error: {describe(e)}", file=sys.stderr)
            return 2
        return 0
    return run_from_arguments(args, baseline=args.baseline)


if __name__ == "__main__":
    sys.exit(main())
