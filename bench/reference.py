"""Stage 1 on ACDC: the L2G reference profile's objective beside the project's default, on the
validation patients.

    python bench/reference.py --data ../shared/data/acdc --default_run runs/acdc --out runs/acdc-reference

``--default_run`` is a run whose stage 1 (and its CAMs of the validation split) the default settings made
(``python -m acdc_wsss run``). ``--out`` gets a stage 1 trained with the method and optimiser rows of
``voc_adapter/configs/l2g_reference.json`` (no global classification loss, no background loss, attention
threshold 0.001, the PCM map pooled into the logits, plain pooling, SGD-Nesterov at 0.01 with x0.1 at half
the 10 epochs, batch 3, 6 views of 320/448 of the slice) on the ACDC network (the default backbone from
random initialisation: no ResNet-38 or ImageNet weights on a CPU), then CAMs the reference way (bicubic,
ReLU of the mean). Both runs are scored on the validation split only: tag mAP and CAM Dice
(``evaluate_l2g``) and the pseudo-label rows (``evaluate_pseudo``). Prints one JSON line. A finished
``--out`` stage is kept.

``--rows`` measures the rows one at a time instead: first the ACDC default, retrained by this code (row
``default``), then for each named row a stage 1 with the default and that row of the profile alone (in
``--out/<row>``, sharing the default run's cache), scored the same way and against that default;
``cam_inference`` trains nothing and redoes the default's CAMs the reference way. Prints one JSON
line per row as it finishes, then the table of differences to the default.

    python bench/reference.py --data ../shared/data/acdc --default_run runs/acdc --out runs/rows --rows all
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from stage3 import link_cache, link_into

from acdc_wsss.l2g import L2GConfig, evaluate_l2g, recorded_l2g_config, run_l2g
from acdc_wsss.layout import RunLayout
from acdc_wsss.pseudo import CamConfig, evaluate_pseudo, run_cam

ROOT = Path(__file__).resolve().parents[1]
#: Rows of the reference profile that concern photos or ImageNet weights, not the method on ACDC.
PHOTO_ONLY = {
    "+imports",
    "output_dir",
    "dataset",
    "backbone",
    "width",
    "image_size",
    "freeze",
    "color_jitter",
}
PHOTO_ONLY |= {"saliency_key", "saliency_sigma"}


#: Each row of the profile that applies to ACDC, as the profile's settings it switches.
ROWS: dict[str, tuple[str, ...]] = {
    "default": (),
    "global_loss": ("global_cls",),
    "local_loss": ("bg_weight",),
    "threshold": ("att_threshold",),
    "pooled_map": ("pooled_map",),
    "pcm_features": ("pcm_features",),
    "pooling": ("saliency_pool",),
    "views": ("num_views", "view_ratio"),
    "optimiser": ("optimizer", "lr", "weight_decay", "new_lr_mult", "lr_schedule"),
    "epochs_batch": ("epochs", "batch_size"),
    "cam_inference": (),
}
#: The reference way of turning the network's maps into CAMs.
REFERENCE_CAM = {"resize": "bicubic", "relu": "mean"}


def reference_settings() -> dict[str, Any]:
    """The reference profile's method and optimiser settings, as they apply to ACDC."""
    profile = json.loads((ROOT / "voc_adapter" / "configs" / "l2g_reference.json").read_text())
    return {k: v for k, v in profile.items() if k not in PHOTO_ONLY}


def _scores(run: Path) -> dict[str, Any]:
    l2g = evaluate_l2g(recorded_l2g_config(run, progress=False), split="validation", checkpoint="best")
    table = evaluate_pseudo(run, split="validation", select_split="validation", progress=False)
    keep = ("map", "macro_f1", "cam_dice", "cam_dice_mean", "heart_dice")
    return {
        "stage1": {k: v for k, v in l2g.items() if k in keep},
        "pseudo_rows": {
            r["row"]: {"setting": r["setting"], "mean_dice": r["mean_dice"]} for r in table["rows"]
        },
    }


def measure_row(row: str, data: str, default_run: Path, out: Path) -> dict[str, Any]:
    """One row of the profile on top of the ACDC default: stage 1 (unless ``cam_inference``, which uses the
    stage 1 of ``default_run``), CAMs of the validation split, the validation scores."""
    profile = reference_settings()
    settings = {k: profile[k] for k in ROWS[row]}
    start = time.time()
    link_cache(default_run, out)
    if row == "cam_inference":
        link_into(out, (default_run / n for n in ("l2g", "datalist.json")))
    else:
        layout = RunLayout(out)
        if not (layout.l2g.manifest.is_file() and layout.l2g.complete):
            cfg = L2GConfig(dataset_dir=data, output_dir=str(out), progress=False, **settings)
            run_l2g(cfg)
    cam = REFERENCE_CAM if row == "cam_inference" else {}
    run_cam(CamConfig(output_dir=str(out), splits=["validation"], progress=False, **cam))
    settings |= {f"cam_{k}": v for k, v in cam.items()}
    return {"row": row, "settings": settings, "minutes": round((time.time() - start) / 60, 1)} | _scores(out)


def _difference(row: dict[str, Any], default: dict[str, Any]) -> dict[str, float]:
    keys = ("map", "macro_f1", "cam_dice_mean")
    diff = {k: round(row["stage1"][k] - default["stage1"][k], 3) for k in keys}
    for name, r in row["pseudo_rows"].items():
        diff[f"pseudo_{name}"] = round(r["mean_dice"] - default["pseudo_rows"][name]["mean_dice"], 3)
    return diff


def measure_rows(rows: list[str], data: str, default_run: Path, out: Path) -> dict[str, Any]:
    """The ACDC default retrained by this code (row ``default``, in ``out/default``, its cache linked from
    ``default_run``), then every named row alone against it: one JSON line each, the table at the end."""
    default = measure_row("default", data, default_run, out / "default")
    print(json.dumps(default, default=float), flush=True)
    table = {}
    for row in (r for r in rows if r != "default"):
        source = out / "default" if row == "cam_inference" else default_run
        result = measure_row(row, data, source, out / row)
        print(json.dumps(result, default=float), flush=True)
        table[row] = _difference(result, default)
    return {"split": "validation", "default": default, "difference_to_default": table}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help="the ACDC folder")
    parser.add_argument("--default_run", required=True, help="a run whose stage 1 the defaults made")
    parser.add_argument("--out", required=True, help="run folder for the reference profile")
    parser.add_argument(
        "--rows", nargs="+", choices=[*ROWS, "all"], help="measure these rows one at a time instead"
    )
    args = parser.parse_args(argv)
    if args.rows:
        rows = list(ROWS) if "all" in args.rows else args.rows
        table = measure_rows(rows, args.data, Path(args.default_run), Path(args.out))
        print(json.dumps(table, default=float))
        return 0
    out, settings = Path(args.out), reference_settings()
    start = time.time()
    if not (RunLayout(out).l2g.manifest.is_file() and RunLayout(out).l2g.complete):
        run_l2g(L2GConfig(dataset_dir=args.data, output_dir=str(out), progress=False, **settings))
    train_min = (time.time() - start) / 60
    run_cam(
        CamConfig(output_dir=str(out), resize="bicubic", relu="mean", splits=["validation"], progress=False)
    )
    result = {
        "split": "validation",
        "reference_settings": settings,
        "reference_stage1_minutes": round(train_min, 1),
        "default": _scores(Path(args.default_run)),
        "reference": _scores(out),
    }
    print(json.dumps(result, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
