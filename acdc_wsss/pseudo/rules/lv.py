"""The LV cavity, two ways.

- Template (the ``priors`` yardstick): per slice, the blood pool nearest the heart centre (a CAM's LV score
  brings a blob nearer), then, tracked, the one nearest the LV axis, holes filled (papillary muscles).
- From the scan (:func:`lv_chain`): the bright blobs of every slice are linked from slice to slice into
  chains (mutual best overlap); the LV is the chain that is roundest, longest and nearest the heart
  centre (the LV is a stack of round discs in short-axis cine, the RV a crescent); slices the chain
  misses take the blob nearest its axis. The cavity is the blob's convex hull, so papillary muscles and
  trabeculae inside it count as LV, as in ACDC's masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import perimeter
from skimage.morphology import convex_hull_image

from acdc_wsss.pseudo.rules.common import LV, BloodPools, SliceGrid, weighted_median

__all__ = [
    "Blob",
    "ChainRules",
    "best_chain_score",
    "blob_chains",
    "choose_lv_blobs",
    "lv_axis",
    "lv_cavity",
    "lv_chain",
    "pick_lv_blob",
    "slice_blobs",
    "swapped_chain",
]


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


class Blob(NamedTuple):
    """One bright blob of a slice, as an LV candidate."""

    mask: np.ndarray  #: (H, W) bool
    centroid: tuple[float, float]  #: (y, x) pixels
    roundness: float  #: 4 pi area / perimeter^2, in [0, 1] (1: a disc)
    distance_mm: float  #: centroid to the heart centre
    lv_score: float  #: mean CAM LV score inside (0 without CAMs)


@dataclass(frozen=True)
class ChainRules:
    """Settings of :func:`lv_chain` (chosen on the validation patients: ``bench/rules.py --sweep``).

    Attributes:
        min_iou: smallest overlap of two blobs on neighbouring slices that links them.
        w_round: weight of the chain's mean roundness in its score.
        w_length: weight of the log of its number of slices.
        w_distance: weight (per mm) of its mean distance to the heart centre.
        w_cam: weight of its mean CAM LV score (0: the CAMs are not read).
        reach_mm: how far from the chain's axis a slice off the chain may take a blob.
        swap_deg: the LV-RV swap check (:func:`swapped_chain`, where the septal side is known): a chain
            within this angle of the anti-septal direction from the chosen one may be the real LV (0: off),
        swap_mm: within this distance of it (mean centroids),
        swap_ratio: with at least this share of its slices and of its mean blob area,
        swap_round: and rounder than it by at least this (the RV is a crescent, the LV a disc).
    """

    min_iou: float = 0.3
    w_round: float = 1.0
    w_length: float = 0.5
    w_distance: float = 0.02
    w_cam: float = 0.0
    reach_mm: float = 20.0
    swap_deg: float = 45.0
    swap_mm: float = 70.0
    swap_ratio: float = 0.5
    swap_round: float = 0.1


def slice_blobs(
    pools: BloodPools,
    min_px: float,
    centre: tuple[float, float],
    spacing: float,
    lv_score: np.ndarray | None = None,
) -> list[Blob]:
    """The LV candidates of one slice of at least ``min_px`` pixels, described for :func:`lv_chain`."""
    out = []
    for i in np.flatnonzero(pools.candidate_sizes >= min_px):
        if i == 0:
            continue
        mask = pools.candidates == i
        ys, xs = np.nonzero(mask)
        round_ = min(1.0, 4 * np.pi * ys.size / max(perimeter(mask), 1.0) ** 2)
        dist = float(np.hypot(ys.mean() - centre[0], xs.mean() - centre[1])) * spacing
        score = 0.0 if lv_score is None else float(lv_score[mask].mean())
        out.append(Blob(mask, (float(ys.mean()), float(xs.mean())), round_, dist, score))
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.count_nonzero(a & b)
    return inter / max(1, np.count_nonzero(a | b))


def blob_chains(blobs: list[list[Blob]], min_iou: float) -> list[list[tuple[int, int]]]:
    """Blobs linked across neighbouring slices where each is the other's best overlap (at least
    ``min_iou``); every blob lies in exactly one chain of ``(slice, blob index)``, ordered by slice."""
    nxt: dict[tuple[int, int], tuple[int, int]] = {}
    for z in range(len(blobs) - 1):
        if not blobs[z] or not blobs[z + 1]:
            continue
        iou = np.array([[_iou(a.mask, b.mask) for b in blobs[z + 1]] for a in blobs[z]])
        for i in range(iou.shape[0]):
            j = int(iou[i].argmax())
            if iou[i, j] >= min_iou and int(iou[:, j].argmax()) == i:
                nxt[(z, i)] = (z + 1, j)
    starts = set(nxt.values())
    chains = []
    for z, row in enumerate(blobs):
        for i in range(len(row)):
            if (z, i) in starts:
                continue
            chain = [(z, i)]
            while chain[-1] in nxt:
                chain.append(nxt[chain[-1]])
            chains.append(chain)
    return chains


def _chain_score(chain: list[tuple[int, int]], blobs: list[list[Blob]], rules: ChainRules) -> float:
    members = [blobs[z][i] for z, i in chain]
    return (
        rules.w_round * float(np.mean([b.roundness for b in members]))
        + rules.w_length * float(np.log(len(members)))
        - rules.w_distance * float(np.mean([b.distance_mm for b in members]))
        + rules.w_cam * float(np.mean([b.lv_score for b in members]))
    )


def best_chain_score(blobs: list[list[Blob]], rules: ChainRules) -> float:
    """The score of the best LV chain :func:`lv_chain` would start from (``-inf`` without any blob): how
    much the best chain of these blobs looks like an LV, to compare two ways of finding the blobs."""
    return max((_chain_score(c, blobs, rules) for c in blob_chains(blobs, rules.min_iou)), default=-np.inf)


class _Shape(NamedTuple):
    """A chain's shape, for the swap check."""

    centroid: np.ndarray  #: (y, x) mean of its blobs' centroids, pixels
    length: int  #: slices
    area: float  #: mean blob area, pixels
    roundness: float  #: mean blob roundness


def _shape(chain: list[tuple[int, int]], blobs: list[list[Blob]]) -> _Shape:
    members = [blobs[z][i] for z, i in chain]
    return _Shape(
        np.mean([b.centroid for b in members], axis=0),
        len(members),
        float(np.mean([np.count_nonzero(b.mask) for b in members])),
        float(np.mean([b.roundness for b in members])),
    )


def swapped_chain(
    best: list[tuple[int, int]],
    chains: list[list[tuple[int, int]]],
    blobs: list[list[Blob]],
    rules: ChainRules,
    spacing: float,
    septal: float,
) -> list[tuple[int, int]]:
    """The LV chain after a check for an LV-RV swap. ``septal`` is the LV-to-RV direction (radians,
    ``atan2(dy, dx)`` on the image grid), so were ``best`` the RV, the LV would lie from it towards
    ``septal + pi``. A chain there (within ``rules.swap_deg`` and ``rules.swap_mm``, mean centroids) with at
    least ``rules.swap_ratio`` of ``best``'s slices and mean blob area, and rounder by ``rules.swap_round``,
    is taken for the LV (the best-scoring one of several); otherwise ``best`` stays."""
    b = _shape(best, blobs)
    found = []
    for chain in chains:
        if chain is best:
            continue
        a = _shape(chain, blobs)
        dy, dx = a.centroid - b.centroid
        off = float(np.angle(np.exp(1j * (np.arctan2(dy, dx) - septal - np.pi))))
        if (
            abs(np.degrees(off)) <= rules.swap_deg
            and np.hypot(dy, dx) * spacing <= rules.swap_mm
            and a.roundness >= b.roundness + rules.swap_round
            and a.length >= rules.swap_ratio * b.length
            and a.area >= rules.swap_ratio * b.area
        ):
            found.append(chain)
    return max(found, key=lambda c: _chain_score(c, blobs, rules)) if found else best


def lv_chain(
    blobs: list[list[Blob]],
    rules: ChainRules,
    spacing: float,
    wanted: np.ndarray | None = None,
    septal: float | None = None,
) -> list[np.ndarray | None]:
    """Per slice, the ``(H, W)`` bool LV cavity (None: no LV found): the best-scoring chain's blobs (checked
    for an LV-RV swap by :func:`swapped_chain` where ``septal``, the LV-to-RV direction the training
    patients share, is given and ``rules.swap_deg > 0``), and on slices off the chain where ``wanted``
    (``(S,)`` bool, e.g. the slice tags; None: every slice), the blob nearest the chain's centre on its
    nearest slice, within ``rules.reach_mm``. Each cavity is its blob's convex hull."""
    chains = blob_chains(blobs, rules.min_iou)
    out: list[np.ndarray | None] = [None] * len(blobs)
    if not chains:
        return out
    best = max(chains, key=lambda c: _chain_score(c, blobs, rules))
    if septal is not None and rules.swap_deg > 0:
        best = swapped_chain(best, chains, blobs, rules, spacing, septal)
    picked = {z: blobs[z][i] for z, i in best}
    for z in range(len(blobs)):
        if z not in picked and blobs[z] and (wanted is None or wanted[z]):
            near = picked[min(picked, key=lambda k: abs(k - z))].centroid
            d = [np.hypot(b.centroid[0] - near[0], b.centroid[1] - near[1]) * spacing for b in blobs[z]]
            if min(d) <= rules.reach_mm:
                out[z] = blobs[z][int(np.argmin(d))].mask
        if z in picked:
            out[z] = picked[z].mask
    return [None if m is None else convex_hull_image(m) for m in out]
