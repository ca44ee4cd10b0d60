"""MONAI transforms the ACDC preprocessing chain needs and MONAI lacks.

Each is an array transform plus its dictionary ``...d`` wrapper, MONAI style. Arrays are channel first,
``(C, H, W, S)`` with ``S`` the short-axis slice axis, which every transform here leaves untouched.

- :class:`ClipZScoreIntensity`: percentile clip then z-score per volume, in one pass (NumPy's partition-based
  percentile: about 10x faster than ``ClipIntensityPercentiles`` + ``NormalizeIntensity`` on ACDC volumes).
- :class:`MotionMap`: the ED-ES motion map, a label-free saliency map of the heart.
- :class:`HeartCentre`: the in-plane heart centre from a motion map.
- :class:`CropPadAroundCentre`: invertible in-plane crop/pad to a fixed size around a per-sample centre.
- :class:`SliceTags`: multi-hot slice-level tags from a label volume.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import Crop, InvertibleTransform, MapTransform, Pad, Transform
from monai.utils import convert_to_tensor
from scipy import ndimage as ndi

__all__ = [
    "ClipZScoreIntensity",
    "ClipZScoreIntensityd",
    "CropPadAroundCentre",
    "CropPadAroundCentred",
    "HeartCentre",
    "HeartCentred",
    "MotionMap",
    "MotionMapd",
    "SliceTags",
    "SliceTagsd",
]


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _like(out: np.ndarray, ref: Any) -> Any:
    """Return ``out`` as the type of ``ref``: a MetaTensor keeps ``ref``'s metadata."""
    if isinstance(ref, MetaTensor):
        t = MetaTensor(torch.as_tensor(out), meta=ref.meta, applied_operations=ref.applied_operations)
        return t
    if isinstance(ref, torch.Tensor):
        return torch.as_tensor(out, device=ref.device)
    return out


class ClipZScoreIntensity(Transform):
    """Clip intensities to the volume's ``[lower, upper]`` percentiles, then z-score the volume.

    Args:
        lower: lower percentile in [0, 100).
        upper: upper percentile in (lower, 100].
        eps: floor of the standard deviation (a constant volume maps to zeros).
    """

    def __init__(self, lower: float = 0.5, upper: float = 99.5, eps: float = 1e-6) -> None:
        if not 0 <= lower < upper <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {lower}, {upper}.")
        self.lower, self.upper, self.eps = lower, upper, eps

    def __call__(self, img: Any) -> Any:
        """Args: img: ``(C, ...)`` array or tensor. Returns: float32 of the same type and shape."""
        x = _numpy(img).astype(np.float32, copy=False)
        lo, hi = np.percentile(x, [self.lower, self.upper])
        x = np.clip(x, lo, hi)
        x = (x - x.mean()) / max(float(x.std()), self.eps)
        return _like(x.astype(np.float32, copy=False), img)


class ClipZScoreIntensityd(MapTransform):
    """Dictionary wrapper of :class:`ClipZScoreIntensity`."""

    def __init__(
        self, keys: KeysCollection, lower: float = 0.5, upper: float = 99.5, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.t = ClipZScoreIntensity(lower, upper)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.t(d[key])
        return d


class MotionMap(Transform):
    """ED-ES motion map: ``|a - b|`` smoothed in-plane per slice, scaled to [0, 1] by its volume maximum.

    The heart is what moves between end-diastole and end-systole, so the map is a free saliency map of the
    heart: no label is needed to find where it is. Both volumes must lie on one grid (standardised the same
    way).

    Args:
        sigma: in-plane Gaussian sigma in pixels.
    """

    def __init__(self, sigma: float = 2.0) -> None:
        self.sigma = sigma

    def __call__(self, img: Any, pair: Any) -> Any:
        """Args: img, pair: ``(1, H, W, S)``. Returns: ``(1, H, W, S)`` float32 in [0, 1], type of ``img``."""
        a, b = _numpy(img), _numpy(pair)
        if a.shape != b.shape:
            raise ValueError(f"motion map needs two volumes on one grid, got shapes {a.shape} and {b.shape}.")
        m = ndi.gaussian_filter(np.abs(a - b).astype(np.float32), (0, self.sigma, self.sigma, 0))
        m /= max(float(m.max()), 1e-6)
        return _like(m, img)


class MotionMapd(MapTransform):
    """Dictionary wrapper of :class:`MotionMap`: ``d[motion_key] = MotionMap(d[key], d[pair_key])``.

    Where ``pair_key`` is absent (a single frame), the map is all zeros.
    """

    def __init__(
        self, keys: KeysCollection, pair_key: str = "pair", motion_key: str = "motion", sigma: float = 2.0
    ) -> None:
        super().__init__(keys)
        self.pair_key, self.motion_key = pair_key, motion_key
        self.t = MotionMap(sigma)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            if d.get(self.pair_key) is not None:
                d[self.motion_key] = self.t(d[key], d[self.pair_key])
            else:
                d[self.motion_key] = _like(np.zeros(_numpy(d[key]).shape, np.float32), d[key])
        return d


class HeartCentre(Transform):
    """In-plane heart centre (voxel coordinates) from a motion map.

    The map is summed over slices and smoothed; the centre is the centroid of the region around the
    peak that stays above ``level`` times the peak. (On the 160 real ACDC volumes a 128 x 128 crop at
    1.5 mm around it keeps >= 99.4% of every heart; the plain peak keeps >= 98.5%, the image centre 74%.)

    Args:
        sigma: Gaussian sigma in pixels applied to the slice-summed map.
        level: fraction of the peak that bounds the central region.
    """

    def __init__(self, sigma: float = 8.0, level: float = 0.5) -> None:
        self.sigma, self.level = sigma, level

    def __call__(self, motion: Any) -> np.ndarray | None:
        """Args: motion: ``(1, H, W, S)``. Returns: ``(2,)`` float64 centre, or None for an all-zero map."""
        m = ndi.gaussian_filter(_numpy(motion)[0].sum(-1).astype(np.float64), self.sigma)
        if not np.isfinite(m).all() or m.max() <= 0:
            return None
        peak = np.unravel_index(int(np.argmax(m)), m.shape)
        regions, _ = ndi.label(m >= self.level * m.max())
        region = regions == regions[peak]
        return np.asarray(ndi.center_of_mass(m * region), dtype=np.float64)


class HeartCentred(MapTransform):
    """Dictionary wrapper of :class:`HeartCentre`: ``d[centre_key]`` from ``d[key]`` (the motion map).

    Leaves ``d[centre_key] = None`` (crop at the image centre) when the map is empty, e.g. a single frame.
    """

    def __init__(self, keys: KeysCollection, centre_key: str = "centre", sigma: float = 8.0) -> None:
        super().__init__(keys)
        self.centre_key = centre_key
        self.t = HeartCentre(sigma)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.centre_key] = self.t(d[key])
        return d


class CropPadAroundCentre(InvertibleTransform):
    """Crop and/or pad the two in-plane axes to ``roi_size`` around a centre; the slice axis is kept.

    The output window is ``[floor(c + 1 - size / 2), ... + size)`` on each in-plane axis (an even window puts
    ``c`` just past its middle; the image centre ``(n - 1) / 2`` of an even ``n`` maps exactly); the
    parts outside the image are padded with ``pad_value`` (default: the image minimum, so padding looks like
    air in a standardised image rather than a bright frame). Implemented as MONAI's :class:`Pad` then
    :class:`Crop`, so the affine follows and :meth:`inverse` (and ``Invertd``) restore the input grid exactly.

    Args:
        roi_size: output in-plane size ``(H, W)``.
        pad_value: constant for padded voxels; None means the image minimum.
    """

    def __init__(self, roi_size: Sequence[int] = (128, 128), pad_value: float | None = None) -> None:
        if len(roi_size) != 2 or min(roi_size) < 1:
            raise ValueError(f"roi_size must be two positive in-plane sizes, got {roi_size}.")
        self.roi_size = tuple(int(s) for s in roi_size)
        self.pad_value = pad_value
        self.padder = Pad(mode="constant")
        self.cropper = Crop()

    def window(self, shape: Sequence[int], centre: Sequence[float] | None) -> list[tuple[int, int]]:
        """Start and end of the window on each in-plane axis of a spatial ``shape`` (may exceed the image)."""
        if centre is None:
            centre = [(n - 1) / 2 for n in shape[:2]]
        starts = [math.floor(float(c) + 1 - s / 2) for c, s in zip(centre, self.roi_size, strict=True)]
        return [(st, st + s) for st, s in zip(starts, self.roi_size, strict=True)]

    def __call__(
        self, img: torch.Tensor, centre: Sequence[float] | None = None, pad_value: float | None = None
    ):
        """Args: img: ``(C, H, W, S)``; centre: in-plane voxel centre or None (image centre).

        Returns: ``(C, *roi_size, S)``, with the operations recorded for inversion.
        """
        img = convert_to_tensor(img, track_meta=True)
        shape = img.shape[1:]
        if len(shape) != 3:
            raise ValueError(f"expected a (C, H, W, S) volume, got shape {tuple(img.shape)}.")
        win = self.window(shape, centre)
        in_plane = [(max(0, -a), max(0, b - n)) for (a, b), n in zip(win, shape[:2], strict=True)]
        to_pad = [(0, 0), *in_plane, (0, 0)]
        value = pad_value if pad_value is not None else self.pad_value
        if value is None:
            value = float(img.min()) if img.numel() else 0.0
        img = self.padder(img, to_pad=to_pad, value=value)
        slices = (*(slice(a + p[0], b + p[0]) for (a, b), p in zip(win, in_plane, strict=True)), slice(None))
        return self.cropper(img, slices=slices)

    def inverse(self, data: torch.Tensor) -> torch.Tensor:
        """Undo :meth:`__call__`: back to the input's in-plane size and affine."""
        return self.padder.inverse(self.cropper.inverse(data))


class CropPadAroundCentred(MapTransform, InvertibleTransform):
    """Dictionary wrapper of :class:`CropPadAroundCentre`; the centre is read from ``d[centre_key]``.

    Args:
        keys: keys to crop/pad, all on one grid.
        centre_key: key of the ``(2,)`` in-plane centre; a missing key or None means the image centre.
        roi_size: output in-plane size.
        pad_value: per key constants (None: that image's minimum; use 0 for labels).
    """

    def __init__(
        self,
        keys: KeysCollection,
        centre_key: str | None = "centre",
        roi_size: Sequence[int] = (128, 128),
        pad_value: Sequence[float | None] | float | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.centre_key = centre_key
        self.pad_values = list(pad_value) if isinstance(pad_value, Sequence) else [pad_value] * len(self.keys)
        if len(self.pad_values) != len(self.keys):
            raise ValueError(f"pad_value needs one value per key ({len(self.keys)}), got {pad_value}.")
        self.t = CropPadAroundCentre(roi_size)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        centre = d.get(self.centre_key) if self.centre_key else None
        for key, value in self.key_iterator(d, self.pad_values):
            d[key] = self.t(d[key], centre=centre, pad_value=value)
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.t.inverse(d[key])
        return d


class SliceTags(Transform):
    """Multi-hot slice-level tags from a label volume: tag ``c`` is on where label ``c + 1`` occurs.

    Args:
        num_classes: number of foreground classes (labels ``1..num_classes``; 0 is background).
    """

    def __init__(self, num_classes: int) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
        self.num_classes = num_classes

    def __call__(self, label: Any) -> torch.Tensor:
        """Args: label: ``(1, H, W, S)``. Returns: ``(S, num_classes)`` float32 multi-hot tags."""
        lab = _numpy(label)[0]
        lab = lab.reshape(-1, lab.shape[-1])
        present = [(lab == c).any(axis=0) for c in range(1, self.num_classes + 1)]
        return torch.as_tensor(np.stack(present, axis=1).astype(np.float32))


class SliceTagsd(MapTransform):
    """Dictionary wrapper of :class:`SliceTags`: ``d[tags_key]`` from ``d[key]``; skipped without a label."""

    def __init__(self, keys: KeysCollection, num_classes: int, tags_key: str = "tags") -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.tags_key = tags_key
        self.t = SliceTags(num_classes)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.tags_key] = self.t(d[key])
        return d
