"""Pseudo labels that follow each scan (:func:`scan_labels`), and their per-pixel confidence.

Per volume, on the image smoothed in-plane a little:

1. **LV** (:func:`~acdc_wsss.pseudo.rules.lv.lv_chain`): the bright blobs of all slices linked into chains
   from slice to slice; the roundest, longest chain nearest the motion centre is the LV (optionally helped
   by the L2G CAM's LV score); the cavity is each blob's convex hull (papillary muscles inside count as
   LV). An ES frame seeks its cavity inside its ED frame's, grown a little.
2. **Myocardium** (:func:`~acdc_wsss.pseudo.rules.myo.epicardium`): the epicardium on rays out of the
   cavity, by dynamic programming on myocardium-like intensity and edges, with the volume's own wall
   thickness.
3. **RV** (:func:`~acdc_wsss.pseudo.rules.rv.rv_blood`): grown through blood brighter than a cut between
   the myocardium's and the RV seed's brightness, on the septal side, bounded by the free wall. The seeds
   are sought again within a sector around the direction the training patients share (``septal``, from
   :func:`scan_septal_direction` of each and :func:`~acdc_wsss.pseudo.rules.rv.septal_prior`), or around
   the direction the first seeds gave where none is shared (:func:`~acdc_wsss.pseudo.rules.rv.seed_side`).
4. Classes absent from a slice's tags become background (the tags are what weak supervision gives).
5. **ES from ED** (``es_step="fused"``, applied by :func:`acdc_wsss.pseudo.rows.context_scan_labels`,
   which holds both frames): an ES frame's labels are fused with its ED frame's labels carried onto the ES
   images by registration (:func:`~acdc_wsss.pseudo.rules.temporal.fuse_es_labels`).

Each step can be switched back to the template rule of :func:`~acdc_wsss.pseudo.rules.priors_labels`
(``lv_step``, ``myo_step``, ``rv_step``), which is how the stage-2 table measures each step's gain.
:func:`label_confidence` scores each pixel by its distance to the nearest label boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from scipy import ndimage as ndi

from acdc_wsss.pseudo.rules.anatomy import slice_labels
from acdc_wsss.pseudo.rules.common import (
    LV,
    POOL_THRESHOLDS,
    BloodPools,
    SliceGrid,
    blood_pools,
    heart_centre,
)
from acdc_wsss.pseudo.rules.lv import (
    Blob,
    ChainRules,
    best_chain_score,
    choose_lv_blobs,
    lv_cavity,
    lv_chain,
    slice_blobs,
)
from acdc_wsss.pseudo.rules.myo import EpicardiumRules, epicardium, myocardial_ring
from acdc_wsss.pseudo.rules.rv import (
    RVRules,
    rv_blood,
    rv_region,
    rv_seed,
    sector,
    seed_side,
    septal_direction,
)
from acdc_wsss.pseudo.rules.targets import missing_tagged
from acdc_wsss.pseudo.rules.temporal import FusionRules

__all__ = ["ScanRules", "label_confidence", "scan_labels", "scan_septal_direction"]


@dataclass(frozen=True)
class ScanRules:
    """Settings of :func:`scan_labels`; the defaults were chosen on the validation patients of the real-data
    run (``bench/rules.py --sweep``).

    Attributes:
        lv_step: ``chain`` (from the scan) or ``template`` (the blob nearest the LV axis, holes filled).
        myo_step: ``epicardium`` (from the scan) or ``ring`` (the template ring).
        rv_step: ``blood`` (from the scan) or ``template`` (the blob beside the septum).
        es_step: ``fused`` (an ES frame's labels fused with its ED frame's, carried by registration) or
            ``scan`` (the ES frame's own rules only).
        smooth_sigma: in-plane Gaussian smoothing (pixels) before any rule.
        thresholds: the blood-pool thresholds tried on each volume
            (:func:`~acdc_wsss.pseudo.rules.common.pool_threshold`): every rule of the volume reads the pools
            of the one whose best LV chain scores highest
            (:func:`~acdc_wsss.pseudo.rules.lv.best_chain_score`; the first on a tie). Where the two-class
            cut lets the myocardium in, RV, wall and LV merge into one blob, a poor LV chain, and the
            three-class ``upper`` cut wins (``("otsu",)``: one threshold).
        disc_mm: radius of the search disc around the motion centre.
        min_blob_mm2: smallest blood pool considered.
        es_margin_px: how far the ES cavity may reach outside the ED cavity.
        chain, epi, rv, fusion: the settings of each step from the scan.
        ring_mm, ring_min_mm, ring_k, rv_reach_mm: the template ring and RV (as ``priors_labels``).
    """

    lv_step: str = "chain"
    myo_step: str = "epicardium"
    rv_step: str = "blood"
    es_step: str = "fused"
    smooth_sigma: float = 0.0
    thresholds: tuple[str, ...] = ("otsu", "upper")
    disc_mm: float = 60.0
    min_blob_mm2: float = 40.0
    es_margin_px: int = 3
    chain: ChainRules = field(default_factory=ChainRules)
    epi: EpicardiumRules = field(default_factory=EpicardiumRules)
    rv: RVRules = field(default_factory=RVRules)
    fusion: FusionRules = field(default_factory=FusionRules)
    ring_mm: float = 13.0
    ring_min_mm: float = 5.0
    ring_k: float = 2.5
    rv_reach_mm: float = 20.0

    def __post_init__(self) -> None:
        for name, allowed in (
            ("lv_step", ("chain", "template")),
            ("myo_step", ("epicardium", "ring")),
            ("rv_step", ("blood", "template")),
            ("es_step", ("fused", "scan")),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"ScanRules.{name} must be one of {allowed}, not {getattr(self, name)!r}.")
        object.__setattr__(self, "thresholds", tuple(self.thresholds))
        if not self.thresholds or not set(self.thresholds) <= set(POOL_THRESHOLDS):
            raise ValueError(
                f"ScanRules.thresholds must be some of {POOL_THRESHOLDS}, not {self.thresholds!r}."
            )


def _cavities(
    pools: list[BloodPools],
    centre: tuple[float, float],
    spacing: float,
    tags: np.ndarray | None,
    scores: np.ndarray | None,
    rules: ScanRules,
    septal: float | None = None,
) -> list[np.ndarray | None]:
    if rules.lv_step == "template":
        min_px = rules.min_blob_mm2 / spacing**2
        use_cam = scores is not None and rules.chain.w_cam > 0
        grid = SliceGrid(*pools[0].image.shape)
        choice = choose_lv_blobs(pools, grid, centre, min_px, scores, 15.0 / spacing if use_cam else 0.0)
        return [lv_cavity(p, c) if c else None for p, c in zip(pools, choice, strict=True)]
    blobs = _blobs(pools, centre, spacing, scores, rules)
    return lv_chain(blobs, rules.chain, spacing, None if tags is None else tags[:, LV - 1] > 0, septal)


def _blobs(
    pools: list[BloodPools],
    centre: tuple[float, float],
    spacing: float,
    scores: np.ndarray | None,
    rules: ScanRules,
) -> list[list[Blob]]:
    """Every slice's LV candidates as the chain rule reads them."""
    min_px = rules.min_blob_mm2 / spacing**2
    use_cam = scores is not None and rules.chain.w_cam > 0
    return [
        slice_blobs(p, min_px, centre, spacing, scores[LV - 1, ..., z] if use_cam else None)
        for z, p in enumerate(pools)
    ]


def _pools(
    smooth: np.ndarray,
    disc: np.ndarray,
    lv_within: np.ndarray | None,
    centre: tuple[float, float],
    spacing: float,
    scores: np.ndarray | None,
    rules: ScanRules,
) -> list[BloodPools]:
    """Every slice's blood pools, at the threshold of ``rules.thresholds`` whose best LV chain scores
    highest (the first where the LV is not found by its chain, or on a tie)."""

    def at(kind: str) -> list[BloodPools]:
        within = [None if lv_within is None else lv_within[..., z] for z in range(smooth.shape[-1])]
        return [blood_pools(smooth[..., z], disc, w, kind) for z, w in enumerate(within)]

    kinds = rules.thresholds if rules.lv_step == "chain" else rules.thresholds[:1]
    options = [at(kind) for kind in kinds]
    if len(options) == 1:
        return options[0]

    def score(pools: list[BloodPools]) -> float:
        return best_chain_score(_blobs(pools, centre, spacing, scores, rules), rules.chain)

    return max(options, key=score)


def _myocardium(
    image: np.ndarray,
    pools: list[BloodPools],
    cavities: list[np.ndarray | None],
    spacing: float,
    rules: ScanRules,
) -> list[np.ndarray | None]:
    """Per slice the myocardium (the template ring where the scan's epicardium cannot be measured)."""
    found = [None] * len(cavities)
    if rules.myo_step == "epicardium":
        found = epicardium(image, cavities, [p.blobs > 0 for p in pools], spacing, rules.epi)
    ring_px = max(1, round(rules.ring_mm / spacing))
    ring_min_px = min(ring_px, max(1, round(rules.ring_min_mm / spacing)))
    return [
        None
        if c is None
        else m
        if m is not None
        else myocardial_ring(p.image, c, p.blobs > 0, ring_px, ring_min_px, rules.ring_k)
        for c, m, p in zip(cavities, found, pools, strict=True)
    ]


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return float(ys.mean()), float(xs.mean())


def _seeds(
    pools: list[BloodPools],
    cavities: list[np.ndarray | None],
    myos: list[np.ndarray | None],
    rules: ScanRules,
    septal: float | None,
) -> list[np.ndarray | None]:
    """Per slice the RV seed (None where there is no LV), inside the sector of ``rules.rv.side_deg`` around
    the ``septal`` direction, seen from the slice's LV centre, when given."""
    out: list[np.ndarray | None] = []
    for p, c, m in zip(pools, cavities, myos, strict=True):
        if c is None:
            out.append(None)
            continue
        side = None if septal is None else sector(c.shape, _centroid(c), septal, rules.rv.side_deg)
        out.append(rv_seed(p, c | m, rules.rv.touch_px, side))
    return out


def _rv(
    pools: list[BloodPools],
    cavities: list[np.ndarray | None],
    myos: list[np.ndarray | None],
    reach: np.ndarray,
    spacing: float,
    rules: ScanRules,
    septal: float | None = None,
) -> list[np.ndarray | None]:
    """Per slice the RV (None where there is no LV to find it from)."""
    min_px = rules.min_blob_mm2 / spacing**2
    if rules.rv_step == "template":
        return [
            None if c is None else rv_region(p, c, m, min_px, reach)
            for p, c, m in zip(pools, cavities, myos, strict=True)
        ]
    seeds = _seeds(pools, cavities, myos, rules, None)
    side = seed_side(_direction(cavities, seeds), septal, rules.rv)
    if side is not None:
        sided = _seeds(pools, cavities, myos, rules, side)
        if any(s is not None and s.any() for s in sided):  # none on that side: keep the volume's own
            seeds = sided
    direction = _direction(cavities, seeds)
    seeded = [p.image[s] for p, s in zip(pools, seeds, strict=True) if s is not None and s.any()]
    if direction is None or not seeded:
        return [None] * len(pools)
    rv_all = float(np.median(np.concatenate(seeded)))
    out: list[np.ndarray | None] = []
    for p, c, m, s in zip(pools, cavities, myos, seeds, strict=True):
        if c is None or not m.any():
            out.append(None)
            continue
        mu_myo = float(np.median(p.image[m]))
        mu_rv = float(np.median(p.image[s])) if s.any() else rv_all
        cut = mu_myo + rules.rv.beta * (mu_rv - mu_myo)
        out.append(rv_blood(p.image, c | m, _centroid(c), direction, cut, spacing, rules.rv))
    return out


def _direction(cavities: list[np.ndarray | None], seeds: list[np.ndarray | None]) -> float | None:
    return septal_direction(
        [(s, _centroid(c)) for s, c in zip(seeds, cavities, strict=True) if s is not None]
    )


class _Heart(NamedTuple):
    """What every structure after the LV reads: the blood pools, LV cavities and myocardium per slice."""

    pools: list[BloodPools]
    cavities: list[np.ndarray | None]
    myos: list[np.ndarray | None]
    reach: np.ndarray


def _heart(
    image: np.ndarray,
    motion: np.ndarray,
    tags: np.ndarray | None,
    spacing: float,
    scores: np.ndarray | None,
    rules: ScanRules,
    lv_within: np.ndarray | None,
    septal: float | None = None,
) -> _Heart:
    h, w = image.shape[:2]
    smooth = ndi.gaussian_filter(np.asarray(image, np.float64), (rules.smooth_sigma, rules.smooth_sigma, 0))
    centre = heart_centre(motion)
    dist = SliceGrid(h, w).distance(*centre)
    disc = dist <= rules.disc_mm / spacing
    reach = dist <= (rules.disc_mm + rules.rv_reach_mm) / spacing
    pools = _pools(smooth, disc, lv_within, centre, spacing, scores, rules)
    cavities = _cavities(pools, centre, spacing, tags, scores, rules, septal)
    return _Heart(pools, cavities, _myocardium(smooth, pools, cavities, spacing, rules), reach)


def scan_septal_direction(
    image: np.ndarray,
    motion: np.ndarray,
    tags: np.ndarray | None = None,
    spacing: float = 1.5,
    rules: ScanRules | None = None,
) -> float | None:
    """The direction (radians, ``atan2(dy, dx)`` on the image grid) from the LV towards the RV that one
    volume's own seeds give (the largest blood pool beside the heart per slice, no side imposed); None
    where the rules find no LV or no seed. Arguments as :func:`scan_labels`."""
    rules = rules or ScanRules()
    heart = _heart(image, motion, tags, spacing, None, rules, None)
    return _direction(heart.cavities, _seeds(heart.pools, heart.cavities, heart.myos, rules, None))


def scan_labels(
    image: np.ndarray,
    motion: np.ndarray,
    tags: np.ndarray | None = None,
    spacing: float = 1.5,
    scores: np.ndarray | None = None,
    rules: ScanRules | None = None,
    lv_within: np.ndarray | None = None,
    septal: float | None = None,
) -> np.ndarray:
    """Pseudo labels of one volume from its own scan (see the module docstring).

    Args:
        image: ``(H, W, S)`` standardised intensities (the chain's output).
        motion: ``(H, W, S)`` ED-ES motion map (its centre is where the heart is sought).
        tags: ``(S, 3)`` multi-hot (RV, Myo, LV) or None.
        spacing: in-plane pixel size in mm.
        scores: optional ``(3, H, W, S)`` CAM scores in [0, 1], read when ``rules.chain.w_cam > 0``.
        rules: the settings (default :class:`ScanRules`).
        lv_within: optional ``(H, W, S)`` bool region the LV cavity must lie in (an ES frame: its ED
            frame's cavity grown, :func:`~acdc_wsss.pseudo.rules.es_lv_region`).
        septal: the septal direction the training patients share (radians, ``atan2(dy, dx)``): the RV
            seeds are sought within ``rules.rv.side_deg`` of it; None: of the volume's own.

    Returns:
        ``(H, W, S)`` uint8 labels: 0 background, 1 RV, 2 Myo, 3 LV.
    """
    rules = rules or ScanRules()
    h, w, n = image.shape
    pools, cavities, myos, reach = _heart(image, motion, tags, spacing, scores, rules, lv_within, septal)
    rvs = _rv(pools, cavities, myos, reach, spacing, rules, septal)
    out = np.zeros((h, w, n), np.uint8)
    for z in range(n):
        if cavities[z] is not None:
            rv = rvs[z] if rvs[z] is not None else np.zeros((h, w), bool)
            out[..., z] = slice_labels(cavities[z], myos[z], rv, None if tags is None else tags[z])
    return out


def label_confidence(labels: np.ndarray, tags: np.ndarray | None = None, scale_px: float = 1.5) -> np.ndarray:
    """``(H, W, S)`` float32 confidence in [0, 1] of each pixel's label: ``1 - exp(-d / scale_px)``, ``d`` the
    distance (pixels) to the nearest pixel of another label (rules err at boundaries), and 0 on every slice
    missing a class its ``(S, C)`` tags say is present (the rules failed there)."""
    conf = np.zeros(labels.shape, np.float32)
    failed = missing_tagged(labels, tags)
    for z in range(labels.shape[-1]):
        lab = labels[..., z]
        if failed[z]:
            continue
        d = np.zeros(lab.shape)
        for c in np.unique(lab):
            mask = lab == c
            if mask.all():
                d[:] = np.inf
                break
            d[mask] = ndi.distance_transform_edt(mask)[mask]
        conf[..., z] = 1 - np.exp(-d / scale_px)
    return conf
