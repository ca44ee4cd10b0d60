"""The RV: the largest other blood pool touching the outside of the myocardial ring (the septum), followed
beyond the search disc, where a dilated RV reaches."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from acdc_wsss.pseudo.rules.common import BloodPools

__all__ = ["rv_region"]


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
