"""Stage 3's confidence-weighted loss and the self-training relabel step, by hand."""

from __future__ import annotations

import math

import numpy as np
import torch

from acdc_wsss.labels import IGNORE
from acdc_wsss.seg.rounds import relabel_volume
from acdc_wsss.seg.train import SegLoss


def test_weighted_cross_entropy_by_hand() -> None:
    logits = torch.zeros(1, 2, 1, 3)
    logits[0, 1, 0, 0] = math.log(3.0)  # p(1) = 3/4 at pixel 0; 1/2 elsewhere
    target = torch.tensor([[[1, 0, IGNORE]]])
    weight = torch.tensor([[[1.0, 0.5, 1.0]]])
    loss = SegLoss()({"logits": logits}, target, weight)
    want = (1.0 * -math.log(0.75) + 0.5 * -math.log(0.5)) / 1.5  # the ignored pixel counts nowhere
    assert abs(loss.item() - want) < 1e-6
    unweighted = SegLoss()({"logits": logits}, target)
    assert abs(unweighted.item() - (-math.log(0.75) - math.log(0.5)) / 2) < 1e-6
    zero_weight = SegLoss()({"logits": logits}, target, torch.tensor([[[0.0, 1.0, 1.0]]]))
    assert abs(zero_weight.item() + math.log(0.5)) < 1e-6


def test_dice_ce_adds_a_dice_term_that_falls_as_the_prediction_fits() -> None:
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, 1:3, 1:3] = 1
    good = torch.stack([(target == 0).float(), (target == 1).float()], 1) * 10
    bad = good.flip(1)
    loss = SegLoss(dice=True)
    assert loss({"logits": good}, target).item() < 0.01
    assert loss({"logits": bad}, target).item() > loss({"logits": good}, target).item() + 1.0
    assert loss({"logits": good}, target).item() >= SegLoss()({"logits": good}, target).item()


def test_relabel_fuses_gates_by_tags_and_scores_confidence() -> None:
    s, k, h, w = 2, 4, 8, 8
    probs = np.full((s, k, h, w), 0.1, np.float32)
    probs[:, 0] = 0.7  # the network says background everywhere ...
    probs[:, 3, 2:6, 2:6] = 0.8  # ... but LV in the middle
    probs[:, 0, 2:6, 2:6] = 0.0
    probs /= probs.sum(1, keepdims=True)
    stage2 = np.zeros((h, w, s), np.uint8)
    stage2[2:6, 2:6, :] = 3
    stage2[0, 0, :] = 1  # a stray RV pixel of the rules
    tags = np.array([[0, 0, 1], [0, 0, 0]], np.float32)  # slice 1 holds no LV
    labels, conf = relabel_volume(probs, stage2, tags, fuse=0.7)
    assert labels.shape == (h, w, s) and conf.shape == (h, w, s)
    assert (labels[2:6, 2:6, 0] == 3).all() and labels[..., 1].max() == 0 and labels[0, 0, 0] == 0
    assert conf[3, 3, 0] > 0.9 and 0 < conf[0, 0, 0] < conf[7, 7, 0]  # the disputed pixel is less sure
    tags_lv = np.array([[0, 0, 1], [0, 0, 1]], np.float32)
    probs_none = probs.copy()
    probs_none[1, 3] = 0  # the network finds no LV on slice 1 although the tags say it is there
    probs_none[1] /= probs_none[1].sum(0, keepdims=True)
    _, conf = relabel_volume(probs_none, np.zeros_like(stage2), tags_lv, fuse=0.0)
    assert conf[..., 1].max() == 0
