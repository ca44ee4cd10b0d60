"""Array and dictionary transforms (acdc_wsss.data.transforms) on hand-made inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from acdc_wsss.data.transforms import (
    ClipZScoreIntensity,
    ClipZScoreIntensityd,
    CropPadAroundCentre,
    CropPadAroundCentred,
    HeartCentre,
    MotionMap,
    MotionMapd,
    SliceTags,
    SliceTagsd,
)


def test_clip_zscore_hand_computed() -> None:
    x = torch.tensor([0.0, 1.0, 2.0, 3.0, 100.0]).reshape(1, 5)
    out = ClipZScoreIntensity(lower=0, upper=75)(x)
    # 75th percentile of [0, 1, 2, 3, 100] is 3 -> [0, 1, 2, 3, 3]: mean 1.8, std sqrt(1.36)
    expected = (np.array([0, 1, 2, 3, 3]) - 1.8) / np.sqrt(1.36)
    np.testing.assert_allclose(out.numpy()[0], expected, rtol=1e-5)
    d = ClipZScoreIntensityd("image", lower=0, upper=75)({"image": x, "other": 1})
    np.testing.assert_allclose(d["image"].numpy()[0], expected, rtol=1e-5)
    assert ClipZScoreIntensity()(torch.full((1, 4, 4), 5.0)).abs().max() == 0  # constant volume -> zeros
    with pytest.raises(ValueError, match="percentiles"):
        ClipZScoreIntensity(lower=60, upper=40)


def _volume(shape=(1, 10, 8, 2), spacing=(1.5, 2.0, 8.0)) -> MetaTensor:
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [10.0, -20.0, 5.0]
    return MetaTensor(torch.arange(np.prod(shape), dtype=torch.float32).reshape(shape) + 1, affine=affine)


@pytest.mark.parametrize(
    ("centre", "start"),
    [((1.0, 6.0), (0, 5)), ((0.0, 0.0), (-1, -1)), ((4.5, 3.5), (3, 2)), (None, (3, 2))],
)
def test_crop_pad_window_affine_and_inverse(centre, start) -> None:
    img = _volume()
    t = CropPadAroundCentre(roi_size=(4, 4))
    out = t(img.clone(), centre=centre)
    assert out.shape == (1, 4, 4, 2)
    # expected content: the 4x4 window starting at `start`, padded with the image minimum (1.0)
    ref = np.full((1, 4, 4, 2), 1.0, np.float32)
    src = img.numpy()
    for i in range(4):
        for j in range(4):
            x, y = start[0] + i, start[1] + j
            if 0 <= x < 10 and 0 <= y < 8:
                ref[:, i, j] = src[:, x, y]
    np.testing.assert_array_equal(out.numpy(), ref)
    # the affine moves the origin to the window start (voxel units times spacing)
    expected_affine = img.affine.numpy().copy()
    expected_affine[:3, 3] += np.array([1.5 * start[0], 2.0 * start[1], 0.0])
    np.testing.assert_allclose(out.affine.numpy(), expected_affine, atol=1e-9)
    back = t.inverse(out)
    assert back.shape == img.shape
    np.testing.assert_allclose(back.affine.numpy(), img.affine.numpy(), atol=1e-9)
    inside = np.zeros((10, 8), bool)
    inside[max(start[0], 0) : start[0] + 4, max(start[1], 0) : start[1] + 4] = True
    np.testing.assert_array_equal(back.numpy()[:, inside], src[:, inside])
    assert (back.numpy()[:, ~inside] == 0).all()


def test_crop_pad_dict_uses_centre_key_and_pad_values() -> None:
    img, lab = _volume(), _volume() * 0 + 3
    t = CropPadAroundCentred(["image", "label"], roi_size=(4, 4), pad_value=(None, 0.0))
    d = t({"image": img, "label": lab, "centre": np.array([0.0, 0.0])})
    assert d["image"][0, 0, 0, 0] == 1.0 and d["label"][0, 0, 0, 0] == 0.0  # padded corner
    assert d["label"][0, 1, 1, 0] == 3.0
    inv = t.inverse(d)
    assert inv["image"].shape == img.shape and inv["label"].shape == lab.shape
    with pytest.raises(ValueError, match="one value per key"):
        CropPadAroundCentred(["image", "label"], pad_value=(0.0,))
    with pytest.raises(ValueError, match="roi_size"):
        CropPadAroundCentre(roi_size=(4, 4, 4))


def test_slice_tags_hand_counts() -> None:
    lab = torch.zeros(1, 3, 3, 3)
    lab[0, 0, 0, 0], lab[0, 2, 2, 0], lab[0, 1, 1, 2] = 1, 3, 2
    expected = [[1, 0, 1], [0, 0, 0], [0, 1, 0]]
    np.testing.assert_array_equal(SliceTags(3)(lab).numpy(), expected)
    d = SliceTagsd("label", num_classes=3)({"label": lab})
    np.testing.assert_array_equal(d["tags"].numpy(), expected)
    assert "tags" not in SliceTagsd("label", num_classes=3)({"image": lab})  # no label, no tags
    np.testing.assert_array_equal(SliceTags(2)(lab).numpy(), [[1, 0], [0, 0], [0, 1]])


def _blob(shape, centre, sigma) -> np.ndarray:
    yy, xx = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    return np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * sigma**2))


def test_motion_map_and_heart_centre() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(1, 128, 128, 6)).astype(np.float32)
    b = a.copy()
    b[0] += 3 * _blob((128, 128), (40, 70), 6)[..., None]  # what moves: a blob at (40, 70)
    b[0] += 1.2 * _blob((128, 128), (100, 20), 4)[..., None]  # a smaller, weaker change elsewhere
    m = MotionMap(sigma=2)(torch.as_tensor(a), torch.as_tensor(b))
    assert m.shape == a.shape and float(m.max()) == pytest.approx(1.0)
    assert float(m[0, 40, 70].mean()) > 0.9 and float(m[0, 5, 120].mean()) < 0.01
    centre = HeartCentre(sigma=8)(m)
    assert np.abs(centre - [40, 70]).max() < 1.5
    assert HeartCentre()(torch.zeros(1, 16, 16, 2)) is None
    assert float(MotionMap()(torch.as_tensor(a), torch.as_tensor(a)).abs().max()) == 0
    with pytest.raises(ValueError, match="one grid"):
        MotionMap()(torch.zeros(1, 4, 4, 2), torch.zeros(1, 4, 5, 2))
    d = MotionMapd("image")({"image": torch.as_tensor(a)})  # no pair: an all-zero map
    assert d["motion"].shape == a.shape and float(d["motion"].abs().max()) == 0
