"""Stage 3: segmentation network on the pseudo labels, volume inference to NIfTI, evaluation.

``config`` (:class:`SegConfig`), ``model`` (the network, loading a trained stage 3, batched prediction),
``data`` (training slices and targets, augmentation, validation), ``train`` (:func:`run_seg`), ``infer``
(:func:`predict`: volumes to NIfTI masks), ``evaluate`` (Dice and HD95).
"""

from __future__ import annotations

from acdc_wsss.nifti import write_colour_table
from acdc_wsss.seg.config import SegConfig
from acdc_wsss.seg.data import StageData
from acdc_wsss.seg.evaluate import evaluate_seg
from acdc_wsss.seg.infer import largest_components, predict
from acdc_wsss.seg.model import SegNet, load_seg, predict_slices
from acdc_wsss.seg.train import run_seg

__all__ = [
    "SegConfig",
    "SegNet",
    "StageData",
    "evaluate_seg",
    "largest_components",
    "load_seg",
    "predict",
    "predict_slices",
    "run_seg",
    "write_colour_table",
]
