"""ACDC anatomy rules: pseudo labels from the image, the cine motion and (optionally) the CAMs.

Per volume, the heart centre comes from the ED-ES motion map; per slice, inside a disc around it, the
blood pools are the bright pixels (Otsu threshold) (:mod:`~acdc_wsss.pseudo.rules.common`). Then:

- **LV cavity** (:mod:`~acdc_wsss.pseudo.rules.lv`): the bright blob nearest the heart centre (holes
  filled: papillary muscles). With CAMs, a blob's distance is lowered by its mean LV score (``cam_weight``
  mm per unit score). With ``track``, a second pass picks, per slice, the blob nearest the LV axis: the
  size-weighted median centre of the first pass's blobs over all slices (the LV is a stack of discs on
  one axis in short-axis cine), so a stray apical or basal blob does not take over.
- **Myocardium** (:mod:`~acdc_wsss.pseudo.rules.myo`): the non-bright ring around the cavity, at least
  ``ring_min_mm`` thick and grown up to ``ring_mm`` through pixels whose intensity matches the myocardium
  next to the cavity (median +- ``myo_k`` robust SDs of a 2-pixel ring), so it stops at fat, lung and
  liver instead of a fixed width.
- **RV** (:mod:`~acdc_wsss.pseudo.rules.rv`): the largest other bright blob touching the ring's outside
  (the septum), followed up to ``rv_reach_mm`` beyond the disc, where a dilated RV reaches.
- Classes absent from a slice's tags are set to background.
- **ED-ES consistency** (:mod:`~acdc_wsss.pseudo.rules.consistency`): the ES cavity is sought inside the
  ED cavity of the same slice, grown a little (:func:`es_lv_region`, passed as ``lv_within``).

Without CAMs this is the label-free "priors only" yardstick of the stage-2 table (what anatomy and motion
give with no classifier at all); with them it is the "anatomy rules" refinement step.
"""

from __future__ import annotations

import numpy as np

from acdc_wsss.pseudo.rules.common import LV, MYO, RV, SliceGrid, blood_pools, heart_centre
from acdc_wsss.pseudo.rules.lv import choose_lv_blobs, lv_cavity
from acdc_wsss.pseudo.rules.myo import myocardial_ring
from acdc_wsss.pseudo.rules.rv import rv_region

__all__ = ["priors_labels", "slice_labels"]


def slice_labels(lv: np.ndarray, ring: np.ndarray, rv: np.ndarray, tags: np.ndarray | None) -> np.ndarray:
    """``(H, W)`` uint8 labels of one slice from its structures (the LV wins over the ring, both over the
    RV); a class its ``(3,)`` tags say is absent becomes background."""
    lab = np.zeros(lv.shape, np.uint8)
    lab[ring] = MYO
    lab[lv] = LV
    lab[rv & ~lv & ~ring] = RV
    if tags is not None:
        for c in range(3):
            if tags[c] <= 0:
                lab[lab == c + 1] = 0
    return lab


def priors_labels(
    image: np.ndarray,
    motion: np.ndarray,
    tags: np.ndarray | None = None,
    spacing: float = 1.5,
    scores: np.ndarray | None = None,
    *,
    disc_mm: float = 60.0,
    ring_mm: float = 13.0,
    ring_min_mm: float = 5.0,
    myo_k: float = 2.5,
    rv_reach_mm: float = 20.0,
    min_blob_mm2: float = 40.0,
    cam_weight: float = 15.0,
    track: bool = True,
    lv_within: np.ndarray | None = None,
) -> np.ndarray:
    """Pseudo labels of one volume from anatomy, motion and optionally CAMs (see the module docstring).

    Args:
        image: ``(H, W, S)`` standardised intensities (the chain's output).
        motion: ``(H, W, S)`` ED-ES motion map.
        tags: ``(S, 3)`` multi-hot (RV, Myo, LV) or None.
        spacing: in-plane pixel size in mm.
        scores: optional ``(3, H, W, S)`` CAM scores in [0, 1] (RV, Myo, LV) that help pick the LV blob.
        disc_mm: radius of the search disc around the heart centre.
        ring_mm: largest myocardial thickness; ``ring_min_mm`` the smallest.
        myo_k: robust SDs around the myocardium's intensity that the ring may grow through
            (``inf``: a fixed ``ring_mm`` ring).
        rv_reach_mm: how far beyond the disc the RV blob may extend.
        min_blob_mm2: smallest blood-pool blob considered.
        cam_weight: mm of distance one unit of mean LV score is worth.
        track: pick LV blobs along the volume's LV axis (second pass).
        lv_within: optional ``(H, W, S)`` bool region the LV cavity must lie in (ED-ES consistency: the
            ES cavity lies inside the ED cavity of the same slice).

    The defaults were chosen on the validation patients of the real-data run (the settings table is in
    ``bundles/l2g_acdc/docs/README.md``).

    Returns:
        ``(H, W, S)`` uint8 labels: 0 background, 1 RV, 2 Myo, 3 LV.
    """
    h, w, n = image.shape
    centre, grid = heart_centre(motion), SliceGrid(h, w)
    dist = grid.distance(*centre)
    disc = dist <= disc_mm / spacing
    reach = dist <= (disc_mm + rv_reach_mm) / spacing if rv_reach_mm > 0 else None
    ring_px = max(1, round(ring_mm / spacing))
    ring_min_px = min(ring_px, max(1, round(ring_min_mm / spacing)))
    min_px = min_blob_mm2 / spacing**2
    within = [None if lv_within is None else lv_within[..., z] for z in range(n)]
    pools = [blood_pools(image[..., z], disc, within[z]) for z in range(n)]
    choice = choose_lv_blobs(pools, grid, centre, min_px, scores, cam_weight / spacing, track)
    out = np.zeros((h, w, n), np.uint8)
    for z, best in enumerate(choice):
        if not best:
            continue
        lv = lv_cavity(pools[z], best)
        ring = myocardial_ring(pools[z].image, lv, pools[z].blobs > 0, ring_px, ring_min_px, myo_k)
        rv = rv_region(pools[z], lv, ring, min_px, reach)
        out[..., z] = slice_labels(lv, ring, rv, None if tags is None else tags[z])
    return out
