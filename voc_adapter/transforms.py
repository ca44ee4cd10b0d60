"""RGB transforms for VOC: loading, short-side resize, ImageNet normalisation, training augmentation.

Dictionary transforms on ``image`` ``(3, H, W)`` float32 in [0, 1] and ``label`` ``(1, H, W)`` class
indices (255 void). Training: random scale (0.5-1.5 by default), pad (image 0, label 255) and random crop,
horizontal flip, colour jitter, ImageNet normalisation. Evaluation and CAM inference: the whole image,
short side resized, normalised.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import (
    CenterSpatialCropd,
    Compose,
    MapTransform,
    NormalizeIntensityd,
    RandAdjustContrastd,
    RandFlipd,
    Randomizable,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSpatialCropd,
    RandZoomd,
    SpatialPadd,
)
from PIL import Image

from voc_adapter.data import IGNORE, read_mask

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LoadVOCd",
    "RandHueSaturationd",
    "ShortSideResized",
    "load_rgb",
    "voc_eval_transforms",
    "voc_train_transforms",
    "voc_val_transforms",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """An image file as ``(3, H, W)`` float32 in [0, 1] (gray and palette images converted to RGB)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0


class LoadVOCd(MapTransform):
    """Replace the ``image`` path by ``(3, H, W)`` RGB in [0, 1], the ``label`` path (if any) by
    ``(1, H, W)`` float32 class indices (palette indices; 255 void) and the ``saliency`` path (if any) by
    ``(1, H, W)`` in [0, 1]."""

    def __init__(self, keys: tuple[str, ...] = ("image", "label", "saliency")) -> None:
        super().__init__(keys, allow_missing_keys=True)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        d["image"] = torch.as_tensor(load_rgb(d["image"]))
        if d.get("label") is not None and isinstance(d["label"], str | os.PathLike):
            d["label"] = torch.as_tensor(read_mask(d["label"])[None].astype(np.float32))
        if d.get("saliency") is not None and isinstance(d["saliency"], str | os.PathLike):
            with Image.open(d["saliency"]) as im:
                d["saliency"] = torch.as_tensor(np.asarray(im.convert("L"), np.float32)[None] / 255.0)
        return d


class ShortSideResized(MapTransform):
    """Resize so that the shorter side is ``size`` (image bilinear, label nearest)."""

    def __init__(self, size: int, keys: tuple[str, ...] = ("image", "label", "saliency")) -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.size = size

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        h, w = d["image"].shape[1:]
        scale = self.size / min(h, w)
        out = (max(1, round(h * scale)), max(1, round(w * scale)))
        for key in self.key_iterator(d):
            x = torch.as_tensor(d[key])[None].float()
            mode = "nearest" if key == "label" else "bilinear"
            kw = {} if mode == "nearest" else {"align_corners": False}
            d[key] = F.interpolate(x, size=out, mode=mode, **kw)[0]
        return d


class RandHueSaturationd(MapTransform, Randomizable):
    """Random hue shift (``hue``: fraction of the colour circle, either way) and saturation scaling
    (``1 +- saturation``) of an RGB ``image`` ``(3, H, W)`` in [0, 1], each with probability ``prob``."""

    def __init__(
        self, keys: Any = "image", hue: float = 0.1, saturation: float = 0.3, prob: float = 0.5
    ) -> None:
        MapTransform.__init__(self, keys)
        self.hue, self.saturation, self.prob = hue, saturation, prob

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        shift = self.R.uniform(-self.hue, self.hue) if self.R.rand() < self.prob else 0.0
        scale = self.R.uniform(1 - self.saturation, 1 + self.saturation) if self.R.rand() < self.prob else 1.0
        if shift == 0.0 and scale == 1.0:
            return d
        from skimage.color import hsv2rgb, rgb2hsv

        for key in self.key_iterator(d):
            img = torch.as_tensor(d[key])
            hsv = rgb2hsv(img.permute(1, 2, 0).clamp(0, 1).numpy())
            hsv[..., 0] = (hsv[..., 0] + shift) % 1.0
            hsv[..., 1] = np.clip(hsv[..., 1] * scale, 0, 1)
            d[key] = torch.as_tensor(hsv2rgb(hsv).astype(np.float32)).permute(2, 0, 1)
        return d


def _normalise() -> NormalizeIntensityd:
    return NormalizeIntensityd(
        "image",
        subtrahend=np.array(IMAGENET_MEAN, np.float32),
        divisor=np.array(IMAGENET_STD, np.float32),
        channel_wise=True,
    )


def voc_train_transforms(
    crop: int = 321,
    scale: tuple[float, float] = (0.5, 1.5),
    flip: bool = True,
    jitter: float = 0.3,
    short_side: int | None = None,
    hue_saturation: bool = False,
) -> Compose:
    """Training chain: load, optional short-side resize, random scale, pad (label 255), random crop,
    flip, colour jitter (contrast, brightness; with ``hue_saturation`` also hue and saturation, as the
    reference L2G), ImageNet normalisation."""
    steps: list[Any] = [LoadVOCd()]
    if short_side:
        steps.append(ShortSideResized(short_side))
    keys = ["image", "label", "saliency"]  # the saliency map (where there is one) moves with the image
    steps += [
        RandZoomd(
            keys,
            prob=1.0,
            min_zoom=scale[0],
            max_zoom=scale[1],
            mode=("bilinear", "nearest", "bilinear"),
            keep_size=False,
            allow_missing_keys=True,
        ),
        SpatialPadd(
            ["image", "saliency"], spatial_size=(crop, crop), mode="constant", allow_missing_keys=True
        ),
        SpatialPadd("label", spatial_size=(crop, crop), mode="constant", constant_values=IGNORE),
        RandSpatialCropd(keys, roi_size=(crop, crop), random_size=False, allow_missing_keys=True),
    ]
    if flip:
        steps.append(RandFlipd(keys, prob=0.5, spatial_axis=1, allow_missing_keys=True))
    if jitter > 0:
        steps += [
            RandAdjustContrastd("image", prob=0.5, gamma=(1 - jitter, 1 + jitter)),
            RandScaleIntensityd("image", factors=jitter, prob=0.5),
            RandShiftIntensityd("image", offsets=jitter / 3, prob=0.5),
        ]
    if hue_saturation:
        steps.append(RandHueSaturationd("image"))
    steps.append(_normalise())
    return Compose(steps)


def voc_val_transforms(size: int = 321) -> Compose:
    """Fixed-size validation crops (so they batch): short side resized to ``size``, centre crop, pad
    (label 255), normalised."""
    return Compose(
        [
            LoadVOCd(),
            ShortSideResized(size),
            CenterSpatialCropd(
                ["image", "label", "saliency"], roi_size=(size, size), allow_missing_keys=True
            ),
            SpatialPadd(
                ["image", "saliency"], spatial_size=(size, size), mode="constant", allow_missing_keys=True
            ),
            SpatialPadd("label", spatial_size=(size, size), mode="constant", constant_values=IGNORE),
            _normalise(),
        ]
    )


def voc_eval_transforms(short_side: int | None = None) -> Compose:
    """Evaluation and CAM inference: the whole image (short side resized if given), normalised."""
    steps: list[Any] = [LoadVOCd()]
    if short_side:
        steps.append(ShortSideResized(short_side))
    steps.append(_normalise())
    return Compose(steps)
