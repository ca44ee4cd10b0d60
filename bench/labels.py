"""The stage-2 pseudo labels of any split of a finished run, scored as the network is: how far the network
ends above (or below) the labels it learnt from, on patients it never saw.

    python bench/labels.py --run runs/acdc [--split testing] [--row scan_es]

The run's stage 1 makes CAMs of ``--split`` and stage 2 exports their labels (``--row``: the exported
default) into ``<run>-labels/<split>/`` (the run's datalist, cache and stage 1 linked, never written); the
labels use the split's slice tags, as the training patients' do. They are scored in 3D on the original grid
against the masks, as ``seg/evaluation_<split>.json`` scores the network, and the two are printed side
by side as one JSON line (``labels``, ``network``: mean Dice, per class, per phase, HD95;
``network_minus_labels``).
Reporting only: nothing is chosen on the split.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from stage3 import brief, variant_folder

from acdc_wsss.data.slices import volume_key
from acdc_wsss.layout import RunLayout
from acdc_wsss.pseudo import CamConfig, export_pseudo, run_cam
from acdc_wsss.seg import evaluate_seg


def split_labels(
    run_dir: str | os.PathLike, split: str = "testing", row: str | None = None
) -> dict[str, Any]:
    """Make and score the stage-2 labels of ``split`` beside the run (module docstring)."""
    run = Path(run_dir)
    src = RunLayout(run)
    folder = variant_folder(run, split, kind="labels", stage2=False)  # its own stage 2, the run's untouched
    run_cam(CamConfig(output_dir=str(folder), splits=[split], progress=False))
    export_pseudo(folder, row=row, splits=[split], progress=False)
    layout = RunLayout(folder)
    labels = evaluate_seg(
        folder, split, progress=False, masks=lambda it: layout.cam.pseudo_nifti(volume_key(it))
    )
    out: dict[str, Any] = {"run": str(run), "split": split, "row": row or "default", "labels": brief(labels)}
    network = src.seg.path / f"evaluation_{split}.json"
    if network.is_file():
        out["network"] = brief(json.loads(network.read_text(encoding="utf-8")))
        diff = out["network"]["mean"]["dice_mean"] - out["labels"]["mean"]["dice_mean"]
        out["network_minus_labels"] = round(diff, 4)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--run", required=True, help="a finished run folder (stages 1 and 2; stage 3 optional)"
    )
    parser.add_argument("--split", default="testing", help="the split whose labels are made and scored")
    parser.add_argument("--row", default=None, help="stage-2 row to export (default: the exported default)")
    args = parser.parse_args(argv)
    print(json.dumps(split_labels(args.run, args.split, args.row)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
