"""DeepLab-v2: output shape and stride for every depth, ASPP as a sum, multi-scale max, head parameters."""

from __future__ import annotations

import pytest
import torch

from acdc_wsss.networks import ASPP, DeepLabV2


@pytest.mark.parametrize("depth", [18, 34, 50, 101])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_output_shape_and_stride(depth: int, in_channels: int) -> None:
    net = DeepLabV2(4, f"resnet{depth}", in_channels, width=0.125).eval()
    x = torch.randn(2, in_channels, 64, 48)
    with torch.no_grad():
        feats = net.backbone(x)["high"]
        out = net(x)["logits"]
    assert feats.shape[2:] == (64 // 8, 48 // 8)  # output stride 8
    assert out.shape == (2, 4, 64, 48)


def test_aspp_is_the_sum_of_its_dilated_branches() -> None:
    aspp = ASPP(8, 3, (1, 2)).eval()
    x = torch.randn(1, 8, 10, 10)
    by_hand = sum(b(x) for b in aspp.branches)
    assert torch.allclose(aspp(x), by_hand)
    assert [b.dilation for b in aspp.branches] == [(1, 1), (2, 2)]
    default = ASPP(8, 3)
    assert [b.dilation[0] for b in default.branches] == [6, 12, 18, 24]


def test_multiscale_returns_the_max_and_each_scale_in_training() -> None:
    net = DeepLabV2(3, "resnet18", 1, width=0.125, multiscale=True)
    x = torch.randn(2, 1, 64, 64)
    out = net.train()(x)
    assert out["scales"].shape == (3, 2, 3, 64, 64)
    assert torch.equal(out["logits"], out["scales"].max(dim=0).values)
    assert "scales" not in net.eval()(x)


def test_head_parameters_are_the_aspp_and_bad_class_count_refused() -> None:
    net = DeepLabV2(4, "resnet18", 1, width=0.125)
    assert {id(p) for p in net.new_parameters()} == {id(p) for p in net.aspp.parameters()}
    with pytest.raises(ValueError, match="num_classes"):
        DeepLabV2(1)
