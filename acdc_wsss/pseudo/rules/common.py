"""What every anatomy rule reads: the heart centre from the ED-ES motion map, the disc around it where the
heart can be, and per slice the blood pools (bright blobs above an Otsu threshold) inside that disc."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_multiotsu

from acdc_wsss.data.transforms import HeartCentre

__all__ = [
    "LV",
    "MYO",
    "POOL_THRESHOLDS",
    "RV",
    "BloodPools",
    "SliceGrid",
    "blood_pools",
    "heart_centre",
    "heart_region",
    "otsu_threshold",
    "pool_threshold",
    "weighted_median",
]

#: Labels of the three structures (0 is background).
RV, MYO, LV = 1, 2, 3


def otsu_threshold(values: np.ndarray, bins: int = 128) -> float:
    """Otsu's threshold of a 1D sample: the cut maximising the between-class variance (the middle of the
    best cuts where an empty gap makes several equal)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0 or v.min() == v.max():
        return float(v.max()) if v.size else 0.0
    hist, edges = np.histogram(v, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = (w0 * w1 * (mu0 - mu1) ** 2)[:-1]
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))  # a plateau over an empty gap: its middle
    return float(edges[1:][best[len(best) // 2]])


#: How a slice's blood-pool threshold is set (:func:`pool_threshold`).
POOL_THRESHOLDS = ("otsu", "upper")


def pool_threshold(values: np.ndarray, kind: str = "otsu") -> float:
    """The cut above which a pixel of ``values`` (the search disc) is blood: ``otsu``, the two-class Otsu
    threshold; ``upper``, the upper cut of a three-class Otsu (dark lung and air / myocardium and other
    tissue / blood), for a slice where the two-class cut falls below the myocardium's brightness and the
    pools and the wall between them become one blob (the two-class cut where three classes cannot be
    told apart)."""
    if kind not in POOL_THRESHOLDS:
        raise ValueError(f"blood-pool threshold must be one of {POOL_THRESHOLDS}, not {kind!r}.")
    v = np.asarray(values, dtype=np.float64).ravel()
    if kind == "upper" and np.unique(v).size >= 3:
        return float(threshold_multiotsu(v, classes=3, nbins=128)[1])
    return otsu_threshold(v)


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """The value at half the total weight, ``values`` sorted."""
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, cum[-1] / 2)])


class SliceGrid:
    """Pixel coordinates of an ``(H, W)`` slice, for distances to a point."""

    def __init__(self, h: int, w: int) -> None:
        self.yy, self.xx = np.mgrid[:h, :w]

    def distance(self, y: float, x: float) -> np.ndarray:
        """``(H, W)`` distance in pixels of every pixel to ``(y, x)``."""
        return np.hypot(self.yy - y, self.xx - x)


def heart_centre(motion: np.ndarray) -> tuple[float, float]:
    """``(y, x)`` heart centre of the ED-ES motion map ``(H, W, S)``; the image centre when nothing moves."""
    h, w = motion.shape[:2]
    centre = HeartCentre()(motion[None])
    return centre if centre is not None else ((h - 1) / 2, (w - 1) / 2)


def heart_region(motion: np.ndarray, spacing: float = 1.5, disc_mm: float = 60.0) -> np.ndarray:
    """``(H, W)`` bool disc of radius ``disc_mm`` around the heart centre of the ED-ES motion map
    ``(H, W, S)`` (the image centre when nothing moves): where the heart can be."""
    return SliceGrid(*motion.shape[:2]).distance(*heart_centre(motion)) <= disc_mm / spacing


class BloodPools(NamedTuple):
    """The bright blobs of one slice inside the search disc, and the LV candidates among them."""

    image: np.ndarray  #: (H, W) standardised intensities
    threshold: float  #: the disc's blood threshold (:func:`pool_threshold`): brighter is blood
    blobs: np.ndarray  #: (H, W) int labels of the bright blobs (0 elsewhere)
    sizes: np.ndarray  #: pixels per blob label
    candidates: np.ndarray  #: (H, W) int labels of the LV candidates: the blobs, or their part in a region
    candidate_sizes: np.ndarray  #: pixels per candidate label


def blood_pools(
    image: np.ndarray, disc: np.ndarray, lv_within: np.ndarray | None = None, threshold: str = "otsu"
) -> BloodPools:
    """The blood pools of an ``(H, W)`` slice inside ``disc``, above its :func:`pool_threshold` of kind
    ``threshold``; with ``lv_within`` (``(H, W)`` bool), the LV candidates are the bright pixels inside it
    instead of the whole blobs."""
    thr = pool_threshold(image[disc], threshold)
    blobs, k = ndi.label(disc & (image > thr))
    sizes = np.bincount(blobs.ravel(), minlength=k + 1)
    if lv_within is None:
        return BloodPools(image, thr, blobs, sizes, blobs, sizes)
    cand, kc = ndi.label((blobs > 0) & lv_within)
    return BloodPools(image, thr, blobs, sizes, cand, np.bincount(cand.ravel(), minlength=kc + 1))
