"""ED-ES label fusion: the ES frame's labels checked against its ED frame's, carried to ES by registration.

The rules find each structure more reliably at end-diastole (larger cavities, a thinner wall, a wider RV)
than at end-systole. Both frames are the same slices of one patient a few hundred milliseconds apart, so
the ED labels, carried onto the ES image by a deformable registration of the ED slice to the ES slice, are
a second estimate of the ES labels whose errors differ from the ES rules' own (:func:`carry_labels`).
:func:`fuse_es_labels`
averages the two estimates per pixel (the ES rules' one-hot labels a little smoothed, the carried ones soft
from the bilinear warp) and gives ties to the lower class, background first: where the two disagree
outright, a structure is kept only where both put it.

The registration (:func:`register_slice`) is SimpleITK's symmetric-forces demons on each slice pair, the
ED slice's histogram matched to the ES slice's first; it reads the images only, never a mask. A volume's
slice pairs are registered side by side, one SimpleITK thread each on every usable CPU core
(:func:`carry_probabilities`): the fields are the same as one pair at a time, only sooner.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from acdc_wsss.utils import usable_cores

__all__ = [
    "FusionRules",
    "carry_labels",
    "carry_probabilities",
    "fuse_es_labels",
    "register_slice",
    "warp_probabilities",
]


@dataclass(frozen=True)
class FusionRules:
    """Settings of :func:`fuse_es_labels` (chosen on the validation patients: ``bench/rules.py --sweep``;
    the registration's schedule with ``bench/rules.py --sweep --groups schedule``: a half-resolution pass,
    then the full resolution, 100 iterations each, is the cheapest within 0.001 of the best labels, 0.7
    times the time of 200 iterations at the full resolution alone).

    Attributes:
        iterations: demons iterations per slice pair at each level.
        field_sigma: Gaussian smoothing (pixels) of the displacement field at each iteration.
        label_sigma: Gaussian smoothing (pixels) of the ES rules' one-hot labels before the average.
        weight: the carried ED labels' share of the average (0.5: equal votes, ties to the lower class).
        margin_px: each slice pair is registered on the box around both frames' labels grown by this.
        levels: the shrink factors the registration runs at, coarse to fine, each level starting from the
            field of the one before it, upsampled (``(1,)``: the full resolution alone).
    """

    iterations: int = 100
    field_sigma: float = 1.5
    label_sigma: float = 0.5
    weight: float = 0.5
    margin_px: int = 48
    levels: tuple[int, ...] = (2, 1)

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.field_sigma <= 0 or self.label_sigma < 0 or self.margin_px < 0:
            raise ValueError(
                "FusionRules: iterations >= 1, field_sigma > 0, label_sigma >= 0, margin_px >= 0 required, "
                f"got {self}."
            )
        levels = tuple(int(v) for v in self.levels)
        if not levels or levels[-1] != 1 or any(a <= b for a, b in itertools.pairwise(levels)):
            raise ValueError(f"FusionRules.levels must fall strictly to 1 (e.g. (2, 1)), got {self.levels}.")
        object.__setattr__(self, "levels", levels)
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"FusionRules.weight must be in [0, 1], got {self.weight}.")


def register_slice(
    fixed: np.ndarray, moving: np.ndarray, rules: FusionRules | None = None, threads: int | None = None
) -> np.ndarray:
    """``(2, H, W)`` displacement (pixels; y then x) that carries ``moving`` onto ``fixed``: the pixel at
    ``p`` of the warped moving slice is the moving slice's pixel at ``p + d(p)``.

    Runs at each of ``rules.levels`` (shrink factors, coarse to fine; the field smoothed by
    ``rules.field_sigma`` pixels of that level), each level starting from the one before. ``threads``: the
    SimpleITK threads of each filter (None: SimpleITK's default); the field does not depend on it."""
    rules = rules or FusionRules()

    def threaded(flt: Any) -> Any:
        if threads is not None:
            flt.SetNumberOfThreads(threads)
        return flt

    f = sitk.GetImageFromArray(np.asarray(fixed, np.float32))
    matcher = threaded(sitk.HistogramMatchingImageFilter())
    matcher.SetNumberOfHistogramLevels(64)
    matcher.SetNumberOfMatchPoints(7)
    matcher.ThresholdAtMeanIntensityOn()
    m = matcher.Execute(sitk.GetImageFromArray(np.asarray(moving, np.float32)), f)
    demons = threaded(sitk.FastSymmetricForcesDemonsRegistrationFilter())
    demons.SetNumberOfIterations(rules.iterations)
    demons.SetStandardDeviations(rules.field_sigma)
    field: np.ndarray | None = None  # (h, w, 2) at the previous level: x then y, in its pixels
    for level in rules.levels:
        if level > 1:
            shrink = threaded(sitk.ShrinkImageFilter())
            shrink.SetShrinkFactors([level, level])
            fl, ml = shrink.Execute(f), shrink.Execute(m)
        else:
            fl, ml = f, m
        for im in (fl, ml):  # the field in this level's pixels
            im.SetSpacing((1.0, 1.0))
            im.SetOrigin((0.0, 0.0))
        if field is None:
            out = demons.Execute(fl, ml)
        else:
            h, w = fl.GetSize()[::-1]
            zoom = (h / field.shape[0], w / field.shape[1])  # ndi.zoom's output is then exactly (h, w)
            up = np.stack([ndi.zoom(field[..., k], zoom, order=1) * zoom[1 - k] for k in range(2)], axis=-1)
            out = demons.Execute(fl, ml, sitk.GetImageFromArray(up.astype(np.float64), isVector=True))
        field = sitk.GetArrayFromImage(out)
    assert field is not None
    return np.stack([field[..., 1], field[..., 0]]).astype(np.float32)


def registration_workers() -> int:
    """How many slice pairs :func:`carry_probabilities` registers at once: the CPU cores this process may
    use (SimpleITK releases Python's lock while it runs, so threads run side by side)."""
    return usable_cores()


def warp_probabilities(probs: np.ndarray, displacement: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` float32: class probabilities ``probs`` ``(C, H, W)`` (channel 0 background) carried by a
    :func:`register_slice` ``displacement`` (bilinear; outside the slice is background)."""
    h, w = probs.shape[1:]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    coords = np.stack([yy + displacement[0], xx + displacement[1]])
    warped = [
        ndi.map_coordinates(np.asarray(p, np.float32), coords, order=1, mode="constant", cval=float(c == 0))
        for c, p in enumerate(probs)
    ]
    return np.stack(warped)


def _smoothed_onehot(labels: np.ndarray, num_classes: int, sigma: float) -> np.ndarray:
    onehot = np.stack([(labels == c).astype(np.float32) for c in range(num_classes)])
    return ndi.gaussian_filter(onehot, (0, sigma, sigma)) if sigma else onehot


def _box(mask: np.ndarray, margin: int) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)``: the bounding box of ``mask`` grown by ``margin`` pixels, inside the slice."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    return (
        max(0, int(ys.min()) - margin),
        min(h, int(ys.max()) + margin + 1),
        max(0, int(xs.min()) - margin),
        min(w, int(xs.max()) + margin + 1),
    )


def carry_probabilities(
    probs: np.ndarray,
    source_image: np.ndarray,
    target_image: np.ndarray,
    rules: FusionRules | None = None,
    region: np.ndarray | None = None,
    fields: dict | None = None,
) -> np.ndarray:
    """``(C, H, W, S)`` float32: class probabilities ``probs`` ``(C, H, W, S)`` of ``source_image`` (channel
    0 background) carried onto ``target_image`` (same grid), slice by slice (:func:`register_slice`,
    bilinear).

    Each slice pair is registered on the box around the source's foreground (``probs[0] < 0.5``) and
    ``region`` (bool, where the carried values are needed), grown by ``rules.margin_px``; outside it the
    result is background. ``fields``, a dict, keeps each slice's displacement by slice, box and setting, so
    carrying other values whose boxes match registers nothing again.
    """
    rules = rules or FusionRules()
    if not probs.shape[1:] == source_image.shape == target_image.shape:
        raise ValueError(
            f"carrying labels needs one grid: labels {probs.shape[1:]}, source image {source_image.shape}, "
            f"target image {target_image.shape}."
        )
    out = np.zeros(probs.shape, np.float32)
    out[0] = 1.0
    fields = {} if fields is None else fields
    boxes = {}
    for z in range(probs.shape[-1]):
        where = probs[0, ..., z] < 0.5
        if region is not None:
            where = where | region[..., z]
        if where.any():
            boxes[z] = _box(where, rules.margin_px)
    keys = {z: (z, box, rules.iterations, rules.field_sigma, rules.levels) for z, box in boxes.items()}
    todo = [z for z in boxes if keys[z] not in fields]
    workers = min(registration_workers(), len(todo))

    def register(z: int) -> np.ndarray:
        y0, y1, x0, x1 = boxes[z]
        fixed, moving = target_image[y0:y1, x0:x1, z], source_image[y0:y1, x0:x1, z]
        return register_slice(fixed, moving, rules, threads=1 if workers > 1 else None)

    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            fields.update(zip((keys[z] for z in todo), pool.map(register, todo), strict=True))
    else:
        fields.update((keys[z], register(z)) for z in todo)
    for z, (y0, y1, x0, x1) in boxes.items():
        out[:, y0:y1, x0:x1, z] = warp_probabilities(probs[:, y0:y1, x0:x1, z], fields[keys[z]])
    return out


def carry_labels(
    labels: np.ndarray,
    source_image: np.ndarray,
    target_image: np.ndarray,
    rules: FusionRules | None = None,
    region: np.ndarray | None = None,
    num_classes: int = 4,
    fields: dict | None = None,
) -> np.ndarray:
    """``(C, H, W, S)`` float32 soft labels: ``(H, W, S)`` ``labels`` of ``source_image`` carried onto
    ``target_image``: :func:`carry_probabilities` of their one-hot (boundary pixels shared by classes)."""
    onehot = np.stack([(labels == c).astype(np.float32) for c in range(num_classes)])
    return carry_probabilities(onehot, source_image, target_image, rules, region, fields)


def fuse_es_labels(
    es_labels: np.ndarray,
    carried: np.ndarray,
    tags: np.ndarray | None = None,
    rules: FusionRules | None = None,
) -> np.ndarray:
    """``(H, W, S)`` uint8 ES labels fused with the ED labels carried onto the ES images.

    Args:
        es_labels: ``(H, W, S)`` the rules' ES labels (0 background, 1..C-1 classes).
        carried: ``(C, H, W, S)`` the same patient's ED labels carried onto the ES images
            (:func:`carry_labels`).
        tags: ``(S, C-1)`` the ES slices' tags: a class they say is absent stays background.
        rules: the settings (default :class:`FusionRules`).

    Slices the ES rules left empty stay empty (no cavity was found there, so there is nothing to check).
    """
    rules = rules or FusionRules()
    num_classes = carried.shape[0]
    if carried.shape[1:] != es_labels.shape:
        raise ValueError(f"ED-ES fusion: ES labels {es_labels.shape} and carried {carried.shape} differ.")
    out = np.zeros(es_labels.shape, np.uint8)
    tie_break = 1e-6 * np.arange(num_classes, dtype=np.float32)[:, None, None]
    for z in range(es_labels.shape[-1]):
        if not es_labels[..., z].any():
            continue
        own = _smoothed_onehot(es_labels[..., z], num_classes, rules.label_sigma)
        votes = (1.0 - rules.weight) * own + rules.weight * carried[..., z] - tie_break
        lab = votes.argmax(0).astype(np.uint8)
        if tags is not None:
            for c in range(tags.shape[1]):
                if tags[z, c] <= 0:
                    lab[lab == c + 1] = 0
        out[..., z] = lab
    return out
