"""The stage-3 network and how a trained stage 3 is read and used.

:class:`SegNet` (DeepLab-v2 or a MONAI BasicUNet), :class:`SegLogits` (the same network answering a plain
logits tensor: the bundles' ``network_def``, what TorchScript export and ``verify_net_in_out`` use),
:func:`load_seg` (a finished stage 3 of a run folder) and :func:`predict_slices` (softmax probabilities of
batched slices, optionally flip-averaged).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.nets import BasicUNet
from torch import nn

from acdc_wsss.config import finished_manifest, load_finished_stage, load_weights, recorded_config
from acdc_wsss.layout import SEG_STAGE, RunLayout
from acdc_wsss.networks import DeepLabV2
from acdc_wsss.seg.config import SegConfig

__all__ = [
    "SegLogits",
    "SegNet",
    "checkpoint_file",
    "load_seg",
    "network_def",
    "predict_slices",
    "recorded_on_validation",
    "recorded_septal",
    "seg_manifest",
    "slice_input",
    "volume_slices",
    "with_checkpoint",
]


def slice_input(image: torch.Tensor, z: int, context: int = 0) -> torch.Tensor:
    """The network input ``(C * (2 * context + 1), H, W)`` of slice ``z`` of a ``(C, H, W, S)`` volume: the
    slice with its ``context`` neighbours on each side as extra channels (2.5D; the end slices repeated),
    in slice order ``z - context ... z + context``, each slice's ``C`` channels together."""
    if hasattr(image, "as_tensor"):  # a MetaTensor: plain data for the network
        image = image.as_tensor()
    near = [min(max(z + d, 0), image.shape[-1] - 1) for d in range(-context, context + 1)]
    return image[..., near].permute(3, 0, 1, 2).flatten(0, 1).float()


def volume_slices(image: torch.Tensor, context: int = 0) -> torch.Tensor:
    """The network inputs ``(S, C * (2 * context + 1), H, W)`` of every slice of a ``(C, H, W, S)`` volume
    (:func:`slice_input`)."""
    return torch.stack([slice_input(image, z, context) for z in range(image.shape[-1])])


class SegNet(nn.Module):
    """The stage-3 network: DeepLab-v2 or a MONAI BasicUNet, with optional input enlargement.

    ``forward(x)`` returns ``logits`` ``(B, num_classes, H, W)`` at the input size (and, for multi-scale
    DeepLab in training, ``scales``). ``in_channels`` counts the neighbour slices of a 2.5D network
    (``context``: neighbours on each side, see :func:`volume_slices`).
    """

    def __init__(self, num_classes: int, in_channels: int, cfg: SegConfig) -> None:
        super().__init__()
        self.input_scale = cfg.input_scale
        self.context = cfg.context_slices
        if cfg.network == "deeplab":
            self.net: nn.Module = DeepLabV2(
                num_classes,
                cfg.backbone,
                in_channels,
                cfg.width,
                multiscale=cfg.multiscale,
                pretrained=cfg.pretrained,
            )
        else:
            self.net = BasicUNet(2, in_channels, num_classes, features=tuple(cfg.unet_features))

    def new_parameters(self) -> list[nn.Parameter]:
        return self.net.new_parameters() if isinstance(self.net, DeepLabV2) else []

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h, w = x.shape[2:]
        if self.input_scale != 1.0:
            x = F.interpolate(x, scale_factor=self.input_scale, mode="bilinear", align_corners=False)
        out = self.net(x)
        out = dict(out) if isinstance(out, dict) else {"logits": out}
        if self.input_scale != 1.0:
            out = {
                k: (
                    F.interpolate(v, size=(h, w), mode="bilinear", align_corners=False)
                    if k == "logits"
                    else F.interpolate(
                        v.flatten(0, 1), size=(h, w), mode="bilinear", align_corners=False
                    ).unflatten(0, v.shape[:2])
                )
                for k, v in out.items()
            }
        return out


class SegLogits(SegNet):
    """:class:`SegNet` whose ``forward(x)`` returns the ``logits`` ``(B, num_classes, H, W)`` alone (same
    parameters, so a stage-3 checkpoint loads into it as is)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x)["logits"]


def _make_command(output_dir: str | Path) -> str:
    bundle = "bundles/deeplab_acdc/train.json"
    return f"python -m monai.bundle run --config_file {bundle} --output_dir {output_dir}"


def seg_manifest(output_dir: str | Path, stage_dir: str | Path | None = None) -> dict[str, Any]:
    """The manifest of a run's finished stage 3 (``stage_dir``: another stage-3 folder than ``seg/``);
    refuses a missing or unfinished one with the command that makes it."""
    where = Path(stage_dir) if stage_dir is not None else RunLayout(output_dir).seg.path
    return finished_manifest(where, SEG_STAGE, "stage 3", _make_command(output_dir))


def recorded_septal(manifest: dict[str, Any]) -> float | None:
    """The septal direction a run's stage-3 labels were made with (stage 2's ``septal``, recorded in the
    seg manifest under ``pseudo_labels``): the side on which the rules fused at inference seek the RV;
    None where none was recorded."""
    return manifest.get("pseudo_labels", {}).get("septal")


def recorded_on_validation(manifest: dict[str, Any]) -> bool:
    """Whether a stage-3 network trained on the validation patients' pseudo labels too (its manifest's
    ``train_on_validation``; False for a manifest made before the setting existed): its validation Dice is
    then not held out, and no setting may be chosen with it there."""
    return bool(manifest.get("config", {}).get("train_on_validation", False))


def network_def(output_dir: str | Path, stage_dir: str | Path | None = None) -> SegLogits:
    """The architecture a run's finished stage 3 recorded (network, widths, input channels, classes), as a
    :class:`SegLogits` with fresh weights: load a checkpoint into it (``CheckpointLoader``,
    ``ckpt_export --key_in_ckpt model``). Refuses a run without a finished stage 3, with the command."""
    manifest = seg_manifest(output_dir, stage_dir)
    cfg = recorded_config(manifest, SegConfig)
    return SegLogits(len(manifest["classes"]) + 1, manifest["in_channels"], cfg).eval()


def checkpoint_file(output_dir: str | Path, checkpoint: str = "last") -> Path:
    """``seg/<checkpoint>.pt`` of a run with a finished stage 3; refuses a missing one with the command."""
    seg_manifest(output_dir)
    path = RunLayout(output_dir).seg.checkpoint(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; make it with: {_make_command(output_dir)}")
    return path


def with_checkpoint(network: nn.Module, output_dir: str | Path, checkpoint: str = "last") -> nn.Module:
    """``network`` (:func:`network_def`) with the weights of the run's ``seg/<checkpoint>.pt``, loaded
    strictly and ``weights_only`` (a file carrying code, or one of another architecture, is refused by
    name)."""
    return load_weights(network, checkpoint_file(output_dir, checkpoint), RunLayout(output_dir).seg.manifest)


def load_seg(
    output_dir: str | Path,
    checkpoint: str = "last",
    device: str | torch.device = "cpu",
    stage_dir: str | Path | None = None,
) -> tuple[dict[str, Any], SegNet]:
    """Load a finished stage 3: its manifest and network from ``checkpoint``.pt (refusing a missing,
    unfinished or foreign one with the command that makes it); ``stage_dir``: another stage-3 folder of the
    run than ``seg/`` (a self-training round's)."""
    make = _make_command(output_dir)

    def build(manifest: dict[str, Any], cfg: SegConfig) -> SegNet:
        return SegNet(len(manifest["classes"]) + 1, manifest["in_channels"], cfg)

    return load_finished_stage(  # type: ignore[return-value]
        Path(stage_dir) if stage_dir is not None else RunLayout(output_dir).seg.path,
        SEG_STAGE,
        "stage 3",
        make,
        checkpoint,
        SegConfig,
        build,
        device,
    )


def _logits(out: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
    return out["logits"] if isinstance(out, dict) else out


@torch.no_grad()
def predict_slices(
    net: nn.Module, images: torch.Tensor, device: torch.device, flip: bool = False, batch: int = 32
) -> torch.Tensor:
    """Softmax probabilities ``(N, K, H, W)`` of ``(N, C, H, W)`` slices, optionally flip-averaged; ``net``
    answers ``{"logits": ...}`` (:class:`SegNet`) or the logits tensor (:class:`SegLogits`, TorchScript)."""
    net.eval()
    out = []
    for i in range(0, len(images), batch):
        x = images[i : i + batch].to(device)
        p = torch.softmax(_logits(net(x)).float(), dim=1)
        if flip:
            p = (p + torch.softmax(_logits(net(x.flip(-1))).float(), dim=1).flip(-1)) / 2
        out.append(p.cpu())
    return torch.cat(out)
