"""Networks: stride-8 backbones, the CAM classifier with PCM, and (stage 3) DeepLab-v2."""

from __future__ import annotations

from acdc_wsss.networks.backbones import (
    BACKBONES,
    DilatedResNet,
    WideResNet38,
    build_backbone,
    load_pretrained,
)
from acdc_wsss.networks.cam import CAMNet
from acdc_wsss.networks.deeplab import ASPP, DeepLabV2

__all__ = [
    "ASPP",
    "BACKBONES",
    "CAMNet",
    "DeepLabV2",
    "DilatedResNet",
    "WideResNet38",
    "build_backbone",
    "load_pretrained",
]
