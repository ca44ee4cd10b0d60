"""Backbones and the CAM classifier (acdc_wsss.networks)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from acdc_wsss.networks import CAMNet, DilatedResNet, WideResNet38, build_backbone, load_pretrained


@pytest.mark.parametrize("depth", [18, 34, 50, 101])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_dilated_resnet_stride_8(depth: int, in_channels: int) -> None:
    net = DilatedResNet(depth, in_channels, width=0.25).eval()
    out = net(torch.zeros(1, in_channels, 64, 96))
    assert {k: tuple(v.shape[2:]) for k, v in out.items()} == {
        "low": (8, 12),
        "mid": (8, 12),
        "high": (8, 12),
        "low_act": (8, 12),
        "mid_act": (8, 12),
    }
    assert {k: v.shape[1] for k, v in out.items()} == net.channels
    assert out["low_act"] is out["low"] and out["mid_act"] is out["mid"]  # stages end with their ReLU


def test_resnet38_stride_and_reference_names() -> None:
    net = WideResNet38(in_channels=3).eval()
    with torch.no_grad():
        out = net(torch.zeros(1, 3, 32, 40))
    assert {k: tuple(v.shape[1:]) for k, v in out.items()} == {
        "low": (512, 4, 5),
        "mid": (1024, 4, 5),
        "high": (4096, 4, 5),
        "low_act": (512, 4, 5),
        "mid_act": (1024, 4, 5),
    }
    keys = net.state_dict().keys()
    assert {"conv1a.weight", "b2.conv_branch1.weight", "b4_5.bn_branch2b1.running_mean", "bn7.weight"} <= set(
        keys
    )
    assert "b6.conv_branch2b2.weight" in keys and "b5_2.conv_branch1.weight" not in keys


def test_cam_net_outputs_and_pcm() -> None:
    torch.manual_seed(0)
    net = CAMNet(num_classes=3, width=0.25).eval()
    x = torch.randn(2, 1, 128, 128)
    out = net(x)
    assert out["logits"].shape == (2, 3) and out["cam"].shape == out["pcm"].shape == (2, 4, 16, 16)
    # logits are the mean of the foreground channels of the raw CAM
    torch.testing.assert_close(out["logits"], out["cam"][:, 1:].mean(dim=(2, 3)))
    # PCM output = CAM + CAM . A, A >= 0 normalised over source pixels: every revised pixel is a convex
    # combination of the CAM's pixels, so it lies within each channel's range and is not the CAM itself
    revised, cam = out["pcm"] - out["cam"], out["cam"]
    assert (revised.amin(dim=(2, 3)) >= cam.amin(dim=(2, 3)) - 1e-4).all()
    assert (revised.amax(dim=(2, 3)) <= cam.amax(dim=(2, 3)) + 1e-4).all()
    assert not torch.allclose(revised, cam)
    with torch.no_grad():  # inference revises in place: the same values, bit for bit
        assert torch.equal(net(x)["pcm"], out["pcm"])
    plain = CAMNet(num_classes=5, width=0.25, pcm=False)
    o = plain(x)
    assert o["cam"].shape[1] == 6 and torch.equal(o["pcm"], o["cam"])
    assert {id(p) for p in net.new_parameters()}.isdisjoint({id(p) for p in net.backbone.parameters()})


def test_pretrained_loads_strictly_and_lists_bad_keys(tmp_path: Path) -> None:
    src = build_backbone("resnet18", 1, 0.25)
    path = tmp_path / "w.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, path)
    net = CAMNet(3, "resnet18", 1, 0.25, pretrained=path)
    for k, v in src.state_dict().items():
        assert torch.equal(net.backbone.state_dict()[k], v)
    wrong = tmp_path / "wrong.pt"
    state = dict(src.state_dict())
    state.pop("stem.0.weight")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, wrong)
    with pytest.raises(ValueError) as e:
        load_pretrained(build_backbone("resnet18", 1, 0.25), wrong)
    assert "missing keys: stem.0.weight" in str(e.value) and "unexpected keys: extra.weight" in str(e.value)
    with pytest.raises(ValueError, match="shape mismatches"):
        load_pretrained(build_backbone("resnet18", 1, 0.5), path)
    with pytest.raises(FileNotFoundError, match="local file"):
        load_pretrained(src, tmp_path / "none.pt")
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("vgg16")
