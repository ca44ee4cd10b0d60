"""CAM classifier: stride-8 backbone, bias-free 1x1 head to C+1 channels, and the PCM branch.

Channel 0 of every map is the background, channel ``k`` (1..C) the class with label ``k``. Image-level
logits are the global average pool of the C foreground channels of the raw CAM (``pooled="pcm"``: of the
PCM output).

PCM (pixel correlation module, SEAM): features ``f = conv([image resized; conv(low); conv(mid)])`` (the
backbone features detached), L2-normalised per pixel; affinity ``A = ReLU(f_i . f_j)`` normalised over
``i``; revised CAM ``= CAM . A``; PCM output ``= CAM + revised CAM``.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from acdc_wsss.networks.backbones import build_backbone, load_pretrained

__all__ = ["PCM_FEATURES", "POOLED_MAPS", "CAMNet"]

#: Maps that can be pooled into the image-level logits.
POOLED_MAPS: tuple[str, ...] = ("cam", "pcm")
#: Backbone features the PCM can read.
PCM_FEATURES: tuple[str, ...] = ("raw", "activated")


class CAMNet(nn.Module):
    """CAM classifier with an optional PCM branch.

    Args:
        num_classes: foreground classes C (take it from the dataset).
        backbone: ``resnet18|34|50|101`` (MONAI, dilated) or ``resnet38`` (wide ResNet-38).
        in_channels: 1 (MRI) or 3 (RGB).
        width: width factor of the MONAI ResNet stages (ignored by ResNet-38).
        pcm: build the PCM branch.
        pretrained: optional local file of backbone weights, loaded strictly.
        pooled: the map whose foreground channels are averaged into the image-level logits: ``cam`` (the
            raw CAM) or ``pcm`` (the PCM output, as the reference L2G does).
        pcm_features: backbone features the PCM reads: ``raw`` (stage outputs) or ``activated`` (after the
            BN + ReLU of the next pre-activation block, as the reference; the same for MONAI ResNets).
    """

    #: Input pixels per CAM cell (every backbone runs at output stride 8).
    stride: int = 8

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet18",
        in_channels: int = 1,
        width: float = 0.5,
        pcm: bool = True,
        pretrained: str | os.PathLike | None = None,
        pooled: str = "cam",
        pcm_features: str = "raw",
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
        if pooled not in POOLED_MAPS or pcm_features not in PCM_FEATURES:
            raise ValueError(
                f"pooled must be one of {POOLED_MAPS} and pcm_features one of {PCM_FEATURES}, "
                f"got {pooled!r}, {pcm_features!r}."
            )
        self.pooled, self.pcm_features = pooled, pcm_features
        self.num_classes, self.in_channels = num_classes, in_channels
        self.backbone = build_backbone(backbone, in_channels, width)
        if pretrained:
            load_pretrained(self.backbone, pretrained)
        ch = self.backbone.channels
        self.classifier = nn.Conv2d(ch["high"], num_classes + 1, 1, bias=False)
        self.use_pcm = pcm
        if pcm:
            self.pcm_low = nn.Conv2d(ch["low"], 64, 1, bias=False)
            self.pcm_mid = nn.Conv2d(ch["mid"], 128, 1, bias=False)
            self.pcm_proj = nn.Conv2d(in_channels + 64 + 128, in_channels + 64 + 128, 1, bias=False)

    def new_parameters(self) -> list[nn.Parameter]:
        """Parameters not in the backbone (trained with a larger learning rate)."""
        backbone = {id(p) for p in self.backbone.parameters()}
        return [p for p in self.parameters() if id(p) not in backbone]

    def pcm(self, cam: torch.Tensor, image: torch.Tensor, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        """Revised CAM ``CAM . A``: ``(B, C+1, h, w)`` from the CAM, the input image and backbone features."""
        b, c, h, w = cam.shape
        f = torch.cat(
            [
                F.interpolate(image, (h, w), mode="bilinear", align_corners=False),
                self.pcm_low(feats["low_act" if self.pcm_features == "activated" else "low"].detach()),
                self.pcm_mid(feats["mid_act" if self.pcm_features == "activated" else "mid"].detach()),
            ],
            dim=1,
        )
        f = self.pcm_proj(f).flatten(2)  # (B, F, hw)
        f = f / (f.norm(dim=1, keepdim=True) + 1e-5)
        aff = f.transpose(1, 2) @ f  # (B, hw, hw)
        if torch.is_grad_enabled():
            aff = torch.relu(aff)
            aff = aff / (aff.sum(dim=1, keepdim=True) + 1e-5)
        else:  # the same values in place: no second (B, hw, hw) matrix at inference
            aff.relu_()
            aff.div_(aff.sum(dim=1, keepdim=True) + 1e-5)
        return (cam.flatten(2) @ aff).view(b, c, h, w)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Args: x: ``(B, in_channels, H, W)``.

        Returns:
            ``logits`` ``(B, C)``; ``cam`` ``(B, C+1, H/8, W/8)`` raw; ``pcm`` ``(B, C+1, H/8, W/8)``, the
            PCM output (``cam`` itself when the branch is off).
        """
        feats = self.backbone(x)
        cam = self.classifier(feats["high"])
        out = cam + self.pcm(cam, x, feats) if self.use_pcm else cam
        logits = (out if self.pooled == "pcm" else cam)[:, 1:].mean(dim=(2, 3))
        return {"logits": logits, "cam": cam, "pcm": out}
