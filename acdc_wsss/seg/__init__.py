"""Stage 3: segmentation network on the pseudo labels, volume inference to NIfTI, evaluation.

``config`` (:class:`SegConfig`), ``model`` (the network, loading a trained stage 3, batched prediction),
``data`` (training slices and targets, augmentation, validation), ``train`` (:func:`run_seg`), ``infer``
(:func:`predict`: volumes to NIfTI masks), ``components`` (the MONAI inferer, postprocessing and
handlers that inference and the bundle's ``inference.json`` share), ``evaluate`` (Dice and HD95).
"""

from __future__ import annotations

from acdc_wsss.nifti import write_colour_table
from acdc_wsss.seg.components import (
    AnatomyFusiond,
    PredictionRecord,
    RVDescentd,
    SliceCRFd,
    TerminalProgress,
    VolumeSliceInferer,
    WallRulesd,
    WriteMaskd,
    image_and_motion,
    inference_evaluator,
    inference_postprocessing,
    inference_preprocessing,
)
from acdc_wsss.seg.config import SegConfig
from acdc_wsss.seg.data import StageData
from acdc_wsss.seg.evaluate import evaluate_seg
from acdc_wsss.seg.infer import check_inference_output, inference_items, largest_components, predict
from acdc_wsss.seg.model import (
    SegEnsemble,
    SegLogits,
    SegNet,
    checkpoint_file,
    load_seg,
    network_def,
    predict_slices,
    recorded_on_validation,
    recorded_septal,
    seg_manifest,
    with_checkpoint,
)
from acdc_wsss.seg.train import run_seg

__all__ = [
    "AnatomyFusiond",
    "PredictionRecord",
    "RVDescentd",
    "SegConfig",
    "SegEnsemble",
    "SegLogits",
    "SegNet",
    "SliceCRFd",
    "StageData",
    "TerminalProgress",
    "VolumeSliceInferer",
    "WallRulesd",
    "WriteMaskd",
    "check_inference_output",
    "checkpoint_file",
    "evaluate_seg",
    "image_and_motion",
    "inference_evaluator",
    "inference_items",
    "inference_postprocessing",
    "inference_preprocessing",
    "largest_components",
    "load_seg",
    "network_def",
    "predict",
    "predict_slices",
    "recorded_on_validation",
    "recorded_septal",
    "run_seg",
    "seg_manifest",
    "with_checkpoint",
    "write_colour_table",
]
