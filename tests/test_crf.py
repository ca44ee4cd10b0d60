"""Dense CRF (acdc_wsss.crf) against a synthetic image."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from acdc_wsss.crf import CRF_MRI, CRF_RGB, dense_crf
from acdc_wsss.metrics import dice_per_class


def _disc_image() -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:64, :64]
    gt = (np.hypot(yy - 32, xx - 30) < 14).astype(np.uint8)
    img = gt * 2.0 + np.random.default_rng(0).normal(0, 0.2, gt.shape)
    return img, gt


def test_crf_raises_dice_of_a_blurred_mask() -> None:
    img, gt = _disc_image()
    blurred = ndi.gaussian_filter(gt.astype(float), 6)  # a soft, too-wide guess of the disc
    fg = np.clip(blurred / blurred.max(), 0, 1) * 0.8 + 0.1
    probs = np.stack([1 - fg, fg])
    before = dice_per_class(probs.argmax(0).astype(np.uint8), gt, (1,))[0]
    q = dense_crf(img, probs, CRF_MRI)
    after = dice_per_class(q.argmax(0).astype(np.uint8), gt, (1,))[0]
    assert q.shape == probs.shape and np.allclose(q.sum(0), 1, atol=1e-3)
    assert after > before + 0.05 and after > 0.9, (before, after)


def test_crf_rgb_and_size_check() -> None:
    img, gt = _disc_image()
    rgb = np.repeat((np.clip(img, 0, 2) * 120).astype(np.uint8)[..., None], 3, axis=2)
    probs = np.stack([1.0 - gt * 0.6, 0.2 + gt * 0.6])
    q = dense_crf(rgb, probs, CRF_RGB)
    assert dice_per_class(q.argmax(0).astype(np.uint8), gt, (1,))[0] > 0.9
    with pytest.raises(ValueError, match="differ in size"):
        dense_crf(img[:10], probs, CRF_MRI)
