"""The myocardium: the non-bright ring around the LV cavity, at least a minimum thickness, grown towards a
maximum through pixels whose intensity matches the myocardium next to the cavity, so that it stops at fat,
lung and liver instead of a fixed width."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["myocardial_ring"]


def myocardial_ring(
    image: np.ndarray, lv: np.ndarray, bright: np.ndarray, ring_px: int, ring_min_px: int, myo_k: float
) -> np.ndarray:
    """``(H, W)`` bool ring around the ``lv`` cavity, outside the ``bright`` blood pools.

    Args:
        image: ``(H, W)`` standardised intensities.
        lv: ``(H, W)`` bool LV cavity.
        bright: ``(H, W)`` bool blood pools.
        ring_px: largest thickness (pixels); ``ring_min_px`` the smallest.
        myo_k: robust SDs around the median of a 2-pixel ring next to the cavity that the ring may grow
            through (``inf``: a fixed ``ring_px`` ring).
    """
    ring = ndi.binary_dilation(lv, iterations=ring_min_px) & ~lv & ~bright
    near = ndi.binary_dilation(lv, iterations=2) & ~lv & ~bright
    if ring_px > ring_min_px and near.sum() > 5 and np.isfinite(myo_k):
        m = np.median(image[near])
        s = 1.4826 * np.median(np.abs(image[near] - m)) + 1e-3
        like_myo = (np.abs(image - m) <= myo_k * s) & ~bright
        grown = ring
        for _ in range(ring_px - ring_min_px):
            grown = ndi.binary_dilation(grown | lv, mask=like_myo) & ~lv
        ring = ring | grown
    elif ring_px > ring_min_px:
        ring = ndi.binary_dilation(lv, iterations=ring_px) & ~lv & ~bright
    return ring
