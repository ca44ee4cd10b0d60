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

__all__ = ["BACKBONES", "CAMNet", "DilatedResNet", "WideResNet38", "build_backbone", "load_pretrained"]
