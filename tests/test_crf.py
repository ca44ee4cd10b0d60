"""Dense CRF (acdc_wsss.crf) against a synthetic image."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from acdc_wsss.crf import CRF_MRI, CRF_RGB, CRF_SEG, dense_crf, seg_kernels
from acdc_wsss.metrics import dice_per_class


def _disc_image() -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:64, :64]
    gt = (np.hypot(yy - 32, xx - 30) < 14).astype(np.uint8)
    img = gt * 2.0 + np.random.default_rng(0).normal(0, 0.2, gt.shape)
    return img, gt


@pytest.mark.parametrize("params", [CRF_MRI, CRF_SEG], ids=["rules", "network"])
def test_crf_raises_dice_of_a_blurred_mask(params) -> None:
    img, gt = _disc_image()
    blurred = ndi.gaussian_filter(gt.astype(float), 6)  # a soft, too-wide guess of the disc
    fg = np.clip(blurred / blurred.max(), 0, 1) * 0.8 + 0.1
    probs = np.stack([1 - fg, fg])
    before = dice_per_class(probs.argmax(0).astype(np.uint8), gt, (1,))[0]
    q = dense_crf(img, probs, params)
    after = dice_per_class(q.argmax(0).astype(np.uint8), gt, (1,))[0]
    assert q.shape == probs.shape and np.allclose(q.sum(0), 1, atol=1e-3)
    assert after > before + 0.05 and after > 0.9, (before, after)


def test_the_inference_crf_is_weaker_and_tighter_than_the_rules_one() -> None:
    k = seg_kernels(2.0)
    assert (k.bilateral_weight, k.gauss_weight, k.bilateral_xy, k.bilateral_intensity) == (2.0, 1.0, 8.0, 0.3)
    assert CRF_SEG == seg_kernels(1.0) and CRF_SEG.bilateral_weight < CRF_MRI.bilateral_weight
    assert CRF_SEG.gauss_weight < CRF_MRI.gauss_weight
    # a fairly sure network, two pixels too wide: the weaker CRF takes back fewer of them
    img, gt = _disc_image()
    fg = np.where(ndi.binary_dilation(gt, iterations=2), 0.7, 0.05)
    probs = np.stack([1 - fg, fg])
    moved = {
        p: int((dense_crf(img, probs, p).argmax(0) != probs.argmax(0)).sum()) for p in (CRF_SEG, CRF_MRI)
    }
    assert 0 < moved[CRF_SEG] < moved[CRF_MRI], moved
    with pytest.raises(ValueError, match="strength"):
        seg_kernels(0)


def test_crf_rgb_and_size_check() -> None:
    img, gt = _disc_image()
    rgb = np.repeat((np.clip(img, 0, 2) * 120).astype(np.uint8)[..., None], 3, axis=2)
    probs = np.stack([1.0 - gt * 0.6, 0.2 + gt * 0.6])
    q = dense_crf(rgb, probs, CRF_RGB)
    assert dice_per_class(q.argmax(0).astype(np.uint8), gt, (1,))[0] > 0.9
    with pytest.raises(ValueError, match="differ in size"):
        dense_crf(img[:10], probs, CRF_MRI)


def test_rgb_crf_labels_run_over_the_scored_classes_only() -> None:
    """The photo CRF over the background and the classes with a score (VOC's tags) gives the labels of the
    CRF over all 21 channels, in each class's own number; a slice without any score stays background."""
    from acdc_wsss.pseudo.rules import rgb_crf_labels

    yy, xx = np.mgrid[:64, :80]
    cat, person = np.hypot(yy - 30, xx - 22) < 12, (np.abs(yy - 34) < 16) & (np.abs(xx - 58) < 9)
    rgb = np.zeros((64, 80, 3, 2), np.uint8)
    rgb[..., 0] = np.where(cat[..., None], [200, 120, 40], np.where(person[..., None], [40, 90, 210], 90))
    rgb[..., 0] = np.clip(rgb[..., 0] + np.random.default_rng(0).normal(0, 12, rgb[..., 0].shape), 0, 255)
    scores = np.zeros((20, 64, 80, 2), np.float32)  # VOC's 20 classes; the photo's tags: cat (8), person (15)
    scores[7, ..., 0] = np.clip(ndi.gaussian_filter(cat.astype(float), 5) * 1.3, 0, 1)
    scores[14, ..., 0] = np.clip(ndi.gaussian_filter(person.astype(float), 5) * 1.3, 0, 1)
    labels = rgb_crf_labels(rgb, scores, 0.3)
    full = dense_crf(
        rgb[..., 0], np.concatenate([np.full((1, 64, 80), 0.3, np.float32), scores[..., 0]]), CRF_RGB
    )
    assert labels.shape == (64, 80, 2) and labels.dtype == np.uint8
    assert set(np.unique(labels[..., 0]).tolist()) == {0, 8, 15} and not labels[..., 1].any()
    assert (labels[..., 0] == full.argmax(0)).mean() > 0.999
    assert dice_per_class(labels[..., 0], cat * 8 + person * 15, (8, 15)).min() > 0.8
