"""Class activation maps from a CAM classifier's output: scores, label maps and multi-scale, flip-averaged
inference (stage-1 validation and stage 2 use them). The network itself is
:class:`acdc_wsss.networks.CAMNet`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from acdc_wsss.labels import argmax_labels

__all__ = ["CAM_SCALES", "cam_labels", "cam_scores", "max_normalise", "multiscale_cam"]


def max_normalise(maps: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """ReLU, then divide each ``(N, C, h, w)`` channel by its spatial maximum."""
    maps = torch.relu(maps)
    return maps / (maps.amax(dim=(2, 3), keepdim=True) + eps)


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
    return argmax_labels(torch.cat([bg, scores], dim=1))


#: Default inference scales of CAM inference (times a horizontal flip each).
CAM_SCALES: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)


@torch.no_grad()
def multiscale_cam(
    net: torch.nn.Module,
    images: torch.Tensor,
    tags: torch.Tensor | None = None,
    scales: tuple[float, ...] = CAM_SCALES,
    flip: bool = True,
    resize: str = "bilinear",
    relu: str = "each",
) -> dict[str, torch.Tensor]:
    """Multi-scale, flip-averaged CAMs of a batch, at the input size.

    For every scale (and its horizontal flip) the PCM output is computed, ReLU'd, upsampled to the input
    size and flipped back; the sum is max-normalised per class, and classes absent from the tag are zeroed.
    The learned background probability (softmax over the PCM maps, channel 0) is averaged the same way.
    ``raw_scores`` are the same from the plain CAM (before PCM revision), for the PCM row of the stage-2
    evaluation.

    Args:
        net: a :class:`~acdc_wsss.networks.CAMNet` (in eval mode).
        images: ``(B, C_in, H, W)``.
        tags: ``(B, C)`` multi-hot, or None to keep every class.
        scales: input scales.
        flip: add the horizontal flip of every scale.
        resize: how the maps are brought to the input size: ``bilinear`` or ``bicubic`` (the reference).
        relu: ``each`` (every pass's maps ReLU'd before the sum) or ``mean`` (the sum ReLU'd, as the
            reference).

    Returns:
        ``scores`` and ``raw_scores`` ``(B, C, H, W)`` in [0, 1], ``bg_prob`` ``(B, 1, H, W)`` in [0, 1].
    """
    if not scales:
        raise ValueError("multiscale_cam needs at least one scale.")
    if resize not in ("bilinear", "bicubic") or relu not in ("each", "mean"):
        raise ValueError(f"resize must be bilinear|bicubic and relu each|mean, got {resize!r}, {relu!r}.")
    h, w = images.shape[2:]
    total, raw, bg, n = None, None, None, 0
    for s in scales:
        size = (max(8, round(h * s)), max(8, round(w * s)))
        x = (
            F.interpolate(images, size=size, mode="bilinear", align_corners=False)
            if size != (h, w)
            else images
        )
        for flipped in (False, True) if flip else (False,):
            res = net(x.flip(-1) if flipped else x)
            both = torch.cat([res["pcm"], res["cam"]], dim=1).float()
            up = F.interpolate(both, size=(h, w), mode=resize, align_corners=False)
            if flipped:
                up = up.flip(-1)
            up, up_raw = up.chunk(2, dim=1)
            fg, fg_raw = (torch.relu(m[:, 1:]) if relu == "each" else m[:, 1:] for m in (up, up_raw))
            p_bg = torch.softmax(up, dim=1)[:, :1]
            total = fg if total is None else total + fg
            raw = fg_raw if raw is None else raw + fg_raw
            bg = p_bg if bg is None else bg + p_bg
            n += 1
    scores, raw_scores = max_normalise(total), max_normalise(raw)  # ReLU'd there: "mean" takes effect
    if tags is not None:
        scores = scores * tags.to(scores.dtype)[..., None, None]
        raw_scores = raw_scores * tags.to(scores.dtype)[..., None, None]
    return {"scores": scores, "raw_scores": raw_scores, "bg_prob": bg / n}
