"""Polar sampling around a centre, for boundaries that are closed curves around the LV: rays out of the
cavity's centre, the extent of a mask along each ray, the best closed path through a ``(rays, radii)``
cost table by dynamic programming, and the mask inside a polar curve."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import polygon

__all__ = ["closed_path", "polar_sample", "polar_to_mask", "ray_extent", "window_mean"]


def _ray_points(centre: tuple[float, float], n_rays: int, radii: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(y, x)`` of every ray at every radius: ``(n_rays, len(radii))`` each; ``radii`` may also be one
    radius per ray (``(n_rays, 1)``), a closed curve."""
    theta = 2 * np.pi * np.arange(n_rays)[:, None] / n_rays
    return centre[0] + np.sin(theta) * radii, centre[1] + np.cos(theta) * radii


def polar_sample(
    image: np.ndarray, centre: tuple[float, float], n_rays: int, radii: np.ndarray, order: int = 1
) -> np.ndarray:
    """``(n_rays, len(radii))`` values of an ``(H, W)`` array along ``n_rays`` rays out of ``centre``
    (``(y, x)`` pixels), at the given radii (pixels); ray ``k`` points at angle ``2 pi k / n_rays`` (0 is
    +x, pi/2 is +y). Interpolation of ``order`` (1 linear, 0 nearest); outside the image is the nearest
    edge value."""
    ys, xs = _ray_points(centre, n_rays, radii[None, :])
    vals = ndi.map_coordinates(
        np.asarray(image, np.float64), [ys.ravel(), xs.ravel()], order=order, mode="nearest"
    )
    return vals.reshape(ys.shape)


def ray_extent(inside: np.ndarray) -> np.ndarray:
    """Per ray, the index of the last sample of the first run of ``True`` from the centre, for an
    ``(n_rays, n_radii)`` bool table (-1 where the ray starts outside)."""
    n = inside.shape[1]
    first_out = np.where(~inside, np.arange(n)[None, :], n).min(axis=1)
    return first_out - 1


def window_mean(values: np.ndarray, start: np.ndarray, length: int) -> np.ndarray:
    """``(n_rays, n_radii)`` mean of ``values`` over samples ``[start + r, start + r + length)`` of each
    ray, for every offset ``r`` (cumulative sums; samples past the end count as the last one)."""
    n_rays, n = values.shape
    pad = np.concatenate([values, np.repeat(values[:, -1:], n + length, axis=1)], axis=1)
    cum = np.concatenate([np.zeros((n_rays, 1)), np.cumsum(pad, axis=1)], axis=1)
    idx = np.clip(start[:, None] + np.arange(n)[None, :], 0, pad.shape[1] - length)
    rows = np.arange(n_rays)[:, None]
    return (cum[rows, idx + length] - cum[rows, idx]) / length


def closed_path(cost: np.ndarray, max_jump: int) -> np.ndarray:
    """The column per row (``(n_rays,)`` ints) minimising the summed ``cost`` (``(n_rays, n_states)``) of a
    path that moves at most ``max_jump`` columns from one row to the next, the last row included next to
    the first (a closed curve). Solved exactly on three laps of the rows, keeping the middle lap: the ends
    of a long enough unrolled path do not constrain its middle."""
    n_rays, n_states = cost.shape
    laps = np.concatenate([cost, cost, cost])
    acc = laps[0].copy()
    back = np.zeros(laps.shape, np.int64)
    shifts = range(-max_jump, max_jump + 1)
    for i in range(1, len(laps)):
        options = np.full((len(shifts), n_states), np.inf)
        for j, s in enumerate(shifts):  # state k comes from state k - s of the row before
            if s >= 0:
                options[j, s:] = acc[: n_states - s]
            else:
                options[j, :s] = acc[-s:]
        best = options.argmin(axis=0)
        back[i] = np.arange(n_states) - np.array(list(shifts))[best]
        acc = options[best, np.arange(n_states)] + laps[i]
    path = np.zeros(len(laps), np.int64)
    path[-1] = int(acc.argmin())
    for i in range(len(laps) - 1, 0, -1):
        path[i - 1] = back[i, path[i]]
    return path[n_rays : 2 * n_rays]


def polar_to_mask(centre: tuple[float, float], radius: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` bool mask inside the closed curve of ``radius[k]`` pixels on ray ``k`` around ``centre``."""
    ys, xs = _ray_points(centre, len(radius), np.asarray(radius, float)[:, None])
    rr, cc = polygon(ys[:, 0], xs[:, 0], shape)
    mask = np.zeros(shape, bool)
    mask[rr, cc] = True
    return mask
