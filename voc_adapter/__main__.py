"""``python -m voc_adapter run --voc-root DIR --output_dir RUN --stages l2g,cam``: the bundles' stages on VOC.

Stages: ``l2g`` (stage 1 on the train list less a held-out part, validated on val), ``cam`` (CAMs of
train, the held-out part and val; the pseudo-label table with its settings chosen on the held-out part and
scored on val with mIoU over 21 classes and void ignored, pseudo labels exported as PNG), ``deeplab``
(stage 3 on the pseudo labels), ``evaluate`` (val images segmented to PNG; per-class IoU and mIoU, the
final table).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from acdc_wsss.errors import USER_ERRORS, describe
from acdc_wsss.utils import setup_cli_logging

STAGES = ("l2g", "cam", "deeplab", "evaluate")
#: ``--profile``: the stage-1 and stage-2 settings of each, as bundle overrides in ``configs/``.
PROFILES = {
    "default": ("l2g_train.json", None),
    "reference": ("l2g_reference.json", "l2g_reference_infer.json"),
}
_CONFIGS = Path(__file__).parent / "configs"
#: Ids of the profiles that are no stage setting here (the CLI sets them itself).
_NOT_SETTINGS = {"+imports", "output_dir", "dataset"}


def profile_settings(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The stage-1 settings (:class:`~acdc_wsss.l2g.L2GConfig` fields) and stage-2 settings (``cam_*`` and
    ``pseudo_*`` ids of ``infer.json``) of a ``--profile``."""
    stage1, stage2 = PROFILES[name]
    l2g = json.loads((_CONFIGS / stage1).read_text(encoding="utf-8"))
    cam = json.loads((_CONFIGS / stage2).read_text(encoding="utf-8")) if stage2 else {}
    return {k: v for k, v in l2g.items() if k not in _NOT_SETTINGS}, cam


def _stage1(args: argparse.Namespace, device: str, progress: bool) -> dict[str, Any]:
    """The stage-1 settings of a run: the profile's, then what the command line gives."""
    own, _ = profile_settings(args.profile)
    given = {
        k: getattr(args, k)
        for k in ("image_size", "epochs", "width", "backbone", "pretrained")
        if getattr(args, k) is not None
    }
    fixed = {"dataset": "voc", "dataset_dir": args.voc_root, "output_dir": args.output_dir}
    return {**own, **given, **fixed, "device": device, "progress": progress, "overwrite": args.overwrite}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m voc_adapter", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run stages on a VOC2012 folder")
    run.add_argument("--voc-root", required=True, help="VOC2012 folder (or the VOCdevkit above it)")
    run.add_argument("--output_dir", default="runs/voc", help="run folder (default runs/voc)")
    run.add_argument("--stages", default="l2g,cam,deeplab,evaluate", help="comma-separated stages")
    run.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="default",
        help="stage-1/2 settings: default (this project's) or reference (the L2G paper's, configs/)",
    )
    run.add_argument("--image_size", type=int, default=None, help="training crop (profile: 321, 448)")
    run.add_argument("--epochs", type=int, default=None, help="stage-1 epochs (profile: 5, 10)")
    run.add_argument("--seg_epochs", type=int, default=10, help="stage-3 epochs (10)")
    run.add_argument("--cam_scales", default="0.5,1.0,1.5,2.0", help="CAM inference scales")
    run.add_argument("--width", type=float, default=None, help="stage-1 backbone width (profile: 0.25, 1)")
    run.add_argument("--backbone", default=None, help="stage-1 backbone (profile: resnet18, resnet38)")
    run.add_argument("--pretrained", default=None, help="local ImageNet weights of the stage-1 backbone")
    run.add_argument("--seg_backbone", default="resnet18", help="stage-3 DeepLab backbone (resnet18)")
    run.add_argument("--seg_pretrained", default=None, help="local ImageNet weights of the stage-3 backbone")
    run.add_argument(
        "--seg_width", type=float, default=None, help="stage-3 backbone width (--width, or 0.25)"
    )
    run.add_argument("--device", default=None, help="torch device (default: cuda when available)")
    run.add_argument("--overwrite", action="store_true", help="redo stage 1 if the folder holds one")
    run.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        print(f"error: unknown stages {unknown}; available: {','.join(STAGES)}", file=sys.stderr)
        return 2
    setup_cli_logging()
    import torch

    import voc_adapter  # registers the voc data set
    from acdc_wsss.l2g import run_l2g
    from acdc_wsss.pseudo import CamConfig, evaluate_pseudo, export_pseudo, run_cam
    from acdc_wsss.pseudo.evaluate import markdown_table
    from acdc_wsss.seg import run_seg
    from voc_adapter.dataset import HOLDOUT
    from voc_adapter.segment import evaluate_voc, miou_table, predict_voc

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    progress = not args.no_progress
    try:
        voc_adapter.check_voc(args.voc_root)  # every problem listed before any work
        if "l2g" in stages:
            run_l2g(_stage1(args, device, progress))
        if "cam" in stages:
            scales = [float(x) for x in args.cam_scales.split(",")]
            splits = ["training", "validation", HOLDOUT]
            _, own = profile_settings(args.profile)
            cam = CamConfig(
                output_dir=args.output_dir,
                scales=scales,
                device=device,
                progress=progress,
                splits=splits,
                **{k[4:]: v for k, v in own.items() if k in ("cam_resize", "cam_relu")},
            )
            run_cam(cam)
            # settings (the CRF's among them) chosen on held-out training images, reported on val
            result = evaluate_pseudo(args.output_dir, "validation", select_split=HOLDOUT, progress=progress)
            row, value = own.get("pseudo_row"), own.get("pseudo_value")  # reference: PCM, background 0.25
            export_pseudo(args.output_dir, row=row, value=value, progress=progress)
            print(markdown_table(result))
        if "deeplab" in stages:
            run_seg(
                {
                    "output_dir": args.output_dir,
                    "network": "deeplab",  # the paper's network on photos
                    "train_on_validation": False,  # val is the reported split on photos
                    "image_size": args.image_size,
                    "epochs": args.seg_epochs,
                    "backbone": args.seg_backbone,
                    "pretrained": args.seg_pretrained,
                    "width": args.seg_width or args.width or 0.25,
                    "device": device,
                    "progress": progress,
                    "overwrite": args.overwrite,
                }
            )
        if "evaluate" in stages:
            predict_voc(args.output_dir, "validation", device=device, progress=progress)
            print(miou_table(evaluate_voc(args.output_dir, "validation")))
    except USER_ERRORS as e:
        print(f"error: {describe(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
