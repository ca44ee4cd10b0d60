"""Rules on a predicted mask's anatomy, slice by slice or across a patient's two frames: what stage-3
inference applies after the argmax (:class:`~acdc_wsss.seg.components.WallRulesd`,
:class:`~acdc_wsss.seg.components.RVDescentd`) and ``bench/anatomy.py`` sweeps.

Labels are ``(H, W, S)`` arrays, 0 background, 1 RV, 2 myocardium, 3 LV.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import convex_hull_image

__all__ = ["base_first", "convex_lv", "rv_after_descent", "thin_epicardium"]

RV, MYO, LV = 1, 2, 3


def base_first(labels: np.ndarray) -> bool:
    """Whether slice 0 of ``(H, W, S)`` labels lies at the heart's base: the heart's cross-section, largest
    at the base and tapering to the apex, has its area-weighted mean slice on the base's side of the middle
    of the slices it covers (ties, and an empty volume: base first, as the ACDC stacks are ordered)."""
    area = (labels > 0).sum(axis=(0, 1)).astype(float)
    covered = np.flatnonzero(area)
    if covered.size == 0:
        return True
    mean = (area * np.arange(area.size)).sum() / area.sum()
    return bool(mean <= (covered[0] + covered[-1]) / 2)


def rv_after_descent(
    es_labels: np.ndarray, ed_labels: np.ndarray, slice_mm: float, descent_mm: float
) -> np.ndarray:
    """An ES frame's ``(H, W, S)`` labels with the RV turned to background on every slice basal to
    ``descent_mm`` below the ED frame's most basal RV slice (``round(descent_mm / slice_mm)`` slices from it,
    it included). The base's side is read from the ED labels (:func:`base_first`). Unchanged when the ED
    labels hold no RV, their shape differs, or the descent rounds to no slice."""
    n = round(descent_mm / slice_mm) if slice_mm > 0 else 0
    rv_slices = np.flatnonzero((ed_labels == RV).any(axis=(0, 1)))
    if n <= 0 or rv_slices.size == 0 or ed_labels.shape != es_labels.shape:
        return es_labels
    out = np.array(es_labels, copy=True)
    if base_first(ed_labels):
        above = out[..., : rv_slices[0] + n]
    else:
        above = out[..., max(rv_slices[-1] - n + 1, 0) :]
    above[above == RV] = 0
    return out


def convex_lv(labels: np.ndarray) -> np.ndarray:
    """``labels`` with every myocardium pixel inside its slice's LV convex hull turned LV. The masks draw the
    endocardium round the papillary muscles and trabeculae (the LV cavity is convex), where the network
    follows them into the cavity; the stage-2 labels' LV is convex by the same rule."""
    out = np.array(labels, copy=True)
    for z in range(out.shape[-1]):
        lv = out[..., z] == LV
        if lv.sum() >= 3:
            inside = convex_hull_image(lv)
            out[..., z][inside & (out[..., z] == MYO)] = LV
    return out


def thin_epicardium(labels: np.ndarray, px: int) -> np.ndarray:
    """``labels`` with the myocardium's outer ``px`` pixels turned background: each step, the myocardium
    pixels next to the background (4-connected, within the slice). The septum's side, against the RV, and
    the endocardium stay."""
    out = np.array(labels, copy=True)
    cross = ndi.generate_binary_structure(2, 1)
    for z in range(out.shape[-1]):
        lab = out[..., z]
        for _ in range(px):
            lab[ndi.binary_dilation(lab == 0, cross) & (lab == MYO)] = 0
    return out
