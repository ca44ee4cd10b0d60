"""Rules on a predicted mask's anatomy, slice by slice or across a patient's two frames: what stage-3
inference applies after the argmax (:class:`~acdc_wsss.seg.components.WallRulesd`,
:class:`~acdc_wsss.seg.components.RVDescentd`) and ``bench/anatomy.py`` sweeps.

Labels are ``(H, W, S)`` arrays, 0 background, 1 RV, 2 myocardium, 3 LV.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import convex_hull_image

__all__ = [
    "BRIGHT_PHASES",
    "attached_rv",
    "base_first",
    "bright_endocardium",
    "convex_lv",
    "enclosed_lv",
    "rv_after_descent",
    "slice_rules",
    "thin_epicardium",
]

RV, MYO, LV = 1, 2, 3
#: The least share of the LV's outline that the myocardium must hold on the most basal LV slice for the LV
#: to be kept there (:func:`enclosed_lv`): the masks count a basal cavity as LV only where the wall
#: surrounds it.
LV_WALL_SHARE = 0.5
#: The phases whose bright endocardium :func:`slice_rules` turns LV: at ED the trabeculae hold blood, at ES
#: they close up (applied there too it lost on the cross-validated patients).
BRIGHT_PHASES = ("ED",)
_CROSS = ndi.generate_binary_structure(2, 1)


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
    es_labels: np.ndarray,
    ed_labels: np.ndarray,
    slice_mm: float,
    descent_mm: float,
    rv_prob: np.ndarray | None = None,
    confident: float | None = None,
) -> np.ndarray:
    """An ES frame's ``(H, W, S)`` labels with the RV turned to background on every slice basal to
    ``descent_mm`` below the ED frame's most basal RV slice (``round(descent_mm / slice_mm)`` slices from it,
    it included). The base's side is read from the ED labels (:func:`base_first`). With the ES frame's RV
    probabilities ``rv_prob`` ``(H, W, S)`` and ``confident``, a slice's RV is kept where its mean probability
    is at least ``confident`` times the mean probability of the frame's RV on the slices left uncut (1 where
    there is none): the network is as sure of it as of the rest of the ventricle, so the annulus has not
    moved that far. Unchanged when the ED labels hold no RV, their shape differs, or the descent rounds to
    no slice."""
    n = round(descent_mm / slice_mm) if slice_mm > 0 else 0
    rv_slices = np.flatnonzero((ed_labels == RV).any(axis=(0, 1)))
    if n <= 0 or rv_slices.size == 0 or ed_labels.shape != es_labels.shape:
        return es_labels
    out = np.array(es_labels, copy=True)
    depth = out.shape[-1]
    if base_first(ed_labels):
        cut = list(range(0, min(rv_slices[0] + n, depth)))
    else:
        cut = list(range(max(rv_slices[-1] - n + 1, 0), depth))
    level = None
    if confident is not None and rv_prob is not None:
        kept = out == RV
        kept[..., cut] = False
        level = confident * (float(rv_prob[kept].mean()) if kept.any() else 1.0)
    for z in cut:
        rv = out[..., z] == RV
        if rv.any() and (level is None or float(rv_prob[..., z][rv].mean()) < level):
            out[..., z][rv] = 0
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
    for z in range(out.shape[-1]):
        lab = out[..., z]
        for _ in range(px):
            lab[ndi.binary_dilation(lab == 0, _CROSS) & (lab == MYO)] = 0
    return out


def attached_rv(labels: np.ndarray) -> np.ndarray:
    """``labels`` with every piece of RV (4-connected, within its slice) that touches neither the myocardium
    nor the LV turned background: the RV's cavity lies against the septum, so a piece away from the left
    heart is another bright structure (fat, an atrium, a vessel)."""
    out = np.array(labels, copy=True)
    for z in range(out.shape[-1]):
        lab = out[..., z]
        pieces, n = ndi.label(lab == RV, _CROSS)
        if n == 0:
            continue
        left = ndi.binary_dilation((lab == MYO) | (lab == LV), _CROSS)
        touching = np.unique(pieces[left & (pieces > 0)])
        lab[(pieces > 0) & ~np.isin(pieces, touching)] = 0
    return out


def enclosed_lv(labels: np.ndarray, share: float = LV_WALL_SHARE) -> np.ndarray:
    """``labels`` with the LV of its most basal LV slice turned background where the myocardium holds less
    than ``share`` of the pixels round it (4-connected, outside it): the masks count a basal slice's cavity
    as LV only where the wall surrounds it, not the outflow tract the network carries it into. The base's
    side is read from the labels (:func:`base_first`). Only that slice is judged: elsewhere a missing wall
    is the network's failure, not an open cavity, and removing the LV there would double the loss."""
    out = np.array(labels, copy=True)
    slices = np.flatnonzero((out == LV).any(axis=(0, 1)))
    if slices.size == 0:
        return out
    lab = out[..., slices[0] if base_first(out) else slices[-1]]
    lv = lab == LV
    ring = ndi.binary_dilation(lv, _CROSS) & ~lv
    if ring.any() and (lab[ring] == MYO).mean() < share:
        lab[lv] = 0
    return out


def bright_endocardium(labels: np.ndarray, image: np.ndarray, share: float) -> np.ndarray:
    """``labels`` with, on each slice, the myocardium pixels next to the LV (4-connected) turned LV where the
    ``(H, W, S)`` image is brighter than the myocardium's median intensity plus ``share`` of the way to the
    LV's: once, a pixel deep. On ED frames the network draws the endocardium inside the trabeculae, whose
    bright blood between the muscle the masks count as cavity. Slices with under 10 pixels of either class
    are left alone."""
    out = np.array(labels, copy=True)
    for z in range(out.shape[-1]):
        lab, img = out[..., z], image[..., z]
        lv, myo = lab == LV, lab == MYO
        if lv.sum() < 10 or myo.sum() < 10:
            continue
        wall = float(np.median(img[myo]))
        level = wall + share * (float(np.median(img[lv])) - wall)
        lab[myo & ndi.binary_dilation(lv, _CROSS) & (img > level)] = LV
    return out


def slice_rules(
    labels: np.ndarray,
    lv_hull: bool,
    epi_px: int,
    rv_attached: bool,
    lv_enclosed: bool,
    lv_bright: float | None = None,
    image: np.ndarray | None = None,
    phase: str | None = None,
) -> np.ndarray:
    """The rules on each slice of ``(H, W, S)`` labels, in the order inference applies them: the LV made
    convex (:func:`convex_lv`, with ``lv_hull``), the epicardium pulled in by ``epi_px`` pixels
    (:func:`thin_epicardium`), the RV's detached pieces removed (:func:`attached_rv`, with
    ``rv_attached``), the basal LV removed where the wall does not surround it (:func:`enclosed_lv`, with
    ``lv_enclosed``), then, on a frame whose ``phase`` is in :data:`BRIGHT_PHASES` and whose ``image`` is
    given, the bright endocardium turned LV (:func:`bright_endocardium` with share ``lv_bright``; None:
    not). A new array; ``labels`` is not changed."""
    out = thin_epicardium(convex_lv(labels) if lv_hull else labels, epi_px)
    out = attached_rv(out) if rv_attached else out
    out = enclosed_lv(out) if lv_enclosed else out
    if lv_bright is None or image is None or phase not in BRIGHT_PHASES:
        return out
    return bright_endocardium(out, image, lv_bright)
