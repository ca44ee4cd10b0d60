"""The stage-1 networks and how a trained stage 1 is read back.

:class:`L2GModel` holds the global and (with L2G) local CAM classifiers; :func:`load_l2g` loads a finished
stage 1 of a run folder; :func:`pool_weight` gives the pooling of image-level logits the classifier was
trained with. The class activation maps of a trained classifier come from :mod:`acdc_wsss.cam_maps`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from acdc_wsss.config import finished_manifest, load_finished_stage, recorded_config
from acdc_wsss.l2g.config import L2GConfig
from acdc_wsss.l2g.core import smooth_saliency
from acdc_wsss.layout import L2G_STAGE, RunLayout
from acdc_wsss.networks import CAMNet

__all__ = ["L2GModel", "freeze_backbone", "load_l2g", "pool_weight", "recorded_l2g_config"]


class L2GModel(nn.Module):
    """The global and (with L2G) local CAM classifiers, trained together by one optimiser."""

    def __init__(self, num_classes: int, in_channels: int, cfg: L2GConfig) -> None:
        super().__init__()

        def net() -> CAMNet:
            return CAMNet(
                num_classes,
                cfg.backbone,
                in_channels,
                cfg.width,
                cfg.pcm,
                cfg.pretrained,
                cfg.pooled_map,
                cfg.pcm_features,
            )

        self.cfg = cfg  # the settings it was built with (evaluation pools logits as training did)
        self.global_net = net()
        self.local_net = net() if cfg.l2g else None
        self.frozen_bn: list[nn.Module] = []
        for n in (self.global_net, self.local_net):
            if n is not None:
                self.frozen_bn += freeze_backbone(n.backbone, cfg.freeze)

    def train(self, mode: bool = True) -> L2GModel:
        """Train mode, with frozen BatchNorm layers kept in eval mode (their statistics stay put)."""
        super().train(mode)
        for m in self.frozen_bn:
            m.eval()
        return self


def freeze_backbone(backbone: nn.Module, prefixes: list[str]) -> list[nn.Module]:
    """Stop training the parameters of ``backbone`` whose names start with one of ``prefixes``; ``bn`` in
    ``prefixes`` freezes every BatchNorm layer too. Returns those BatchNorm layers (to keep in eval mode).

    Raises:
        ValueError: a prefix that names no parameter (a misspelt layer would silently train).
    """
    names = [p for p in prefixes if p != "bn"]
    for prefix in names:
        if not any(n.startswith(prefix) for n, _ in backbone.named_parameters()):
            raise ValueError(f"freeze: no backbone parameter starts with {prefix!r}.")
    for n, p in backbone.named_parameters():
        if any(n.startswith(prefix) for prefix in names):
            p.requires_grad_(False)
    if "bn" not in prefixes:
        return []
    bns = [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        for p in m.parameters():
            p.requires_grad_(False)
    return bns


def pool_weight(cfg: L2GConfig) -> Callable[[dict[str, Any]], torch.Tensor | None] | None:
    """The weights of saliency-pooled logits for a batch, as training used them (None: plain mean)."""
    if not (cfg.saliency_pool and cfg.l2g and cfg.saliency_key):
        return None
    key, sigma = cfg.saliency_key, cfg.saliency_sigma
    return lambda batch: smooth_saliency(batch[key], sigma) if key in batch else None


def _make_command(output_dir: str | Path) -> str:
    return f"python -m monai.bundle run --config_file bundles/l2g_acdc/train.json --output_dir {output_dir}"


def recorded_l2g_config(output_dir: str | Path, device: str = "cpu", progress: bool = True) -> L2GConfig:
    """The settings a run's finished stage 1 was trained with, on ``device`` (what a config that evaluates
    a run without its ``train.json`` uses); refuses a missing or unfinished stage 1 with the command."""
    manifest = finished_manifest(
        RunLayout(output_dir).l2g.path, L2G_STAGE, "stage 1", _make_command(output_dir)
    )
    cfg = recorded_config(manifest, L2GConfig, device)
    cfg.output_dir, cfg.progress = str(output_dir), progress
    return cfg


def load_l2g(
    output_dir: str | Path, checkpoint: str = "best", device: str | torch.device = "cpu"
) -> tuple[dict[str, Any], L2GModel]:
    """Load a finished stage 1 of ``output_dir``: its manifest and its networks from ``checkpoint``.pt.

    Raises:
        FileNotFoundError: no stage 1 there, or no such checkpoint; the message gives the command that
            makes it.
        ValueError: the folder holds another stage's output, an unfinished run, or a checkpoint that does not
            fit the recorded architecture.
    """
    make = _make_command(output_dir)

    def build(manifest: dict[str, Any], cfg: L2GConfig) -> L2GModel:
        return L2GModel(len(manifest["classes"]), manifest["in_channels"], cfg)

    return load_finished_stage(  # type: ignore[return-value]
        RunLayout(output_dir).l2g.path, L2G_STAGE, "stage 1", make, checkpoint, L2GConfig, build, device
    )
