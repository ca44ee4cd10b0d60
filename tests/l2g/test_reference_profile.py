"""The L2G reference profile pinned on a tiny fixed batch: which loss reaches which network, the attention
threshold, the map pooled into the logits, frozen parameters, the activated PCM features, CAM inference
and ResNet-38 weights shaped like a converted ImageNet file."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from acdc_wsss.cam_maps import multiscale_cam
from acdc_wsss.l2g import L2GConfig, L2GModel, build_l2g_optimizer, make_step
from acdc_wsss.l2g.core import attention_target
from acdc_wsss.networks import CAMNet
from acdc_wsss.networks.backbones import WideResNet38, load_pretrained

ROOT = Path(__file__).resolve().parents[2]
#: The reference's objective (voc_adapter/configs/l2g_reference.json) on a CPU-sized MRI network.
REFERENCE = {"global_cls": False, "bg_weight": 0.0, "att_threshold": 0.001, "saliency_pool": False}
TINY = {"width": 0.125, "num_views": 4, "saliency_key": None, "device": "cpu", "batch_size": 2}


def _batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"image": torch.randn(2, 1, 64, 64, generator=g), "tags": torch.tensor([[1.0, 0, 1], [0, 1, 1]])}


def _grads(settings: dict, batch: dict[str, torch.Tensor]) -> tuple[dict[str, float], float, float]:
    """One step with a zero learning rate: the losses, and the gradient norm each network got."""
    torch.manual_seed(0)
    cfg = L2GConfig(**{**TINY, **settings, "lr": 1e-12})
    model = L2GModel(3, 1, cfg)
    step = make_step(cfg, model, model.global_net, model.local_net, build_l2g_optimizer(model, cfg), "cpu")
    losses = step(SimpleNamespace(state=SimpleNamespace(iteration=1)), batch)

    def norm(net: torch.nn.Module) -> float:
        return float(sum(p.grad.abs().sum() for p in net.parameters() if p.grad is not None))

    return losses, norm(model.global_net), norm(model.local_net)


def test_reference_losses_reach_the_networks_as_the_reference_adds_them() -> None:
    batch = _batch()
    losses, g, loc = _grads(REFERENCE, batch)
    assert set(losses) == {"loss", "attention", "cls_local"}  # no global classification, no background
    assert g > 0 and loc > 0
    # without the attention loss the global network gets nothing: its classification loss is not added
    _, g_cls_only, loc_cls_only = _grads({**REFERENCE, "att_weight": 0.0}, batch)
    assert g_cls_only == 0.0 and loc_cls_only > 0
    # the project's default adds the global classification loss: the global network learns from it
    defaults, g_default, _ = _grads({"att_weight": 0.0}, batch)
    assert {"cls_global", "bg_local"} <= set(defaults) and g_default > 0


def test_attention_threshold_by_hand() -> None:
    maps = torch.zeros(1, 2, 1, 3)
    maps[0, 1] = torch.tensor([1.0, 0.05, 0.0005])  # normalised scores 1, 0.05, 0.0005 of the class
    tags = torch.ones(1, 1)
    reference = attention_target(maps, tags, threshold=0.001)[0, 1, 0].tolist()
    default = attention_target(maps, tags, threshold=0.1)[0, 1, 0].tolist()
    assert reference == [1.0, 1.0, 0.0] and default == [1.0, 0.0, 0.0]


def test_the_pcm_map_is_pooled_into_the_logits() -> None:
    torch.manual_seed(0)
    net = CAMNet(3, width=0.125, pooled="pcm").eval()
    out = net(torch.randn(2, 1, 64, 64))
    torch.testing.assert_close(out["logits"], out["pcm"][:, 1:].mean(dim=(2, 3)))
    assert not torch.allclose(out["logits"], out["cam"][:, 1:].mean(dim=(2, 3)))
    out["logits"].sum().backward()  # the PCM path carries the classification gradient to the PCM layers
    assert net.pcm_proj.weight.grad is not None and net.pcm_proj.weight.grad.abs().sum() > 0


def test_saliency_pooled_logits_read_the_pooled_map_too() -> None:
    """With saliency pooling (the ACDC default) ``pooled_map="pcm"`` still pools the PCM output: the global
    classification loss then reaches the global PCM layers, which it never does with the raw CAM."""
    batch = {**_batch(), "motion": torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))}

    def pcm_grad(pooled: str) -> float:
        torch.manual_seed(0)
        settings = {"saliency_key": "motion", "att_weight": 0.0, "bg_weight": 0.0, "pooled_map": pooled}
        cfg = L2GConfig(**{**TINY, **settings, "lr": 1e-12})
        model = L2GModel(3, 1, cfg)
        opt = build_l2g_optimizer(model, cfg)
        step = make_step(cfg, model, model.global_net, model.local_net, opt, "cpu")
        step(SimpleNamespace(state=SimpleNamespace(iteration=1)), batch)
        grad = model.global_net.pcm_proj.weight.grad
        return 0.0 if grad is None else float(grad.abs().sum())

    assert pcm_grad("cam") == 0.0 and pcm_grad("pcm") > 0


def test_frozen_parameters_and_batchnorm_stay_put_after_a_step() -> None:
    batch = _batch()
    torch.manual_seed(0)
    cfg = L2GConfig(**{**TINY, **REFERENCE, "freeze": ["bn", "stem", "layer1"], "lr": 0.1})
    model = L2GModel(3, 1, cfg)
    before = {k: v.clone() for k, v in model.global_net.backbone.state_dict().items()}
    step = make_step(cfg, model, model.global_net, model.local_net, build_l2g_optimizer(model, cfg), "cpu")
    step(SimpleNamespace(state=SimpleNamespace(iteration=1)), batch)
    after = model.global_net.backbone.state_dict()
    frozen = [k for k in before if k.startswith(("stem", "layer1")) or "bn" in k or "running" in k]
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert frozen and not set(frozen) & set(moved)  # weights and running statistics unchanged
    assert any(k.startswith("layer2") and "conv" in k for k in moved)  # the rest trains
    with pytest.raises(ValueError, match="no backbone parameter starts with 'layer9'"):
        L2GModel(3, 1, L2GConfig(**{**TINY, "freeze": ["layer9"]}))


def test_resnet38_activated_features_and_a_converted_weight_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = WideResNet38(in_channels=3).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, 32, 32))
        torch.testing.assert_close(out["low_act"], torch.relu(net.b5.bn_branch2a(out["low"])))
        torch.testing.assert_close(out["mid_act"], torch.relu(net.b6.bn_branch2a(out["mid"])))
    # a file shaped like the converted ImageNet ResNet-38: the same names, no num_batches_tracked
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert len(state) < len(net.state_dict())
    torch.save(state, tmp_path / "resnet38.pth")
    fresh = WideResNet38(in_channels=3)
    load_pretrained(fresh, tmp_path / "resnet38.pth")
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in state.items())
    del state["b2.conv_branch1.weight"]  # any other key missing is refused by name
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match=r"missing keys: b2\.conv_branch1\.weight"):
        load_pretrained(fresh, tmp_path / "broken.pth")


def test_reference_cam_inference_resizes_bicubic_and_relus_the_mean() -> None:
    torch.manual_seed(0)
    net = CAMNet(3, width=0.125).eval()
    x = torch.randn(1, 1, 64, 64)
    default = multiscale_cam(net, x, scales=(1.0,), flip=True)["scores"]
    reference = multiscale_cam(net, x, scales=(1.0,), flip=True, resize="bicubic", relu="mean")["scores"]
    with torch.no_grad():  # by hand: both passes upsampled bicubically, averaged, then ReLU'd
        up = [
            torch.nn.functional.interpolate(net(v)["pcm"], (64, 64), mode="bicubic", align_corners=False)
            for v in (x, x.flip(-1))
        ]
        fg = torch.relu(up[0][:, 1:] + up[1][:, 1:].flip(-1))
    torch.testing.assert_close(reference, fg / (fg.amax(dim=(2, 3), keepdim=True) + 1e-5))
    assert not torch.allclose(reference, default)


def test_reference_profile_switches_every_row() -> None:
    profile = json.loads((ROOT / "voc_adapter" / "configs" / "l2g_reference.json").read_text())
    cfg = L2GConfig(**{k: v for k, v in profile.items() if k not in ("+imports", "output_dir")})
    assert (cfg.global_cls, cfg.bg_weight, cfg.att_threshold) == (False, 0.0, 0.001)
    assert (cfg.pooled_map, cfg.pcm_features, cfg.freeze) == ("pcm", "activated", ["bn", "conv1a", "b2"])
    assert (cfg.optimizer, cfg.lr_schedule, cfg.epochs, cfg.batch_size) == ("sgd", "step", 10, 3)
    assert (cfg.image_size, cfg.num_views, round(cfg.image_size * cfg.view_ratio)) == (448, 6, 320)
    assert cfg.color_jitter and cfg.backbone == "resnet38"
