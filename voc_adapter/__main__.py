"""``python -m voc_adapter run --voc-root DIR --output_dir RUN --stages l2g,cam``: the bundles' stages on VOC.

Stages: ``l2g`` (stage 1 on the train list less a held-out part, validated on val), ``cam`` (CAMs of
train, the held-out part and val; the pseudo-label table with its settings chosen on the held-out part and
scored on val with mIoU over 21 classes and void ignored, pseudo labels exported as PNG), ``deeplab``
(stage 3 on the pseudo labels), ``evaluate`` (val images segmented to PNG; per-class IoU and mIoU, the
final table).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from acdc_wsss.errors import USER_ERRORS, describe
from acdc_wsss.utils import setup_cli_logging

STAGES = ("l2g", "cam", "deeplab", "evaluate")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m voc_adapter", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run stages on a VOC2012 folder")
    run.add_argument("--voc-root", required=True, help="VOC2012 folder (or the VOCdevkit above it)")
    run.add_argument("--output_dir", default="runs/voc", help="run folder (default runs/voc)")
    run.add_argument("--stages", default="l2g,cam,deeplab,evaluate", help="comma-separated stages")
    run.add_argument("--image_size", type=int, default=321, help="training crop (321)")
    run.add_argument("--epochs", type=int, default=5, help="stage-1 epochs (5)")
    run.add_argument("--seg_epochs", type=int, default=10, help="stage-3 epochs (10)")
    run.add_argument("--cam_scales", default="0.5,1.0,1.5,2.0", help="CAM inference scales")
    run.add_argument("--width", type=float, default=0.25, help="backbone width factor (0.25)")
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
            run_l2g(
                {
                    "dataset": "voc",
                    "dataset_dir": args.voc_root,
                    "output_dir": args.output_dir,
                    "image_size": args.image_size,
                    "epochs": args.epochs,
                    "width": args.width,
                    "saliency_key": "saliency",
                    "saliency_sigma": 0.0,
                    "saliency_pool": False,
                    "device": device,
                    "progress": progress,
                    "overwrite": args.overwrite,
                }
            )
        if "cam" in stages:
            scales = [float(x) for x in args.cam_scales.split(",")]
            splits = ["training", "validation", HOLDOUT]
            cam = CamConfig(
                output_dir=args.output_dir, scales=scales, device=device, progress=progress, splits=splits
            )
            run_cam(cam)
            # settings (the CRF's among them) chosen on held-out training images, reported on val
            result = evaluate_pseudo(args.output_dir, "validation", select_split=HOLDOUT, progress=progress)
            export_pseudo(args.output_dir, progress=progress)
            print(markdown_table(result))
        if "deeplab" in stages:
            run_seg(
                {
                    "output_dir": args.output_dir,
                    "network": "deeplab",  # the paper's network on photos
                    "image_size": args.image_size,
                    "epochs": args.seg_epochs,
                    "width": args.width,
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
