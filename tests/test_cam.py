"""CAM scoring and multi-scale, flip-averaged inference (acdc_wsss.cam_maps)."""

from __future__ import annotations

import pytest
import torch

from acdc_wsss.cam_maps import cam_labels, cam_scores, multiscale_cam
from acdc_wsss.labels import argmax_labels
from acdc_wsss.networks import CAMNet


@pytest.fixture(scope="module")
def net() -> CAMNet:
    torch.manual_seed(0)
    return CAMNet(3, width=0.125).eval()


def test_flip_geometry(net: CAMNet) -> None:
    x = torch.randn(2, 1, 64, 64)
    a = multiscale_cam(net, x, scales=(1.0, 1.5), flip=True)
    b = multiscale_cam(net, x.flip(-1), scales=(1.0, 1.5), flip=True)
    # averaging over the image and its flip makes the CAM of a flipped input the flipped CAM
    torch.testing.assert_close(b["scores"], a["scores"].flip(-1), rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(b["bg_prob"], a["bg_prob"].flip(-1), rtol=1e-3, atol=1e-4)
    single = multiscale_cam(net, x, scales=(1.0,), flip=False)
    assert not torch.allclose(single["scores"], a["scores"])


def test_scales_output_size_range_and_tags(net: CAMNet) -> None:
    x = torch.randn(3, 1, 100, 120)  # not a multiple of the stride
    tags = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    out = multiscale_cam(net, x, tags, scales=(0.5, 1.0, 2.0))
    assert out["scores"].shape == (3, 3, 100, 120) and out["bg_prob"].shape == (3, 1, 100, 120)
    assert float(out["scores"].min()) >= 0 and float(out["scores"].max()) <= 1
    assert float(out["scores"][0, 1].abs().max()) == 0 and float(out["scores"][1].abs().max()) == 0
    assert float(out["scores"][2].amax(dim=(1, 2)).min()) == pytest.approx(1.0, abs=1e-3)
    assert 0 <= float(out["bg_prob"].min()) and float(out["bg_prob"].max()) <= 1
    with pytest.raises(ValueError, match="at least one scale"):
        multiscale_cam(net, x, scales=())


def test_cam_labels_argmax_with_constant_background() -> None:
    scores = torch.tensor([[[[0.9, 0.1]], [[0.2, 0.3]]]])  # (1, 2 classes, 1, 2)
    assert cam_labels(scores, 0.25).tolist() == [[[1, 2]]]
    assert cam_labels(scores, 0.5).tolist() == [[[1, 0]]]
    maps = torch.zeros(1, 3, 2, 2)
    maps[0, 1, 0, 0] = 2.0
    s = cam_scores(maps, (4, 4), torch.tensor([[1.0, 1.0]]))
    assert s.shape == (1, 2, 4, 4) and float(s[0, 0].max()) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_argmax_labels_are_torch_argmax_ties_and_nan_included(dim: int) -> None:
    torch.manual_seed(0)
    ties = torch.randint(0, 3, (4, 5, 16, 16)).float()  # three values: most pixels hold a tie
    assert torch.equal(argmax_labels(ties, dim), ties.argmax(dim))
    assert argmax_labels(ties, dim).dtype == torch.int64
    x = torch.rand(4, 5, 16, 16)
    x[1, 2, 3, 4] = x[2, 3, 4, 5] = x[0, 0, 0, 0] = float("nan")
    assert torch.equal(argmax_labels(x, dim), x.argmax(dim))
    assert argmax_labels(torch.tensor([[0.2, 0.7, 0.7], [0.9, 0.1, 0.9]]), 1).tolist() == [1, 0]
