"""ED-ES label fusion (acdc_wsss.pseudo.rules.temporal): registration, carried labels, the fusion rule."""

from __future__ import annotations

import os

import numpy as np
import pytest
from scipy import ndimage as ndi

from acdc_wsss.metrics import dice_per_class
from acdc_wsss.pseudo.rows import SCAN_STEPS, context_scan_labels
from acdc_wsss.pseudo.rules import FusionRules, ScanRules, carry_labels, fuse_es_labels, temporal
from acdc_wsss.pseudo.rules.temporal import register_slice, warp_probabilities


def _heart(cy: float, cx: float, r_lv: float, wall: float) -> tuple[np.ndarray, np.ndarray]:
    """A smooth ``(96, 96)`` image and its labels: a bright LV pool of radius ``r_lv`` at ``(cy, cx)``, a
    dark wall ``wall`` px thick round it, a bright RV pool to its left."""
    yy, xx = np.mgrid[:96, :96]
    r = np.hypot(yy - cy, xx - cx)
    lab = np.zeros((96, 96), np.uint8)
    lab[r < r_lv + wall] = 2
    lab[r < r_lv] = 3
    lab[(np.hypot(yy - cy, xx - cx + r_lv + wall + 9) < 9) & (lab == 0)] = 1
    img = np.where((lab == 1) | (lab == 3), 1.5, np.where(lab == 2, 0.0, -0.5))
    return ndi.gaussian_filter(img, 1.0), lab


def _frames(slices: int = 3) -> tuple[np.ndarray, ...]:
    """ED and ES images and labels ``(96, 96, S)``: at ES the heart moved by (3, -2) px, its cavity
    shrank from 14 to 10 px and its wall thickened from 6 to 8 px."""
    ed_img, ed_lab = _heart(48, 50, 14, 6)
    es_img, es_lab = _heart(51, 48, 10, 8)
    stack = lambda a: np.stack([a] * slices, axis=-1)  # noqa: E731
    return stack(ed_img), stack(ed_lab), stack(es_img), stack(es_lab)


def test_registration_carries_the_ed_labels_onto_the_es_heart() -> None:
    ed_img, ed_lab, es_img, es_lab = _frames()
    as_is = dice_per_class(ed_lab, es_lab, (1, 2, 3))
    carried = carry_labels(ed_lab, ed_img, es_img, FusionRules())
    assert carried.shape == (4, *ed_lab.shape)
    assert np.allclose(carried.sum(0), 1.0, atol=1e-4)  # a distribution over the classes at every pixel
    dice = dice_per_class(carried.argmax(0), es_lab, (1, 2, 3))
    assert min(dice) > 0.75 and dice.mean() > as_is.mean() + 0.15, (dice, as_is)
    # a displacement by hand: d = +2 px in x reads the label two pixels to the right
    lab = np.zeros((8, 8), np.uint8)
    lab[3, 5] = 3
    onehot = np.stack([(lab == c).astype(np.float32) for c in range(4)])
    soft = warp_probabilities(onehot, np.stack([np.zeros((8, 8)), np.full((8, 8), 2.0)]))
    assert soft[3, 3, 3] == 1.0 and soft[3].sum() == 1.0 and soft[0, 3, 5] == 1.0


def test_registration_fields_are_kept_and_reused() -> None:
    ed_img, ed_lab, es_img, _ = _frames(2)
    fields: dict = {}
    first = carry_labels(ed_lab, ed_img, es_img, FusionRules(iterations=20), fields=fields)
    assert len(fields) == 2  # one registration per slice
    again = carry_labels(ed_lab, ed_img, es_img, FusionRules(iterations=20), fields=fields)
    assert len(fields) == 2 and np.array_equal(first, again)
    carry_labels(ed_lab, ed_img, es_img, FusionRules(iterations=30), fields=fields)
    assert len(fields) == 4  # another setting registers again
    shifted = register_slice(es_img[..., 0], ed_img[..., 0], FusionRules(iterations=20))
    assert shifted.shape == (2, 96, 96) and shifted.dtype == np.float32
    with pytest.raises(ValueError, match=r"labels \(96, 96, 2\), source image \(96, 96, 1\)"):
        carry_labels(ed_lab, ed_img[..., :1], es_img)


def test_slice_pairs_registered_side_by_side_give_the_fields_of_one_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each slice moved differently; the pairs registered on two threads (one SimpleITK thread each) give
    bit for bit the fields and labels of one pair at a time with SimpleITK's own threads."""
    hearts = [_heart(48 + dy, 50 - dx, 14 - dy, 6) for dy, dx in ((0, 0), (2, 1), (4, 3), (1, 4))]
    ed_img, ed_lab = (np.stack([h[k] for h in hearts[:1] * 4], axis=-1) for k in (0, 1))
    es_img = np.stack([h[0] for h in hearts], axis=-1)
    rules = FusionRules(iterations=30, levels=(2, 1))
    monkeypatch.setattr(temporal, "registration_workers", lambda: 1)
    alone: dict = {}
    one = carry_labels(ed_lab, ed_img, es_img, rules, fields=alone)
    monkeypatch.setattr(temporal, "registration_workers", lambda: 2)
    side: dict = {}
    two = carry_labels(ed_lab, ed_img, es_img, rules, fields=side)
    assert len(alone) == len(side) == 4 and alone.keys() == side.keys()
    assert all(np.array_equal(alone[k], side[k]) for k in alone) and np.array_equal(one, two)
    fields = [alone[k] for k in sorted(alone)]
    assert not np.array_equal(fields[0], fields[2])  # the slices did move differently
    single = register_slice(es_img[..., 2], ed_img[..., 2], rules, threads=1)
    assert np.array_equal(single, register_slice(es_img[..., 2], ed_img[..., 2], rules))
    monkeypatch.undo()
    assert 1 <= temporal.registration_workers() <= (os.cpu_count() or 1)


def test_a_coarse_level_first_carries_a_larger_motion() -> None:
    """The heart moved 12 px: one level of demons, whose forces come from the overlapping edges, falls
    short; a half-resolution level first brings it most of the way, and the full level finishes it."""
    ed_img, ed_lab = _heart(40, 40, 12, 6)
    es_img, es_lab = _heart(52, 46, 9, 7)
    ed_img, ed_lab, es_img, es_lab = (a[..., None] for a in (ed_img, ed_lab, es_img, es_lab))
    dice = {}
    for levels in ((1,), (2, 1)):
        rules = FusionRules(iterations=100, levels=levels)
        dice[levels] = dice_per_class(
            carry_labels(ed_lab, ed_img, es_img, rules).argmax(0), es_lab, (1, 2, 3)
        )
    assert dice[(2, 1)].mean() > 0.9 and dice[(2, 1)].mean() > dice[(1,)].mean() + 0.03, dice
    # the ES heart lies (12, 6) px from the ED one: the ES LV centre should read the ED LV centre
    one = register_slice(es_img[..., 0], ed_img[..., 0], FusionRules(iterations=100, levels=(1,)))
    three = register_slice(es_img[..., 0], ed_img[..., 0], FusionRules(iterations=100, levels=(4, 2, 1)))
    assert three.shape == one.shape == (2, 96, 96)
    assert np.allclose(three[:, 52, 46], (-12, -6), atol=1.0), three[:, 52, 46]
    assert not np.allclose(one[:, 52, 46], (-12, -6), atol=2.0), one[:, 52, 46]
    for bad in ((2,), (1, 2), (2, 2, 1), ()):
        with pytest.raises(ValueError, match=r"FusionRules\.levels"):
            FusionRules(levels=bad)


def test_fusion_rule_by_hand() -> None:
    own = np.array([[0, 1, 2, 3, 3, 2]], np.uint8)[..., None]
    other = np.array([[0, 1, 3, 3, 0, 1]], np.uint8)[..., None]
    carried = np.stack([(other == c).astype(np.float32) for c in range(4)])
    rules = FusionRules(label_sigma=0.0)
    # agreement kept; a disagreement goes to the lower class (background first): 2|3 -> 2, 3|0 -> 0, 2|1 -> 1
    assert fuse_es_labels(own, carried, rules=rules)[0, :, 0].tolist() == [0, 1, 2, 3, 0, 1]
    assert (
        fuse_es_labels(own, carried, rules=FusionRules(label_sigma=0.0, weight=0.0)).tolist() == own.tolist()
    )
    assert (
        fuse_es_labels(own, carried, rules=FusionRules(label_sigma=0.0, weight=1.0)).tolist()
        == other.tolist()
    )
    # a class the slice's tags say is absent stays background; a slice the rules left empty stays empty
    no_rv = fuse_es_labels(own, carried, np.array([[0, 1, 1]]), rules)
    assert no_rv[0, :, 0].tolist() == [0, 0, 2, 3, 0, 0]
    two = np.concatenate([own, np.zeros_like(own)], axis=-1)
    fused = fuse_es_labels(two, np.concatenate([carried, carried], axis=-1), rules=rules)
    assert not fused[..., 1].any()
    with pytest.raises(ValueError, match=r"FusionRules\.weight"):
        FusionRules(weight=1.5)
    with pytest.raises(ValueError, match="differ"):
        fuse_es_labels(own, carried[..., :0], rules=rules)


def test_es_step_fuses_the_es_frame_with_its_ed_frame() -> None:
    """Through the rows: the ``scan_es`` row of an ES context is the fusion of its own ``scan`` labels with
    its ED context's labels carried onto it; the ED frame is unchanged."""
    ed_img, _, es_img, es_lab = _frames()
    motion = np.zeros_like(ed_img)
    motion[30:70, 30:70] = 1.0
    ed = {"image": ed_img, "motion": motion, "tags": None, "spacing": 1.5}
    es = {"image": es_img, "motion": motion, "tags": None, "spacing": 1.5, "ed": ed}
    own = context_scan_labels(es, SCAN_STEPS["scan"])
    fused = context_scan_labels(es, SCAN_STEPS["scan_es"])
    carried = carry_labels(context_scan_labels(ed, SCAN_STEPS["scan"]), ed_img, es_img, region=own > 0)
    assert np.array_equal(fused, fuse_es_labels(own, carried))
    assert np.array_equal(
        context_scan_labels(ed, SCAN_STEPS["scan_es"]), context_scan_labels(ed, ScanRules())
    )
    assert len(es["_fields"]) == es_img.shape[-1]  # one registration per slice, kept in the context
    assert dice_per_class(fused, es_lab, (1, 2, 3)).min() > 0.5
