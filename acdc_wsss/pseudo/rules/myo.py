"""The myocardium, two ways.

- Template (the ``priors`` yardstick, :func:`myocardial_ring`): the non-bright ring around the LV cavity, at
  least a minimum thickness, grown towards a maximum through pixels whose intensity matches the myocardium
  next to the cavity.
- From the scan (:func:`epicardium`): on rays out of the cavity's centre, the epicardium is the closed
  curve, found by dynamic programming, that keeps myocardium-like pixels inside and the rest (fat, lung,
  liver, blood) outside, sits on an intensity edge, and keeps the wall near the patient's own thickness:
  a first pass with a weak prior measures the volume's median wall, a second holds each ray near it (so
  the wall is thicker at ES than at ED when the scan says so).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from acdc_wsss.pseudo.rules.polar import closed_path, polar_sample, polar_to_mask, ray_extent, window_mean

__all__ = ["EpicardiumRules", "epicardium", "epicardium_slice", "myo_intensity", "myocardial_ring"]


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


@dataclass(frozen=True)
class EpicardiumRules:
    """Settings of :func:`epicardium` (chosen on the validation patients: ``bench/rules.py --sweep``).

    Attributes:
        n_rays: rays around the cavity; ``step_px`` sampling step along a ray.
        myo_k: robust SDs around the myocardium's median that count as myocardium-like.
        wall_mm: smallest and largest wall thickness.
        first_wall_mm: the thickness the first pass is held near (weakly, ``first_prior``).
        wall_clip_mm: range of the volume's median wall measured by the first pass.
        prior: how strongly the second pass holds each ray near that median.
        edge_weight: weight of the intensity edge at the epicardium.
        max_jump: largest change of the wall (samples) from one ray to the next.
        outside_px: depth of the band just outside the epicardium that should not look like myocardium.
        offset_px: how far the chosen curve is pulled in towards the cavity (pixels, never below the
            smallest wall): the edge the path follows lies outside the annotated epicardium (the fat and
            partial-volume rim), so the walls come out too thick without it.
    """

    n_rays: int = 72
    step_px: float = 0.5
    myo_k: float = 1.5
    wall_mm: tuple[float, float] = (3.0, 21.0)
    first_wall_mm: float = 9.0
    first_prior: float = 0.1
    wall_clip_mm: tuple[float, float] = (5.0, 18.0)
    prior: float = 1.0
    edge_weight: float = 0.5
    max_jump: int = 2
    outside_px: float = 3.0
    offset_px: float = 0.5


def myo_intensity(image: np.ndarray, cavity: np.ndarray, bright: np.ndarray) -> tuple[float, float] | None:
    """Median and robust SD of the myocardium of one slice: the non-bright pixels 1 to 3 pixels outside
    the ``cavity`` (None when fewer than 10)."""
    band = ndi.binary_dilation(cavity, iterations=3) & ~ndi.binary_dilation(cavity, iterations=1) & ~bright
    vals = image[band]
    if vals.size < 10:
        return None
    m = float(np.median(vals))
    return m, 1.4826 * float(np.median(np.abs(vals - m))) + 1e-3


def epicardium_slice(
    image: np.ndarray,
    cavity: np.ndarray,
    intensity: tuple[float, float],
    wall_mm: float,
    prior: float,
    rules: EpicardiumRules,
    spacing: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The epicardium of one slice around its ``cavity``: ``(H, W)`` bool myocardium (inside the curve, out
    of the cavity) and the ``(n_rays,)`` wall thickness in mm, held near ``wall_mm`` by ``prior``."""
    ys, xs = np.nonzero(cavity)
    centre = (float(ys.mean()), float(xs.mean()))
    lo, hi = (round(w / spacing / rules.step_px) for w in rules.wall_mm)
    endo_max = np.hypot(ys - centre[0], xs - centre[1]).max() / rules.step_px
    radii = np.arange(int(endo_max) + hi + round(rules.outside_px / rules.step_px) + 8) * rules.step_px
    vals = polar_sample(image, centre, rules.n_rays, radii)
    endo = np.maximum(ray_extent(polar_sample(cavity.astype(float), centre, rules.n_rays, radii) > 0.5), 0)
    like = (np.abs(vals - intensity[0]) <= rules.myo_k * intensity[1]).astype(float)
    walls = np.arange(lo, hi + 1)
    cum = np.concatenate([np.zeros((rules.n_rays, 1)), np.cumsum(like, axis=1)], axis=1)
    rows = np.arange(rules.n_rays)[:, None]
    epi = np.minimum(endo[:, None] + walls[None, :], len(radii) - 1)
    inside = (cum[rows, epi + 1] - cum[rows, endo[:, None] + 1]) / walls[None, :]
    depth = max(1, round(rules.outside_px / rules.step_px))
    outside = window_mean(like, endo + 1 + lo, depth)[:, : len(walls)]
    step = max(1, round(1 / rules.step_px))
    grad = vals[rows, np.minimum(epi + step, len(radii) - 1)] - vals[rows, np.maximum(epi - step, 0)]
    edge = np.abs(grad) / (np.abs(grad).max(axis=1, keepdims=True) + 1e-6)  # 1: a ray's strongest edge
    thick = walls * rules.step_px * spacing
    cost = -inside + outside - rules.edge_weight * edge + prior * ((thick - wall_mm) / wall_mm)[None, :] ** 2
    path = closed_path(cost, rules.max_jump)
    radius = np.maximum((endo + walls[path]) * rules.step_px - rules.offset_px, (endo + lo) * rules.step_px)
    return polar_to_mask(centre, radius, cavity.shape) & ~cavity, thick[path]


def epicardium(
    image: np.ndarray,
    cavities: list[np.ndarray | None],
    bright: list[np.ndarray],
    spacing: float,
    rules: EpicardiumRules,
) -> list[np.ndarray | None]:
    """Per slice, the ``(H, W)`` bool myocardium around its LV cavity (None where there is no cavity or
    too little myocardium to measure), in two passes (see the module docstring).

    Args:
        image: ``(H, W, S)`` intensities.
        cavities: per slice the LV cavity or None.
        bright: per slice the blood pools, left out of the myocardium's intensity sample.
        spacing: in-plane pixel size (mm).
    """
    stats = [
        None if c is None else myo_intensity(image[..., z], c, bright[z]) for z, c in enumerate(cavities)
    ]
    todo = [z for z, st in enumerate(stats) if st is not None]
    walls = [
        epicardium_slice(
            image[..., z], cavities[z], stats[z], rules.first_wall_mm, rules.first_prior, rules, spacing
        )[1]
        for z in todo
    ]
    if not walls:
        return [None] * len(cavities)
    wall = float(np.clip(np.median(np.concatenate(walls)), *rules.wall_clip_mm))
    out: list[np.ndarray | None] = [None] * len(cavities)
    for z in todo:
        out[z] = epicardium_slice(image[..., z], cavities[z], stats[z], wall, rules.prior, rules, spacing)[0]
    return out
