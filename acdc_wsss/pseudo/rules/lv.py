"""The LV cavity: per slice, the blood pool nearest the heart centre (a CAM's LV score brings a blob
nearer), then, tracked, the one nearest the LV axis, holes filled (papillary muscles)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from acdc_wsss.pseudo.rules.common import LV, BloodPools, SliceGrid, weighted_median

__all__ = ["choose_lv_blobs", "lv_axis", "lv_cavity", "pick_lv_blob"]


def pick_lv_blob(
    pools: BloodPools,
    grid: SliceGrid,
    at: tuple[float, float],
    min_px: float,
    lv_score: np.ndarray | None = None,
    cam_px: float = 0.0,
) -> int:
    """The LV candidate of a slice nearest ``at`` (``(y, x)``), among those of at least ``min_px`` pixels;
    a candidate's distance is lowered by ``cam_px`` pixels per unit of its mean ``lv_score`` (the CAM's
    ``(H, W)`` LV scores). 0 when there is none."""
    d_here = grid.distance(*at)
    best, best_d = 0, np.inf
    for i in np.flatnonzero(pools.candidate_sizes >= min_px):
        if i == 0:
            continue
        inside = pools.candidates == i
        d = float(d_here[inside].min())
        if lv_score is not None and cam_px:
            d -= cam_px * float(lv_score[inside].mean())
        if d < best_d:
            best, best_d = int(i), d
    return best


def lv_axis(pools: list[BloodPools], choice: list[int]) -> tuple[float, float]:
    """The volume's LV axis ``(y, x)``: the size-weighted median centre of the chosen candidates (the LV is
    a stack of discs on one axis in short-axis cine)."""
    pts = []
    for z, c in enumerate(choice):
        if c:
            ys, xs = np.nonzero(pools[z].candidates == c)
            pts.append((ys.mean(), xs.mean(), ys.size))
    ys, xs, ws = (np.array(a, dtype=np.float64) for a in zip(*pts, strict=True))
    return weighted_median(ys, ws), weighted_median(xs, ws)


def choose_lv_blobs(
    pools: list[BloodPools],
    grid: SliceGrid,
    centre: tuple[float, float],
    min_px: float,
    scores: np.ndarray | None = None,
    cam_px: float = 0.0,
    track: bool = True,
) -> list[int]:
    """Per slice, the LV candidate (0: none): the one nearest ``centre``; with ``track`` and two or more
    slices found, a second pass picks the one nearest the :func:`lv_axis`, so that a stray apical or basal
    blob does not take over. ``scores``: optional ``(3, H, W, S)`` CAM scores (RV, Myo, LV)."""

    def pick(z: int, at: tuple[float, float]) -> int:
        lv_score = None if scores is None else scores[LV - 1, ..., z]
        return pick_lv_blob(pools[z], grid, at, min_px, lv_score, cam_px)

    choice = [pick(z, centre) for z in range(len(pools))]
    if track and sum(c > 0 for c in choice) >= 2:
        axis = lv_axis(pools, choice)
        choice = [pick(z, axis) for z in range(len(pools))]
    return choice


def lv_cavity(pools: BloodPools, candidate: int) -> np.ndarray:
    """``(H, W)`` bool LV cavity: the chosen candidate with its holes (papillary muscles) filled."""
    return ndi.binary_fill_holes(pools.candidates == candidate)
