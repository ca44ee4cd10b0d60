"""Pseudo labels from the scan itself on hand-made short-axis volumes (acdc_wsss.pseudo.rules.scan)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage as ndi

from acdc_wsss.metrics import dice_per_class
from acdc_wsss.pseudo.rules import ScanRules, label_confidence, priors_labels, scan_labels
from acdc_wsss.pseudo.rules.common import pool_threshold
from acdc_wsss.pseudo.rules.lv import ChainRules
from acdc_wsss.pseudo.rules.polar import closed_path, polar_sample, polar_to_mask, ray_extent, window_mean
from acdc_wsss.pseudo.rules.rv import RVRules, seed_side, septal_prior
from acdc_wsss.pseudo.rules.scan import scan_septal_direction


def _volume(slices: int = 5, wall: float = 8.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image, motion and truth ``(128, 128, S)``: a round LV pool (r 12 px), a Myo wall ``wall`` px thick
    (a little brighter than the fat around it), and a bright RV crescent wrapped round the septum on the
    left, 3 px of wall between them; noise added."""
    yy, xx = np.mgrid[:128, :128]
    r_lv = np.hypot(yy - 64, xx - 72)
    gt = np.zeros((128, 128), np.uint8)
    gt[r_lv < 12 + wall] = 2
    gt[r_lv < 12] = 3
    r_rv = np.hypot(yy - 64, xx - 58)
    gt[(r_rv < 30) & (r_lv >= 12 + wall + 2) & (xx < 72)] = 1
    img = np.full((128, 128), -1.0)
    img[gt == 2] = 0.0
    img[(gt == 3) | (gt == 1)] = 1.5
    rng = np.random.default_rng(1)
    image = np.stack([img + rng.normal(0, 0.1, img.shape) for _ in range(slices)], axis=-1)
    motion = np.zeros_like(image)
    motion[50:78, 58:86] = 1.0  # the heart moves
    return image, motion, np.stack([gt] * slices, axis=-1)


def test_polar_tools_on_hand_made_tables() -> None:
    cost = np.ones((72, 30))
    want = 10 + np.round(4 * np.sin(2 * np.pi * np.arange(72) / 72)).astype(int)  # moves at most 1 a ray
    cost[np.arange(72), want] = 0
    assert (closed_path(cost, 2) == want).all()
    cost = np.ones((8, 10))
    cost[:4, 1], cost[4:, 8] = 0, 0  # a jump of 7 between rows 3 and 4 (and 7 and 0) is not allowed
    path = closed_path(cost, 2)
    assert np.abs(np.diff(np.r_[path, path[0]])).max() <= 2
    yy, xx = np.mgrid[:64, :64]
    disc = np.hypot(yy - 30, xx - 32) <= 10
    radii = np.arange(0, 30, 0.5)
    extent = radii[ray_extent(polar_sample(disc.astype(float), (30, 32), 72, radii) > 0.5)]
    assert 9.0 <= extent.min() and extent.max() <= 10.5
    assert abs(polar_to_mask((30, 32), extent, (64, 64)).sum() - disc.sum()) < 0.05 * disc.sum()
    means = window_mean(np.arange(10.0)[None], np.array([2]), 3)
    assert means[0, 0] == 3.0 and means[0, -1] == 9.0  # samples 2..4; past the end the last one repeats


def test_scan_rules_follow_the_wall_and_the_whole_rv() -> None:
    image, motion, gt = _volume()
    labels = scan_labels(image, motion, spacing=1.5)
    dice = dice_per_class(labels, gt, (1, 2, 3))
    assert dice[2] > 0.9 and dice[1] > 0.85 and dice[0] > 0.9, dice
    template = dice_per_class(priors_labels(image, motion, spacing=1.5), gt, (1, 2, 3))
    assert dice[0] > template[0] + 0.1, (dice, template)  # the template keeps only the RV blob by the septum


def test_scan_wall_follows_the_patient() -> None:
    area = {}
    for wall in (5.0, 10.0):
        image, motion, gt = _volume(wall=wall)
        labels = scan_labels(image, motion, spacing=1.5)
        assert dice_per_class(labels, gt, (2,))[0] > 0.75, wall
        assert abs((labels == 2).sum() / (gt == 2).sum() - 1) < 0.2, wall
        area[wall] = (labels == 2).sum()
    assert area[10.0] > 1.6 * area[5.0]  # the thicker wall is found thicker, not held to a fixed width


def test_scan_tags_and_steps() -> None:
    image, motion, _ = _volume(slices=3)
    tags = np.array([[1, 1, 1], [0, 1, 1], [0, 0, 0]], np.float32)
    labels = scan_labels(image, motion, tags, spacing=1.5)
    assert set(np.unique(labels[..., 1]).tolist()) == {0, 2, 3} and labels[..., 2].max() == 0
    template = ScanRules(lv_step="template", myo_step="ring", rv_step="template")
    assert (scan_labels(image, motion, spacing=1.5, rules=template) > 0).any()
    with pytest.raises(ValueError, match="lv_step"):
        ScanRules(lv_step="magic")


def test_lv_chain_prefers_the_round_stack_to_a_nearer_crescent() -> None:
    # the motion centre sits on an RV-like crescent; the round stack wins up to a distance that grows
    # with the roundness weight (the default, 1, was chosen on validation patients)
    yy, xx = np.mgrid[:128, :128]
    crescent = (np.hypot(yy - 64, xx - 64) < 14) & (np.hypot(yy - 64, xx - 72) >= 12)
    for centre, rules in ((80, ScanRules()), (94, ScanRules(chain=ChainRules(w_round=2.0)))):
        disc = np.hypot(yy - 64, xx - centre) < 11
        image = np.stack([np.where(crescent | disc, 1.5, -1.0)] * 4, axis=-1)
        motion = np.zeros_like(image)
        motion[60:68, 58:66] = 1.0
        labels = scan_labels(image, motion, spacing=1.5, rules=rules)
        assert (labels[..., 0][disc] == 3).mean() > 0.85 and (labels[..., 0][crescent] == 3).mean() < 0.05
    far = np.hypot(yy - 64, xx - 94) < 11
    image = np.stack([np.where(crescent | far, 1.5, -1.0)] * 4, axis=-1)
    labels = scan_labels(image, motion, spacing=1.5)  # 45 mm away at the default weight: the crescent
    assert (labels[..., 0][crescent] == 3).mean() > 0.85


def test_an_lv_rv_swap_is_undone_on_the_anti_septal_side() -> None:
    # the crescent near the motion centre wins the chain score over a round stack 45 mm to its right; were
    # the crescent the RV of a heart whose RV lies left of its LV (septal direction pi), the LV would lie
    # to its right: the round stack there is taken instead
    yy, xx = np.mgrid[:128, :128]
    crescent = (np.hypot(yy - 64, xx - 64) < 14) & (np.hypot(yy - 64, xx - 72) >= 12)
    disc = np.hypot(yy - 64, xx - 94) < 11
    image = np.stack([np.where(crescent | disc, 1.5, -1.0)] * 4, axis=-1)
    motion = np.zeros_like(image)
    motion[60:68, 58:66] = 1.0

    def lv_on(rules: ScanRules | None = None, septal: float | None = np.pi) -> str:
        lv = scan_labels(image, motion, spacing=1.5, rules=rules, septal=septal)[..., 0] == 3
        assert lv[crescent].mean() > 0.85 or lv[disc].mean() > 0.85
        return "disc" if lv[disc].mean() > 0.85 else "crescent"

    assert lv_on() == "disc"
    assert lv_on(septal=None) == "crescent"  # no shared side: no check
    assert lv_on(septal=0.0) == "crescent"  # the LV would lie to the left, where there is nothing
    assert lv_on(septal=np.pi - np.radians(60)) == "crescent"  # the stack is 60 degrees off that side
    for off in (ChainRules(swap_deg=0.0), ChainRules(swap_round=1.0), ChainRules(swap_ratio=3.0)):
        assert lv_on(ScanRules(chain=off)) == "crescent", off  # off; not rounder by 1; not 3x the area
    assert lv_on(ScanRules(chain=ChainRules(swap_mm=40.0))) == "crescent"  # 45 mm away


def test_label_confidence_by_hand() -> None:
    labels = np.zeros((5, 6, 2), np.uint8)
    labels[:, 3:, :] = 3  # a vertical boundary between columns 2 and 3
    conf = label_confidence(labels, scale_px=1.5)
    assert conf.dtype == np.float32
    np.testing.assert_allclose(conf[2, 2, 0], 1 - np.exp(-1 / 1.5), rtol=1e-6)  # next to the boundary
    np.testing.assert_allclose(conf[2, 0, 0], 1 - np.exp(-3 / 1.5), rtol=1e-6)  # 3 px from it
    tags = np.array([[0, 0, 1], [1, 0, 1]], np.float32)  # slice 1 should hold RV and has none
    conf = label_confidence(labels, tags)
    assert conf[..., 1].max() == 0 and conf[..., 0].min() > 0


def test_boundary_settings_pull_the_epicardium_in_and_grow_the_rv() -> None:
    image, motion, gt = _volume(slices=3, wall=8.0)

    def rules(offset: float, grow: int) -> ScanRules:
        base = ScanRules()
        epi, rv = dataclasses.replace(base.epi, offset_px=offset), dataclasses.replace(base.rv, grow_px=grow)
        return dataclasses.replace(base, epi=epi, rv=rv)

    plain = scan_labels(image, motion, spacing=1.5, rules=rules(0.0, 0))
    pulled = scan_labels(image, motion, spacing=1.5, rules=rules(1.0, 0))
    # one pixel off the epicardium's radius (about 20 px) takes about its perimeter off the wall
    lost = ((plain == 2).sum() - (pulled == 2).sum()) / 3
    assert 0.7 * 2 * np.pi * 20 < lost < 1.3 * 2 * np.pi * 20, lost
    assert ((pulled == 3) == (plain == 3)).all()  # the cavity does not move
    thin = scan_labels(image, motion, spacing=1.5, rules=rules(50.0, 0))
    wall = (thin == 2).sum(axis=(0, 1))  # never thinner than the smallest wall (3 mm = 2 px)
    assert (wall > 0.7 * 2 * np.pi * 13 * 2).all(), wall
    grown = scan_labels(image, motion, spacing=1.5, rules=rules(0.0, 1))
    heart = (plain == 2) | (plain == 3)
    assert ((grown == 2) == (plain == 2)).all() and not (grown == 1)[heart].any()
    assert ((plain == 1) <= (grown == 1)).all() and (grown == 1).sum() > 1.1 * (plain == 1).sum()
    # the RV grown from the rules' gap reaches the wall, which the ungrown RV never touches
    touching = ndi.binary_dilation(plain == 2, iterations=1, structure=ndi.generate_binary_structure(3, 1))
    assert not (plain == 1)[touching].any() and (grown == 1)[touching].any()
    assert dice_per_class(grown, gt, (1,))[0] > dice_per_class(plain, gt, (1,))[0] - 0.05


def test_rv_seeds_are_sought_on_the_side_the_training_patients_share() -> None:
    image, motion, gt = _volume()  # the RV lies left of the LV: direction pi on the grid
    yy, xx = np.mgrid[:128, :128]
    r = np.hypot(yy - 64, xx - 72)
    distractor = (r >= 22) & (r < 45) & (xx > 80)  # a larger bright pool beside the heart, on the far side
    assert distractor.sum() > (gt[..., 0] == 1).sum()
    image[distractor] = 1.7
    # the volume's own seeds point at the distractor, and its RV is taken there
    assert abs(scan_septal_direction(image, motion, spacing=1.5)) < np.pi / 2
    alone = scan_labels(image, motion, spacing=1.5)
    assert (alone == 1)[distractor].mean() > 0.5 and dice_per_class(alone, gt, (1,))[0] < 0.1
    # the shared side (pi) keeps the seeds left of the LV: the RV is found, LV and Myo unchanged
    sided = scan_labels(image, motion, spacing=1.5, septal=np.pi)
    assert not (sided == 1)[distractor].any() and dice_per_class(sided, gt, (1,))[0] > 0.85
    assert ((sided >= 2) == (alone >= 2)).all()
    # a side that agrees with the volume's own seeds leaves its RV about as it was, a little off too
    plain_image, _, _ = _volume()
    own = dice_per_class(scan_labels(plain_image, motion, spacing=1.5), gt, (1,))[0]
    for side, tol in ((np.pi, 0.01), (np.pi + 0.5, 0.05)):
        found = dice_per_class(scan_labels(plain_image, motion, spacing=1.5, septal=side), gt, (1,))[0]
        assert found == pytest.approx(own, abs=tol), side
    # no pool at all on the shared side (it points away from the RV): the volume keeps its own seeds
    away = scan_labels(plain_image, motion, spacing=1.5, septal=0.0)
    assert dice_per_class(away, gt, (1,))[0] == pytest.approx(own, abs=0.01)


def test_septal_prior_is_the_circular_mean_of_directions_that_agree() -> None:
    prior = septal_prior([0.0, 0.0, 0.0, np.pi / 2])  # mean vector (3 + i) / 4: length 0.79
    assert prior == pytest.approx(np.arctan2(1, 3))
    assert septal_prior([np.pi - 0.1, -np.pi + 0.1]) == pytest.approx(np.pi)  # across the +-pi seam
    assert septal_prior([0.0, np.pi]) is None and septal_prior([]) is None  # no shared side
    assert septal_prior([0.0, 0.0, 0.0, np.pi / 2], min_agreement=0.8) is None
    # the seeds are sought again around the shared direction, else the volume's own; 180 degrees: anywhere
    assert seed_side(0.3, 2.0, RVRules()) == 2.0 and seed_side(0.3, None, RVRules()) == 0.3
    assert seed_side(None, None, RVRules()) is None and seed_side(0.3, 2.0, RVRules(side_deg=180.0)) is None


def test_pool_thresholds_by_hand() -> None:
    # lung (-3) half the disc, wall (0) and blood (1.5) a quarter each: the two-class cut falls between lung
    # and wall (between-class variance 0.5 * 0.5 * (0.75 + 3)^2 = 3.52 against 0.75 * 0.25 * (1.5 + 2)^2 =
    # 2.30 for wall and lung against blood), so the wall counts as blood; the three-class upper cut does not
    values = np.repeat([-3.0, 0.0, 1.5], [200, 100, 100])
    assert -3.0 < pool_threshold(values, "otsu") < 0.0
    assert 0.0 < pool_threshold(values, "upper") < 1.5
    assert pool_threshold(np.repeat([0.0, 1.0], 50), "upper") == pool_threshold(np.repeat([0.0, 1.0], 50))
    with pytest.raises(ValueError, match="must be one of"):
        pool_threshold(values, "mean")
    with pytest.raises(ValueError, match="thresholds"):
        ScanRules(thresholds=("otsu", "median"))


def test_a_wall_as_bright_as_the_two_class_cut_takes_the_volume_to_the_upper_cut() -> None:
    """Dark lung fills most of the search disc, so the two-class cut lets the wall in and RV, wall and LV
    become one blob: the LV chain found at the three-class upper cut scores higher, and every rule then reads
    those pools."""
    yy, xx = np.mgrid[:128, :128]
    r_lv = np.hypot(yy - 64, xx - 72)
    gt = np.zeros((128, 128), np.uint8)
    gt[r_lv < 20] = 2
    gt[r_lv < 12] = 3
    gt[(np.hypot(yy - 64, xx - 58) < 30) & (r_lv >= 20) & (xx < 72)] = 1  # the RV touches the wall
    img = np.full((128, 128), -3.0)
    img[gt == 2] = 0.0
    img[(gt == 1) | (gt == 3)] = 1.5
    rng = np.random.default_rng(1)
    image = np.stack([img + rng.normal(0, 0.1, img.shape) for _ in range(5)], axis=-1)
    motion = np.zeros_like(image)
    motion[50:78, 58:86] = 1.0
    truth = np.stack([gt] * 5, axis=-1)
    otsu = scan_labels(image, motion, spacing=1.5, rules=ScanRules(thresholds=("otsu",)))
    merged = dice_per_class(otsu, truth, (1, 2, 3))
    chosen = dice_per_class(scan_labels(image, motion, spacing=1.5), truth, (1, 2, 3))
    assert merged[2] < 0.5 and merged[0] < 0.5, merged  # one blob: the LV swallows wall and RV
    assert chosen.min() > 0.9, chosen
