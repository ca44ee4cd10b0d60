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
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help="the ACDC folder")
    parser.add_argument("--default_run", required=True, help="a run whose stage 1 the defaults made")
    parser.add_argument("--out", required=True, help="run folder for the reference profile")
    args = parser.parse_args(argv)
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
