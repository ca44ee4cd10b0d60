"""L2G building blocks on hand-made inputs (acdc_wsss.l2g.core)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from acdc_wsss.l2g.core import (
    attention_loss,
    attention_target,
    background_loss,
    classification_loss,
    crop_views,
    pooled_logits,
    roi_align,
    smooth_saliency,
    view_boxes,
)


def test_view_boxes_corners_exact_and_inside() -> None:
    g = torch.Generator().manual_seed(0)
    boxes = view_boxes(100, 60, (0.5, 0.25), num_views=40, generator=g)  # H=100, W=60 -> views 50 x 15
    assert boxes[:4].tolist() == [[0, 0, 15, 50], [45, 0, 60, 50], [0, 50, 15, 100], [45, 50, 60, 100]]
    assert ((boxes[:, 2] - boxes[:, 0]) == 15).all() and ((boxes[:, 3] - boxes[:, 1]) == 50).all()
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 60).all() and (boxes[:, 3] <= 100).all()
    assert len({tuple(b) for b in boxes[4:].tolist()}) > 10  # random views differ
    again = view_boxes(100, 60, (0.5, 0.25), num_views=40, generator=torch.Generator().manual_seed(0))
    assert torch.equal(boxes, again)
    with pytest.raises(ValueError, match="ratio"):
        view_boxes(10, 10, 1.5, 4)


def test_crop_views_cuts_the_boxes() -> None:
    img = torch.arange(2 * 1 * 6 * 8, dtype=torch.float32).reshape(2, 1, 6, 8)
    boxes = torch.tensor([[[0, 0, 4, 3], [4, 3, 8, 6]], [[2, 1, 6, 4], [0, 3, 4, 6]]], dtype=torch.float32)
    crops = crop_views(img, boxes)
    assert crops.shape == (4, 1, 3, 4)
    assert torch.equal(crops[1], img[0, :, 3:6, 4:8]) and torch.equal(crops[2], img[1, :, 1:4, 2:6])
    with pytest.raises(ValueError, match="one size"):
        crop_views(img, torch.tensor([[[0, 0, 4, 3], [0, 0, 2, 2]]] * 2, dtype=torch.float32))


def test_roi_align_brings_a_blob_into_crop_coordinates() -> None:
    # a 16x16 map at stride 8 (128 px input) with a single hot cell at row 5, column 9
    feat = torch.zeros(1, 2, 16, 16)
    feat[0, 1, 5, 9] = 1.0
    # an 80x80 px view whose top-left is at x=40, y=16 (cells: x 5..15, y 2..12)
    boxes = torch.tensor([[[40.0, 16.0, 120.0, 96.0]]])
    out = roi_align(feat, boxes, (10, 10), stride=8)
    assert out.shape == (1, 2, 10, 10)
    # the hot cell sits at crop cell (row 5-2=3, column 9-5=4) exactly (bins coincide with cells)
    assert out[0, 1, 3, 4] == pytest.approx(1.0) and float(out[0, 1].sum()) == pytest.approx(1.0)
    assert float(out[0, 0].abs().sum()) == 0
    # a whole-image box at the map's own size is the identity
    ident = roi_align(torch.randn(2, 3, 16, 16), torch.tensor([[[0.0, 0, 128, 128]]] * 2), (16, 16), 8)
    assert ident.shape == (2, 3, 16, 16)
    full = torch.randn(1, 3, 16, 16)
    torch.testing.assert_close(roi_align(full, torch.tensor([[[0.0, 0, 128, 128]]]), (16, 16), 8), full)


def test_attention_target_hand_made() -> None:
    # background + 2 classes over 4 pixels
    maps = torch.tensor([[[[0.2, 0.0, -1.0, 0.0]], [[0.5, 0.05, -1.0, 1.0]], [[0.5, 2.0, -1.0, 0.0]]]])
    tags = torch.tensor([[1.0, 1.0]])
    # normalised: bg [1, 0, 0, 0], c1 [.5, .05, 0, 1], c2 [.25, 1, 0, 0]
    # argmax: px0 background, px1 class 2, px2 nothing above the threshold, px3 class 1
    t = attention_target(maps, tags, threshold=0.1)
    assert t[0, :, 0].tolist() == [[1, 0, 0, 0], [0, 0, 0, 1], [0, 1, 0, 0]]
    # class 2 absent from the tag: pixel 1 falls back to class 1, whose 0.05 is under the threshold
    t = attention_target(maps, torch.tensor([[1.0, 0.0]]), threshold=0.1)
    assert t[0, :, 0].tolist() == [[1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]]
    # saliency scales foreground by S and background by 1 - S
    s = torch.tensor([[[[0.25, 0.5, 1.0, 0.75]]]])
    t = attention_target(maps, tags, saliency=s, threshold=0.1)
    assert t[0, :, 0].tolist() == [[0.75, 0, 0, 0], [0, 0, 0, 0.75], [0, 0.5, 0, 0]]


def test_loss_values_hand_computed() -> None:
    # softmax of equal logits over 2 channels is 0.5 everywhere; target one-hot on channel 1 of one pixel
    crops = torch.zeros(1, 2, 1, 1)
    target = torch.tensor([[[[0.0]], [[1.0]]]])
    assert float(attention_loss(crops, target, weight=10.0)) == pytest.approx(10 * (0.25 + 0.25) / 2)
    logits = torch.tensor([[0.0, 2.0]])
    tags = torch.tensor([[1.0, 0.0]])
    expected = (math.log(1 + math.exp(-0.0)) + math.log(1 + math.exp(2.0))) / 2
    assert float(classification_loss(logits, tags)) == pytest.approx(expected, rel=1e-6)
    # background loss with saliency: softmax bg = 0.5 vs target 1 - S
    s = torch.tensor([[[[1.0, 0.0]]]])
    maps = torch.zeros(1, 2, 1, 2)
    assert float(background_loss(maps, torch.ones(1, 1), s)) == pytest.approx((0.25 + 0.25) / 2)
    # without saliency: target = 1 - max-normalised tagged score: pixel scores [1, 0] -> target [0, 1]
    maps = torch.tensor([[[[0.0, 0.0]], [[3.0, 0.0]]]])
    p_bg = torch.softmax(maps, dim=1)[0, 0, 0]
    expected = F.mse_loss(p_bg, torch.tensor([0.0, 1.0]))
    assert float(background_loss(maps, torch.ones(1, 1))) == pytest.approx(float(expected), rel=1e-5)


def test_smooth_saliency_fills_a_ring_and_keeps_the_peak() -> None:
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    r = ((yy - 16) ** 2 + (xx - 16) ** 2).sqrt()
    ring = ((r > 6) & (r < 9)).float()[None, None] * 0.8  # a moving wall around a still blood pool
    out = smooth_saliency(ring, sigma=3.0)
    assert out.shape == ring.shape and float(out.max()) == pytest.approx(0.8, rel=1e-5)
    assert float(out[0, 0, 16, 16]) > 0.2 > float(ring[0, 0, 16, 16])  # the chamber fills in
    assert float(out[0, 0, 0, 0]) < 0.05  # far away stays low
    assert torch.equal(smooth_saliency(ring, 0.0), ring)


def test_pooled_logits_hand_computed() -> None:
    cams = torch.zeros(1, 2, 2, 2)
    cams[0, 1] = torch.tensor([[4.0, 0.0], [0.0, 0.0]])
    torch.testing.assert_close(pooled_logits(cams), torch.tensor([[1.0]]))  # plain mean
    w = torch.tensor([[[[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.0] * 4, [0.0] * 4]]])  # (1, 1, 4, 4)
    # weights pooled to the 2x2 CAM: [[1, 0], [0, 0]] + floor 0.05 -> (4 * 1.05) / (1.05 + 3 * 0.05)
    expected = 4 * 1.05 / (1.05 + 0.15)
    torch.testing.assert_close(pooled_logits(cams, w, floor=0.05), torch.tensor([[expected]]))
