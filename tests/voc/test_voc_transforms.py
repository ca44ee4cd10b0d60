"""VOC RGB transforms: loading, normalisation by hand, resize, training crops with void padding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from voc_adapter.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ShortSideResized,
    voc_eval_transforms,
    voc_train_transforms,
)


@pytest.fixture()
def pair(tmp_path: Path) -> dict[str, str]:
    img = np.zeros((40, 60, 3), np.uint8)
    img[..., 0] = 255  # pure red
    mask = np.zeros((40, 60), np.uint8)
    mask[10:30, 5:20] = 15  # a person on the left
    mask[0, :] = 255
    Image.fromarray(img).save(tmp_path / "a.jpg", quality=100)
    pal = Image.fromarray(mask, mode="P")
    pal.putpalette([0, 0, 0, 128, 0, 0] * 128)
    pal.save(tmp_path / "a.png")
    return {"image": str(tmp_path / "a.jpg"), "label": str(tmp_path / "a.png")}


def test_eval_chain_normalises_with_imagenet_statistics(pair: dict[str, str]) -> None:
    d = voc_eval_transforms()(dict(pair))
    image, label = torch.as_tensor(d["image"]), torch.as_tensor(d["label"])
    assert image.shape == (3, 40, 60) and label.shape == (1, 40, 60)
    expected = [(1 - IMAGENET_MEAN[0]) / IMAGENET_STD[0], -IMAGENET_MEAN[1] / IMAGENET_STD[1]]
    assert image[0, 20, 30].item() == pytest.approx(expected[0], abs=0.02)  # JPEG rounding
    assert image[1, 20, 30].item() == pytest.approx(expected[1], abs=0.02)
    assert set(torch.unique(label).tolist()) == {0, 15, 255}  # palette indices, not colours


def test_short_side_resize() -> None:
    d = ShortSideResized(20)({"image": torch.zeros(3, 40, 60), "label": torch.zeros(1, 40, 60)})
    assert d["image"].shape == (3, 20, 30) and d["label"].shape == (1, 20, 30)


def test_training_crops_pad_with_void_and_keep_image_and_label_together(pair: dict[str, str]) -> None:
    chain = voc_train_transforms(crop=64, scale=(1.0, 1.0), jitter=0.0)
    chain.set_random_state(seed=0)
    flips = set()
    for _ in range(6):
        d = chain(dict(pair))
        image, label = torch.as_tensor(d["image"]), torch.as_tensor(d["label"])[0]
        assert image.shape == (3, 64, 64) and label.shape == (64, 64)
        pad = label == 255
        assert pad.sum() >= 64 * 64 - 40 * 60  # the 40x60 image padded to 64x64 with void
        person = (label == 15).nonzero().float().mean(0)[1].item()
        red = image[0] > 1.0  # where the image is, not padding
        centre = red.nonzero().float().mean(0)[1].item()
        flips.add(person < centre)  # the person stays on the image's left, or both are flipped
        assert ((label == 15) & ~red).sum() == 0
    assert flips == {True, False}
