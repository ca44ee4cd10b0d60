"""Label-free anatomical priors on hand-made short-axis slices (acdc_wsss.pseudo.priors)."""

from __future__ import annotations

import numpy as np

from acdc_wsss.metrics import dice_per_class
from acdc_wsss.pseudo.priors import otsu_threshold, priors_labels


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
