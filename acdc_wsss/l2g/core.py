"""L2G building blocks: local views, roi_align, the attention-transfer target and the losses.

Boxes are ``(x1, y1, x2, y2)`` in input pixels, ``x`` along the last tensor axis (width) and ``y`` along the
one before it (height); a box covers pixels ``[x1, x2) x [y1, y2)``. The reference code reads ``(W, H)`` as
``(H, W)`` in its random crop; here height and width are named and tested separately.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from acdc_wsss.cam_maps import max_normalise

__all__ = [
    "attention_loss",
    "attention_target",
    "background_loss",
    "classification_loss",
    "crop_views",
    "max_normalise",
    "pooled_logits",
    "roi_align",
    "smooth_saliency",
    "view_boxes",
]


def view_boxes(
    height: int,
    width: int,
    ratio: float | Sequence[float],
    num_views: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Local view boxes of one image: the four corners, then ``num_views - 4`` random positions.

    Args:
        height, width: input size in pixels.
        ratio: view size as a fraction of the input, one number or ``(height ratio, width ratio)``.
        num_views: K >= 1 (fewer than 4 keeps the first corners).
        generator: random source of the extra views.

    Returns:
        ``(K, 4)`` float boxes ``(x1, y1, x2, y2)``, each inside the image.
    """
    rh, rw = (ratio, ratio) if isinstance(ratio, int | float) else tuple(ratio)
    if not (0 < rh <= 1 and 0 < rw <= 1) or num_views < 1:
        raise ValueError(f"view ratio must be in (0, 1] and num_views >= 1, got {ratio}, {num_views}.")
    vh, vw = max(1, round(height * rh)), max(1, round(width * rw))
    corners = [(0, 0), (width - vw, 0), (0, height - vh), (width - vw, height - vh)]
    boxes = [(x, y, x + vw, y + vh) for x, y in corners[:num_views]]
    for _ in range(num_views - len(boxes)):
        x = int(torch.randint(0, width - vw + 1, (1,), generator=generator))
        y = int(torch.randint(0, height - vh + 1, (1,), generator=generator))
        boxes.append((x, y, x + vw, y + vh))
    return torch.tensor(boxes, dtype=torch.float32)


def crop_views(images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Cut views out of a batch: ``images`` ``(B, C, H, W)``, ``boxes`` ``(B, K, 4)`` -> ``(B*K, C, h, w)``.

    All boxes must share one size (as :func:`view_boxes` makes them).
    """
    b = boxes.shape[0]
    sizes = {(int(x2 - x1), int(y2 - y1)) for x1, y1, x2, y2 in boxes.reshape(-1, 4).tolist()}
    if len(sizes) != 1:
        raise ValueError(f"views must share one size, got {sorted(sizes)}.")
    crops = [
        images[i, :, int(y1) : int(y2), int(x1) : int(x2)]
        for i in range(b)
        for x1, y1, x2, y2 in boxes[i].tolist()
    ]
    return torch.stack(crops)


def roi_align(
    features: torch.Tensor, boxes: torch.Tensor, output_size: tuple[int, int], stride: int
) -> torch.Tensor:
    """Bilinear RoI align (one sample per bin, at its centre; ``aligned=True`` convention).

    Args:
        features: ``(B, C, h, w)`` maps at ``stride`` pixels per cell.
        boxes: ``(B, K, 4)`` boxes in input pixels.
        output_size: ``(oh, ow)`` bins per box.
        stride: input pixels per feature cell.

    Returns:
        ``(B*K, C, oh, ow)``: the maps resampled over each box, in the box's own coordinates.
    """
    b, c, h, w = features.shape
    k = boxes.shape[1]
    oh, ow = output_size
    x1, y1, x2, y2 = (boxes[..., i].to(features.dtype) / stride for i in range(4))  # feature units, (B, K)
    gy = y1[..., None] + (torch.arange(oh, dtype=features.dtype, device=features.device) + 0.5) * (
        (y2 - y1)[..., None] / oh
    )
    gx = x1[..., None] + (torch.arange(ow, dtype=features.dtype, device=features.device) + 0.5) * (
        (x2 - x1)[..., None] / ow
    )
    # grid_sample with align_corners=False: -1 and 1 are the outer edges of the first and last cells
    ny = (gy / h * 2 - 1)[..., :, None].expand(b, k, oh, ow)
    nx = (gx / w * 2 - 1)[..., None, :].expand(b, k, oh, ow)
    grid = torch.stack([nx, ny], dim=-1).reshape(b, k * oh, ow, 2)
    out = F.grid_sample(features, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.reshape(b, c, k, oh, ow).transpose(1, 2).reshape(b * k, c, oh, ow)


def attention_target(
    local_maps: torch.Tensor, tags: torch.Tensor, saliency: torch.Tensor | None = None, threshold: float = 0.1
) -> torch.Tensor:
    """Attention-transfer target from local maps (no gradient).

    ReLU and per-channel max-normalise; zero the classes absent from the tag (background, channel 0, is
    always kept); keep only the per-pixel argmax channel; binarise (the pixel counts where that channel
    exceeds ``threshold``). With a saliency map ``S``, foreground targets are multiplied by ``S`` and the
    background target by ``1 - S``.

    Args:
        local_maps: ``(N, C+1, h, w)``.
        tags: ``(N, C)`` multi-hot.
        saliency: ``(N, 1, h, w)`` in [0, 1], or None.
        threshold: minimum normalised score of a target pixel.

    Returns:
        ``(N, C+1, h, w)`` float target.
    """
    with torch.no_grad():
        m = max_normalise(local_maps.detach().float())
        keep = torch.cat([torch.ones_like(tags[:, :1]), tags], dim=1).to(m.dtype)[..., None, None]
        m = m * keep
        value, index = m.max(dim=1, keepdim=True)
        target = torch.zeros_like(m).scatter_(1, index, 1.0) * (value > threshold)
        if saliency is not None:
            s = saliency.to(m.dtype)
            target = torch.cat([target[:, :1] * (1 - s), target[:, 1:] * s], dim=1)
    return target


def attention_loss(global_crops: torch.Tensor, target: torch.Tensor, weight: float = 10.0) -> torch.Tensor:
    """``weight * MSE(softmax(global crops over channels), target)``."""
    return weight * F.mse_loss(torch.softmax(global_crops, dim=1), target)


def classification_loss(logits: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
    """Multi-label soft margin loss of image-level logits ``(N, C)`` against multi-hot tags."""
    return F.multilabel_soft_margin_loss(logits, tags.to(logits.dtype))


def background_loss(
    maps: torch.Tensor, tags: torch.Tensor, saliency: torch.Tensor | None = None
) -> torch.Tensor:
    """Train the background channel (the reference never does): ``MSE(softmax(maps)[:, 0], target)``.

    The target is ``1 - S`` with a saliency map, else one minus the largest normalised score of the tagged
    classes (detached), so background is where no tagged class is.
    """
    with torch.no_grad():
        if saliency is not None:
            target = 1 - saliency[:, 0].to(maps.dtype)
        else:
            fg = max_normalise(maps[:, 1:].detach()) * tags.to(maps.dtype)[..., None, None]
            target = 1 - fg.amax(dim=1)
    return F.mse_loss(torch.softmax(maps, dim=1)[:, 0], target)


def smooth_saliency(saliency: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian-smooth ``(N, 1, H, W)`` saliency maps, keeping each map's peak value.

    The ED-ES motion map is high on the moving walls and low inside the blood pools (bright in both phases);
    smoothing by a few pixels fills the chambers, so the map covers the heart rather than its outline.
    """
    if sigma <= 0:
        return saliency
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=saliency.dtype, device=saliency.device)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    k = k / k.sum()
    s = F.conv2d(F.pad(saliency, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    s = F.conv2d(F.pad(s, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))
    peak = saliency.amax(dim=(2, 3), keepdim=True)
    return s * peak / s.amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)


def pooled_logits(
    cams: torch.Tensor, weight: torch.Tensor | None = None, floor: float = 0.05
) -> torch.Tensor:
    """Image-level logits from ``(N, C+1, h, w)`` CAMs: the mean of each foreground channel, or with
    ``weight`` ``(N, 1, H, W)`` (a saliency map, resized to the CAM) its weighted mean.

    Weighted pooling keeps the classification loss on the salient region (on ACDC, the moving heart), so the
    classifier cannot solve the tags from the image borders alone. ``floor`` keeps every pixel's weight
    positive, so slices with no salient region still pool everywhere.
    """
    fg = cams[:, 1:]
    if weight is None:
        return fg.mean(dim=(2, 3))
    w = F.adaptive_avg_pool2d(weight.to(fg.dtype), fg.shape[2:]).clamp_min(0) + floor
    return (fg * w).sum(dim=(2, 3)) / w.sum(dim=(2, 3))
