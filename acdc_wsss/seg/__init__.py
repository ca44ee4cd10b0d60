"""Stage 3: segmentation network on the pseudo labels, volume inference to NIfTI, evaluation."""

from __future__ import annotations

from acdc_wsss.nifti import write_colour_table
from acdc_wsss.seg.infer import evaluate_seg, largest_components, predict
from acdc_wsss.seg.train import SegConfig, SegNet, load_seg, predict_slices, run_seg

__all__ = [
    "SegConfig",
    "SegNet",
    "evaluate_seg",
    "largest_components",
    "load_seg",
    "predict",
    "predict_slices",
    "run_seg",
    "write_colour_table",
]
