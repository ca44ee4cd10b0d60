"""ACDC anatomy rules: pseudo labels from the image, the cine motion and (optionally) the CAMs.

Per volume, the heart centre comes from the ED-ES motion map. Per slice, inside a disc around it, the
blood pools are the bright pixels (Otsu threshold). Then:

- **LV cavity:** the bright blob nearest the heart centre (holes filled: papillary muscles). With CAMs,
  a blob's distance is lowered by its mean LV score (``cam_weight`` mm per unit score). With ``track``,
  a second pass picks, per slice, the blob nearest the LV axis: the size-weighted median centre of the
  first pass's blobs over all slices (the LV is a stack of discs on one axis in short-axis cine), so a
  stray apical or basal blob does not take over.
- **Myocardium:** the non-bright ring around the cavity, at least ``ring_min_mm`` thick and grown up to
  ``ring_mm`` through pixels whose intensity matches the myocardium next to the cavity (median +-
  ``myo_k`` robust SDs of a 2-pixel ring), so it stops at fat, lung and liver instead of a fixed width.
- **RV:** the largest other bright blob touching the ring's outside (the septum), followed up to
  ``rv_reach_mm`` beyond the disc, where a dilated RV reaches.
- Classes absent from a slice's tags are set to background.
- **ED-ES consistency:** the ES cavity is sought inside the ED cavity of the same slice, grown a little
  (:func:`es_lv_region`, passed as ``lv_within``).

Without CAMs this is the label-free "priors only" yardstick (DESIGN section 2); with them it is the
"anatomy rules" refinement step. :func:`uncertain_to_ignore` turns labels into training targets.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from acdc_wsss.data.transforms import HeartCentre
from acdc_wsss.labels import IGNORE

__all__ = [
    "IGNORE",
    "es_lv_region",
    "heart_region",
    "otsu_threshold",
    "priors_labels",
    "uncertain_to_ignore",
]


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


def heart_region(motion: np.ndarray, spacing: float = 1.5, disc_mm: float = 60.0) -> np.ndarray:
    """``(H, W)`` bool disc of radius ``disc_mm`` around the heart centre of the ED-ES motion map
    ``(H, W, S)`` (the image centre when nothing moves): where the heart can be."""
    h, w = motion.shape[:2]
    centre = HeartCentre()(motion[None])
    cy, cx = centre if centre is not None else ((h - 1) / 2, (w - 1) / 2)
    yy, xx = np.mgrid[:h, :w]
    return np.hypot(yy - cy, xx - cx) <= disc_mm / spacing


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, cum[-1] / 2)])


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
    """Pseudo labels of one volume from anatomy, motion and optionally CAMs.

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
    centre = HeartCentre()(motion[None])
    cy, cx = centre if centre is not None else ((h - 1) / 2, (w - 1) / 2)
    yy, xx = np.mgrid[:h, :w]
    dist = np.hypot(yy - cy, xx - cx)
    disc = dist <= disc_mm / spacing
    reach = dist <= (disc_mm + rv_reach_mm) / spacing
    ring_px = max(1, round(ring_mm / spacing))
    ring_min_px = min(ring_px, max(1, round(ring_min_mm / spacing)))
    min_px = min_blob_mm2 / spacing**2

    slices = []
    for z in range(n):
        sl = image[..., z]
        thr = otsu_threshold(sl[disc])
        comps, k = ndi.label(disc & (sl > thr))
        sizes = np.bincount(comps.ravel(), minlength=k + 1)
        if lv_within is not None:  # LV candidates: the bright pixels inside the allowed region
            cand, kc = ndi.label((comps > 0) & lv_within[..., z])
            slices.append((sl, thr, comps, sizes, cand, np.bincount(cand.ravel(), minlength=kc + 1)))
        else:
            slices.append((sl, thr, comps, sizes, comps, sizes))

    def pick(z: int, py: float, px: float) -> int:
        _, _, _, _, comps, sizes = slices[z]
        d_here = np.hypot(yy - py, xx - px)
        best, best_d = 0, np.inf
        for i in np.flatnonzero(sizes >= min_px):
            if i == 0:
                continue
            inside = comps == i
            d = float(d_here[inside].min())
            if scores is not None and cam_weight:
                d -= cam_weight / spacing * float(scores[2, ..., z][inside].mean())
            if d < best_d:
                best, best_d = int(i), d
        return best

    choice = [pick(z, cy, cx) for z in range(n)]
    if track and sum(c > 0 for c in choice) >= 2:
        pts = []
        for z, c in enumerate(choice):
            if c:
                ys, xs = np.nonzero(slices[z][4] == c)
                pts.append((ys.mean(), xs.mean(), ys.size))
        ys, xs, ws = (np.array(a, dtype=np.float64) for a in zip(*pts, strict=True))
        ly, lx = _weighted_median(ys, ws), _weighted_median(xs, ws)
        choice = [pick(z, ly, lx) for z in range(n)]

    out = np.zeros((h, w, n), np.uint8)
    for z, best in enumerate(choice):
        if not best:
            continue
        sl, thr, comps, sizes, cand, _ = slices[z]
        bright = comps > 0
        lv = ndi.binary_fill_holes(cand == best)
        ring = ndi.binary_dilation(lv, iterations=ring_min_px) & ~lv & ~bright
        near = ndi.binary_dilation(lv, iterations=2) & ~lv & ~bright
        if ring_px > ring_min_px and near.sum() > 5 and np.isfinite(myo_k):
            m = np.median(sl[near])
            s = 1.4826 * np.median(np.abs(sl[near] - m)) + 1e-3
            like_myo = (np.abs(sl - m) <= myo_k * s) & ~bright
            grown = ring
            for _ in range(ring_px - ring_min_px):
                grown = ndi.binary_dilation(grown | lv, mask=like_myo) & ~lv
            ring = ring | grown
        elif ring_px > ring_min_px:
            ring = ndi.binary_dilation(lv, iterations=ring_px) & ~lv & ~bright
        outside = ndi.binary_dilation(ring, iterations=2) & ~ring & ~lv
        rv = np.zeros_like(lv)
        touching = [i for i in np.unique(comps[outside & ~lv]) if i and (comps == i)[~lv].sum() >= min_px]
        if touching:
            rv = (comps == max(touching, key=lambda i: sizes[i])) & ~lv
            if rv_reach_mm > 0:
                wide, _ = ndi.label(reach & (sl > thr) & ~lv)
                ids = np.unique(wide[rv])
                rv = np.isin(wide, ids[ids > 0])
        lab = np.zeros((h, w), np.uint8)
        lab[ring] = 2
        lab[lv] = 3
        lab[rv & ~lv & ~ring] = 1
        if tags is not None:
            for c in range(3):
                if tags[z, c] <= 0:
                    lab[lab == c + 1] = 0
        out[..., z] = lab
    return out


def es_lv_region(ed_labels: np.ndarray, margin_px: int = 3) -> np.ndarray:
    """Where the ES LV cavity may lie, from the ED labels of the same patient on the same grid: the ED
    cavity grown by ``margin_px`` in-plane (the cavity shrinks from ED to ES; the chain crops both frames
    around one motion centre, so their pixels match). Pass it as ``lv_within`` for the ES frame."""
    structure = np.ones((3, 3, 1), bool)
    cavity = ed_labels == 3
    return ndi.binary_dilation(cavity, structure, iterations=margin_px) if margin_px else cavity


def uncertain_to_ignore(labels: np.ndarray, tags: np.ndarray | None = None, band: int = 1) -> np.ndarray:
    """Training targets from pseudo labels: ``band`` pixels on both sides of every class boundary become
    :data:`IGNORE` (boundaries are where the rules are least sure), and so does every slice missing a
    class its tags say is present (the rules failed there; background would teach the wrong thing).

    Args:
        labels: ``(H, W, S)`` labels 0..C.
        tags: ``(S, C)`` multi-hot, or None.
        band: pixels each side of a boundary; 0 keeps boundaries.
    """
    out = np.array(labels, dtype=np.uint8, copy=True)
    structure = ndi.generate_binary_structure(2, 1)
    for z in range(out.shape[-1]):
        lab = labels[..., z]
        if tags is not None and any(
            tags[z, c] > 0 and not (lab == c + 1).any() for c in range(tags.shape[1])
        ):
            out[..., z] = IGNORE
            continue
        if band:
            edge = np.zeros(lab.shape, bool)
            for c in np.unique(lab):
                mask = lab == c
                edge |= ndi.binary_dilation(mask, structure, band) & ndi.binary_dilation(
                    ~mask, structure, band
                )
            out[..., z][edge] = IGNORE
    return out
