"""From network maps to class activation scores and label maps (shared by validation and stage 2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from acdc_wsss.l2g.core import max_normalise

__all__ = ["cam_labels", "cam_scores"]


def cam_scores(maps: torch.Tensor, size: tuple[int, int], tags: torch.Tensor | None = None) -> torch.Tensor:
    """Foreground CAM scores in [0, 1] at the input size.

    Args:
        maps: ``(B, C+1, h, w)`` network maps (channel 0 background).
        size: output ``(H, W)``.
        tags: ``(B, C)`` multi-hot; classes absent from the tag get zero (None keeps all).

    Returns:
        ``(B, C, H, W)``: bilinear upsampling, ReLU, per-class max normalisation, untagged classes zeroed.
    """
    fg = F.interpolate(maps[:, 1:].float(), size=size, mode="bilinear", align_corners=False)
    fg = max_normalise(fg)
    if tags is not None:
        fg = fg * tags.to(fg.dtype)[..., None, None]
    return fg


def cam_labels(scores: torch.Tensor, background: float) -> torch.Tensor:
    """Label map ``(B, H, W)`` (0 background, ``k`` class ``k``): argmax of a constant background score
    and the class scores ``(B, C, H, W)``."""
    bg = torch.full_like(scores[:, :1], background)
    return torch.cat([bg, scores], dim=1).argmax(dim=1)
