"""Metrics against hand-computed values (acdc_wsss.metrics)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from acdc_wsss.metrics import dice_per_class


def test_dice_hand_computed() -> None:
    pred = np.array([[1, 1, 2, 0], [3, 3, 3, 0]])
    ref = np.array([[1, 0, 2, 2], [3, 3, 0, 0]])
    # class 1: |P|=2 |R|=1 overlap 1 -> 2/3; class 2: |P|=1 |R|=2 overlap 1 -> 2/3; class 3: 3, 2, 2 -> 4/5
    np.testing.assert_allclose(dice_per_class(pred, ref, (1, 2, 3)), [2 / 3, 2 / 3, 4 / 5])
    np.testing.assert_allclose(dice_per_class(torch.as_tensor(pred), torch.as_tensor(pred), (1, 3)), [1, 1])


def test_dice_absent_class_is_nan_and_shapes_must_match() -> None:
    d = dice_per_class(np.zeros((2, 2)), np.zeros((2, 2)), (1,))
    assert np.isnan(d[0])
    assert dice_per_class(np.ones((2, 2)), np.zeros((2, 2)), (1,))[0] == 0.0
    with pytest.raises(ValueError, match="differ in shape"):
        dice_per_class(np.zeros((2, 2)), np.zeros((2, 3)), (1,))


def test_pooled_dice_and_iou_hand_computed() -> None:
    from acdc_wsss.metrics import DiceAccumulator

    acc = DiceAccumulator([1, 2])
    acc.update(np.array([[1, 1, 0]]), np.array([[1, 0, 0]]))  # class 1: I=1, |P|=2, |R|=1
    acc.update(np.array([[2, 0, 1]]), np.array([[2, 2, 1]]))  # class 1: I=1, 1, 1; class 2: I=1, |P|=1, |R|=2
    # class 1 pooled: I=2, |P|+|R|=5 -> Dice 4/5, IoU 2/3; class 2: I=1, 3 -> Dice 2/3, IoU 1/2
    np.testing.assert_allclose(acc.compute(), [4 / 5, 2 / 3])
    np.testing.assert_allclose(acc.compute_iou(), [2 / 3, 1 / 2])
    first, second = DiceAccumulator([1, 2]), DiceAccumulator([1, 2])  # the same maps, summed apart
    first.update(np.array([[1, 1, 0]]), np.array([[1, 0, 0]]))
    second.update(np.array([[2, 0, 1]]), np.array([[2, 2, 1]]))
    first.merge(second)
    np.testing.assert_allclose(first.compute(), [4 / 5, 2 / 3])
    with pytest.raises(ValueError, match="labels"):
        first.merge(DiceAccumulator([1]))


def test_hd95_against_hand_computed_cases() -> None:
    from acdc_wsss.metrics import hd95_per_class

    ref = np.zeros((20, 20, 3), np.uint8)
    ref[5:10, 5:10, :] = 1
    shifted = np.roll(ref, 3, axis=0)  # every surface point moves 3 voxels along the first axis
    assert hd95_per_class(shifted, ref, (1,), (2.0, 1.0, 1.0))[0] == pytest.approx(6.0)  # 3 voxels x 2 mm
    assert hd95_per_class(shifted, ref, (1,), (1.0, 1.0, 1.0))[0] == pytest.approx(3.0)
    assert hd95_per_class(ref, ref, (1,), (1.0, 1.0, 1.0))[0] == 0.0
    assert np.isnan(hd95_per_class(np.zeros_like(ref), ref, (1, 2), (1.0, 1.0, 1.0))).all()
