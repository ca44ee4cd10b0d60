"""DeepLab-v2 (Chen et al., 2017): a dilated ResNet at output stride 8 and ASPP, for stage 3.

ASPP is four parallel 3x3 convolutions on the backbone's last features, dilated 6, 12, 18 and 24, each
mapping straight to class scores; their outputs are summed (the v2 head, no image pooling, no decoder).
With ``multiscale`` the network also runs on the input scaled by 0.75 and 0.5; training takes a loss on
each of the three outputs and on their pixelwise maximum, inference the maximum (as in the paper).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from acdc_wsss.networks.backbones import build_backbone, load_pretrained

__all__ = ["ASPP", "DeepLabV2"]


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling of DeepLab-v2: the sum of dilated 3x3 convolutions to class scores."""

    def __init__(self, in_channels: int, num_classes: int, dilations: Sequence[int] = (6, 12, 18, 24)):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=d, dilation=d, bias=True) for d in dilations
        )
        for conv in self.branches:
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([b(x) for b in self.branches]).sum(dim=0)


class DeepLabV2(nn.Module):
    """DeepLab-v2 segmentation network.

    Args:
        num_classes: output channels including background (4 for ACDC, 21 for VOC).
        backbone: ``resnet18|34|50|101`` (MONAI, dilated) or ``resnet38``.
        in_channels: 1 (MRI) or 3 (RGB).
        width: width factor of the MONAI ResNet stages.
        dilations: ASPP dilations.
        multiscale: multi-scale input training and inference (scales 1, 0.75, 0.5 and their maximum).
        pretrained: optional local file of backbone weights, loaded strictly.
    """

    #: Input pixels per output cell.
    stride: int = 8

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet18",
        in_channels: int = 1,
        width: float = 0.5,
        dilations: Sequence[int] = (6, 12, 18, 24),
        multiscale: bool = False,
        pretrained: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}.")
        self.num_classes, self.in_channels, self.multiscale = num_classes, in_channels, multiscale
        self.backbone = build_backbone(backbone, in_channels, width)
        if pretrained:
            load_pretrained(self.backbone, pretrained)
        self.aspp = ASPP(self.backbone.channels["high"], num_classes, dilations)

    def new_parameters(self) -> list[nn.Parameter]:
        """The head's parameters (trained with a larger learning rate than the backbone)."""
        return list(self.aspp.parameters())

    def _single(self, x: torch.Tensor) -> torch.Tensor:
        return self.aspp(self.backbone(x)["high"])

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Args: x: ``(B, in_channels, H, W)``.

        Returns:
            ``logits`` ``(B, num_classes, H, W)`` (the stride-8 scores bilinearly upsampled; with
            ``multiscale``, the maximum over the scales), and with ``multiscale`` in training also
            ``scales``: the per-scale logits at the input size.
        """
        h, w = x.shape[2:]

        def up(t: torch.Tensor) -> torch.Tensor:
            return F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)

        if not self.multiscale:
            return {"logits": up(self._single(x))}
        outs = []
        for s in (1.0, 0.75, 0.5):
            xs = x if s == 1.0 else F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
            outs.append(up(self._single(xs)))
        result = {"logits": torch.stack(outs).max(dim=0).values}
        if self.training:
            result["scales"] = torch.stack(outs)
        return result
