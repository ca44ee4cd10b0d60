"""Label-free anatomical priors on hand-made short-axis slices (acdc_wsss.pseudo.rules)."""

from __future__ import annotations

import numpy as np
import pytest

from acdc_wsss.metrics import dice_per_class
from acdc_wsss.pseudo.rules import heart_region, otsu_threshold, priors_labels, uncertain_to_ignore


def test_otsu_splits_two_modes() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 0.1, 500), rng.normal(3, 0.1, 200)])
    t = otsu_threshold(values)
    assert 1.0 < t < 2.0  # the middle of the empty gap, not the edge of a mode
    assert ((values > t) == (np.arange(700) >= 500)).all()
    assert otsu_threshold(np.full(10, 2.0)) == 2.0


def _slice() -> tuple[np.ndarray, np.ndarray]:
    """A 128x128 short-axis slice: LV pool (r 12 px), Myo ring (to r 20), RV blob left of the septum."""
    yy, xx = np.mgrid[:128, :128]
    r_lv = np.hypot(yy - 64, xx - 70)
    gt = np.zeros((128, 128), np.uint8)
    gt[r_lv < 20] = 2
    gt[r_lv < 12] = 3
    rv = (np.hypot(yy - 64, xx - 40) < 13) & (gt == 0)
    gt[rv] = 1
    img = np.full((128, 128), 0.2)
    img[gt == 2] = 0.3
    img[(gt == 3) | (gt == 1)] = 1.0
    img += np.random.default_rng(1).normal(0, 0.03, img.shape)
    return img, gt


def test_priors_find_lv_ring_and_rv() -> None:
    img, gt = _slice()
    image = np.stack([img] * 3, axis=-1)
    motion = np.zeros_like(image)
    motion[44:84, 30:90] = 1.0  # the heart moves
    labels = priors_labels(image, motion, spacing=1.5, ring_mm=12.0)
    dice = dice_per_class(labels[..., 1], gt, (1, 2, 3))
    assert dice[2] > 0.9 and dice[1] > 0.6 and dice[0] > 0.6, dice
    # classes absent from a slice's tags are dropped there
    tags = np.array([[1, 1, 1], [0, 1, 1], [0, 0, 0]], np.float32)
    labels = priors_labels(image, motion, tags, spacing=1.5)
    assert set(np.unique(labels[..., 1]).tolist()) == {0, 2, 3} and labels[..., 2].max() == 0


def test_priors_leave_an_empty_slice_empty() -> None:
    image = np.random.default_rng(0).normal(0, 0.01, (64, 64, 2))
    labels = priors_labels(image, np.zeros_like(image), spacing=1.5)
    assert labels.shape == (64, 64, 2) and labels.dtype == np.uint8


def test_adaptive_ring_stops_at_fat_and_a_fixed_ring_does_not() -> None:
    img, gt = _slice()
    yy, xx = np.mgrid[:128, :128]
    r_lv = np.hypot(yy - 64, xx - 70)
    img[(r_lv >= 20) & (r_lv < 30) & (gt == 0)] = 0.0  # dark lung around the myocardium
    image = np.stack([img] * 3, axis=-1)
    motion = np.zeros_like(image)
    motion[44:84, 30:90] = 1.0
    adaptive = priors_labels(image, motion, spacing=1.5, ring_mm=24.0)[..., 1]
    fixed = priors_labels(image, motion, spacing=1.5, ring_mm=24.0, myo_k=np.inf)[..., 1]
    myo_gt = gt == 2
    assert dice_per_class(adaptive, gt, (2,))[0] > 0.9
    assert dice_per_class(fixed, gt, (2,))[0] < 0.75  # a 16-pixel ring runs into the lung
    assert (adaptive == 2).sum() <= myo_gt.sum() * 1.1


def test_lv_tracking_ignores_a_stray_blob_nearer_the_motion_centre() -> None:
    img, _ = _slice()
    image = np.stack([img] * 5, axis=-1)
    # on the last slice the LV pool is small and a bright stray blob sits on the motion centre
    yy, xx = np.mgrid[:128, :128]
    last = np.full((128, 128), 0.2) + np.random.default_rng(2).normal(0, 0.03, (128, 128))
    last[np.hypot(yy - 64, xx - 70) < 13] = 0.3
    last[np.hypot(yy - 64, xx - 70) < 5] = 1.0  # the apical LV cavity
    last[np.hypot(yy - 64, xx - 55) < 5] = 1.0  # the stray blob, on the motion centre
    image[..., 4] = last
    motion = np.zeros_like(image)
    motion[54:74, 52:72] = 1.0  # centre (64, 62): nearer the stray blob than the apical cavity
    untracked = priors_labels(image, motion, spacing=1.5, track=False, rv_reach_mm=0)[..., 4]
    tracked = priors_labels(image, motion, spacing=1.5, rv_reach_mm=0)[..., 4]
    cavity = np.hypot(yy - 64, xx - 70) < 5
    assert (untracked[cavity] == 3).mean() < 0.5
    assert (tracked[cavity] == 3).mean() > 0.9


def test_uncertain_pixels_become_ignore() -> None:
    labels = np.zeros((8, 8, 3), np.uint8)
    labels[2:6, 2:6, :] = 3
    labels[:, :, 2] = 0  # slice 2 lost its LV
    tags = np.array([[0, 0, 1], [0, 0, 0], [0, 0, 1]], np.float32)
    target = uncertain_to_ignore(labels, tags, band=1)
    # band 1 on both sides of the square's edge: rows/cols 1..2 and 5..6 of the square's outline
    edge = np.zeros((8, 8), bool)
    edge[1:7, 1:7] = True
    edge[3:5, 3:5] = False
    assert (target[..., 0] == 255).sum() == edge.sum() - 4  # 4-connected bands miss the 4 outer corners
    assert (target[3:5, 3:5, 0] == 3).all() and target[0, 0, 0] == 0
    assert (target[..., 1] == target[..., 0]).all()  # untagged slice: the labels' own boundaries only
    assert (target[..., 2] == 255).all()  # tagged LV, none found: the whole slice is ignored
    assert (uncertain_to_ignore(labels, None, band=0)[..., :2] == labels[..., :2]).all()


def test_heart_region_is_a_disc_around_the_motion_peak() -> None:
    motion = np.zeros((64, 64, 2))
    motion[20:28, 30:38] = 1.0
    region = heart_region(motion, spacing=2.0, disc_mm=10.0)
    assert region[24, 34] and not region[24, 45] and region.sum() == pytest.approx(np.pi * 25, rel=0.2)
