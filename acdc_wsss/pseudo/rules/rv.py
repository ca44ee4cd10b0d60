"""The RV, two ways.

- Template (the ``priors`` yardstick, :func:`rv_region`): the largest other blood pool touching the outside
  of the myocardial ring (the septum), followed beyond the search disc, where a dilated RV reaches.
- From the scan (:func:`rv_blood`): the largest bright blob touching the heart is a seed that gives the
  septum's side (the volume's mean direction from the LV centre) and the RV blood's brightness; the RV is
  then grown through every pixel brighter than a cut between myocardium and RV blood, in a sector on the
  septal side, connected to the heart and bounded by its free wall: the whole crescent, including its
  darker, trabeculated parts that the blood-pool threshold misses.
- The side (:func:`seed_side`): the seeds are sought again within ``side_deg`` of the septal direction the
  run's training patients share (:func:`septal_prior`), or of the volume's own where none is shared. A
  volume whose largest pools beside the heart lie on the far side (an atrium, the stomach) then still
  finds its RV, and stray pools on single slices are dropped; a volume with no pool on that side at all
  keeps its own seeds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from acdc_wsss.pseudo.rules.common import BloodPools, SliceGrid

__all__ = [
    "RVRules",
    "circular_mean",
    "rv_blood",
    "rv_region",
    "rv_seed",
    "sector",
    "seed_side",
    "septal_direction",
    "septal_prior",
]


def rv_region(
    pools: BloodPools, lv: np.ndarray, ring: np.ndarray, min_px: float, reach: np.ndarray | None = None
) -> np.ndarray:
    """``(H, W)`` bool RV of a slice.

    Args:
        pools: the slice's blood pools.
        lv: ``(H, W)`` bool LV cavity; ``ring`` its myocardial ring.
        min_px: smallest blob (pixels) that counts.
        reach: ``(H, W)`` bool region the RV is followed into (the disc and beyond), or None to keep the
            blob inside the disc.
    """
    blobs, sizes = pools.blobs, pools.sizes
    outside = ndi.binary_dilation(ring, iterations=2) & ~ring & ~lv
    rv = np.zeros_like(lv)
    touching = [i for i in np.unique(blobs[outside & ~lv]) if i and (blobs == i)[~lv].sum() >= min_px]
    if touching:
        rv = (blobs == max(touching, key=lambda i: sizes[i])) & ~lv
        if reach is not None:
            wide, _ = ndi.label(reach & (pools.image > pools.threshold) & ~lv)
            ids = np.unique(wide[rv])
            rv = np.isin(wide, ids[ids > 0])
    return rv


@dataclass(frozen=True)
class RVRules:
    """Settings of :func:`rv_blood` (chosen on the validation patients: ``bench/rules.py --sweep``).

    Attributes:
        sector_deg: half-width of the sector around the septal direction the RV may lie in.
        beta: where the cut lies between the myocardium's (0) and the RV blood's (1) brightness.
        max_mm: farthest an RV pixel may lie from the LV centre.
        touch_px: how near the heart (LV and myocardium) a grown component must come.
        grow_px: the RV finally dilated this many pixels outside the heart: it closes the one-pixel gap
            kept from the septum while growing and takes the dark rim (trabeculae, partial volume) that
            the cut leaves out.
        side_deg: half-width of the sector around the septal direction that the seeds are sought in again
            (:func:`seed_side`); 180: anywhere, in one pass.
        min_agreement: how closely the training patients' directions must agree (the length of their
            mean unit vector, 0 to 1) for :func:`septal_prior` to give one.
    """

    sector_deg: float = 70.0
    beta: float = 0.3
    max_mm: float = 80.0
    touch_px: int = 3
    grow_px: int = 1
    side_deg: float = 60.0
    min_agreement: float = 0.5


def sector(
    shape: tuple[int, int], centre: tuple[float, float], direction: float, half_deg: float
) -> np.ndarray:
    """``(H, W)`` bool: the pixels seen from ``centre`` ``(y, x)`` within ``half_deg`` of ``direction``
    (radians, ``atan2(dy, dx)``)."""
    grid = SliceGrid(*shape)
    ang = np.angle(np.exp(1j * (np.arctan2(grid.yy - centre[0], grid.xx - centre[1]) - direction)))
    return np.abs(ang) <= np.deg2rad(half_deg)


def _largest_touching(region: np.ndarray, heart: np.ndarray, touch_px: int) -> np.ndarray:
    """``(H, W)`` bool: the largest connected component of ``region`` that comes within ``touch_px`` of the
    ``heart``; empty when none does."""
    comps, _ = ndi.label(region)
    ids = np.unique(comps[ndi.binary_dilation(heart, iterations=touch_px) & region])
    ids = ids[ids > 0]
    if not ids.size:
        return np.zeros_like(heart)
    sizes = np.bincount(comps.ravel())
    return comps == ids[np.argmax(sizes[ids])]


def rv_seed(
    pools: BloodPools, heart: np.ndarray, touch_px: int = 3, side: np.ndarray | None = None
) -> np.ndarray:
    """``(H, W)`` bool: the largest blood pool (outside the ``heart``: LV and myocardium, inside ``side``
    when given) that comes within ``touch_px`` of it; empty when none does."""
    region = (pools.blobs > 0) & ~heart
    return _largest_touching(region if side is None else region & side, heart, touch_px)


def septal_direction(seeds: list[tuple[np.ndarray, tuple[float, float]]]) -> float | None:
    """The angle (radians, ``atan2(dy, dx)``) from the LV centre towards the RV: the circular mean over the
    seeds' pixels of their direction from their slice's LV centre (``(seed mask, (y, x) centre)`` per
    slice); None without seed pixels."""
    sy = sx = 0.0
    for seed, (cy, cx) in seeds:
        ys, xs = np.nonzero(seed)
        ang = np.arctan2(ys - cy, xs - cx)
        sy, sx = sy + float(np.sin(ang).sum()), sx + float(np.cos(ang).sum())
    return None if sy == sx == 0.0 else float(np.arctan2(sy, sx))


def seed_side(own: float | None, shared: float | None, rules: RVRules) -> float | None:
    """The direction (radians) around which a volume's RV seeds are sought again: the ``shared`` one of the
    training patients when there is one, else the volume's ``own`` (from the largest pools beside the
    heart); None (seek anywhere) when ``rules.side_deg`` is 180 or more or neither is known."""
    if rules.side_deg >= 180.0:
        return None
    return shared if shared is not None else own


def circular_mean(directions: list[float]) -> complex:
    """The mean unit vector of ``directions`` (radians): its angle is their circular mean, its length (0 to
    1) how closely they agree; 0 for none."""
    return complex(np.mean(np.exp(1j * np.asarray(directions, np.float64)))) if directions else 0j


def septal_prior(directions: list[float], min_agreement: float = 0.5) -> float | None:
    """The septal direction (radians) that a population of volumes shares: the circular mean of their
    ``directions``; None when there are none or they agree less than ``min_agreement`` (the length of
    their mean unit vector: 1 when all are equal, near 0 when they point every way)."""
    if not directions:
        return None
    mean = circular_mean(directions)
    return float(np.angle(mean)) if abs(mean) >= min_agreement else None


def rv_blood(
    image: np.ndarray,
    heart: np.ndarray,
    centre: tuple[float, float],
    direction: float,
    cut: float,
    spacing: float,
    rules: RVRules,
) -> np.ndarray:
    """``(H, W)`` bool RV of one slice: the largest component of pixels brighter than ``cut``, within
    ``rules.sector_deg`` of ``direction`` seen from the LV ``centre`` and ``rules.max_mm`` of it, outside the
    ``heart`` (LV and myocardium) grown by one pixel, that comes within ``rules.touch_px`` of the heart;
    holes filled; then dilated ``rules.grow_px`` pixels outside the heart."""
    region = (
        (image > cut)
        & sector(image.shape, centre, direction, rules.sector_deg)
        & (SliceGrid(*image.shape).distance(*centre) * spacing <= rules.max_mm)
        & ~ndi.binary_dilation(heart)
    )
    rv = ndi.binary_fill_holes(_largest_touching(region, heart, rules.touch_px))
    if rules.grow_px > 0 and rv.any():
        rv = ndi.binary_dilation(rv, iterations=rules.grow_px) & ~heart
    return rv
