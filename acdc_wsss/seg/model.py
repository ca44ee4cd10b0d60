"""The stage-3 network and how a trained stage 3 is read and used.

:class:`SegNet` (DeepLab-v2 or a MONAI BasicUNet), :class:`SegLogits` (the same network answering a plain
logits tensor: the bundles' ``network_def``, what TorchScript export and ``verify_net_in_out`` use),
:class:`SegEnsemble` (networks whose probabilities are averaged: a run trained with ``ensemble`` > 1),
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
from acdc_wsss.layout import SEG_STAGE, RunLayout, StageLayout
from acdc_wsss.networks import DeepLabV2
from acdc_wsss.seg.config import SegConfig

__all__ = [
    "SegEnsemble",
    "SegLogits",
    "SegNet",
    "checkpoint_file",
    "ensemble_size",
    "input_channels",
    "load_seg",
    "member_layouts",
    "network_def",
    "network_slices",
    "predict_slices",
    "recorded_on_validation",
    "recorded_septal",
    "seg_manifest",
    "slice_input",
    "volume_slices",
    "with_checkpoint",
]


def slice_input(
    image: torch.Tensor, z: int, context: int = 0, motion: torch.Tensor | None = None
) -> torch.Tensor:
    """The network input of slice ``z`` of a ``(C, H, W, S)`` volume: the slice with its ``context``
    neighbours on each side as extra channels (2.5D; the end slices repeated), in slice order
    ``z - context ... z + context``, each slice's ``C`` channels together: ``(C * (2 * context + 1), H,
    W)``; with ``motion`` (the volume's ``(1, H, W, S)`` ED-ES motion map), the map's same slices follow as
    ``2 * context + 1`` more channels."""
    near = [min(max(z + d, 0), image.shape[-1] - 1) for d in range(-context, context + 1)]

    def stacked(volume: torch.Tensor) -> torch.Tensor:
        data = volume.as_tensor() if hasattr(volume, "as_tensor") else volume  # a MetaTensor: plain data
        return data[..., near].permute(3, 0, 1, 2).flatten(0, 1).float()

    x = stacked(image)
    return x if motion is None else torch.cat([x, stacked(motion)])


def volume_slices(image: torch.Tensor, context: int = 0, motion: torch.Tensor | None = None) -> torch.Tensor:
    """The network inputs ``(S, C', H, W)`` of every slice of a ``(C, H, W, S)`` volume
    (:func:`slice_input`)."""
    return torch.stack([slice_input(image, z, context, motion) for z in range(image.shape[-1])])


def input_channels(image_channels: int, cfg: SegConfig) -> int:
    """How many channels a stage-3 network of ``cfg`` reads from volumes of ``image_channels`` channels:
    each of the ``2 * context_slices + 1`` slices' image channels, and its motion map with
    ``motion_input``."""
    return (image_channels + int(cfg.motion_input)) * (2 * cfg.context_slices + 1)


def network_slices(
    network: nn.Module, image: torch.Tensor, motion: torch.Tensor | None = None
) -> torch.Tensor:
    """The inputs ``(S, C', H, W)`` that ``network`` (a stage-3 network: its ``context`` and ``motion``
    attributes) reads for every slice of a ``(C, H, W, S)`` volume; a network that reads the motion map
    refuses a volume given without one."""
    context, wants = int(getattr(network, "context", 0)), bool(getattr(network, "motion", False))
    if wants and motion is None:
        raise ValueError(
            "this stage-3 network reads the ED-ES motion map as an input channel (motion_input), "
            "but none was given with the image."
        )
    return volume_slices(image, context, motion if wants else None)


class SegNet(nn.Module):
    """The stage-3 network: DeepLab-v2 or a MONAI BasicUNet, with optional input enlargement.

    ``forward(x)`` returns ``logits`` ``(B, num_classes, H, W)`` at the input size (and, for multi-scale
    DeepLab in training, ``scales``). ``in_channels`` counts the neighbour slices of a 2.5D network
    (``context``: neighbours on each side, see :func:`volume_slices`) and the motion map's channels
    (``motion``: ``cfg.motion_input``; :func:`input_channels`).
    """

    def __init__(self, num_classes: int, in_channels: int, cfg: SegConfig) -> None:
        super().__init__()
        self.input_scale = cfg.input_scale
        self.context = cfg.context_slices
        self.motion = cfg.motion_input
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


class SegEnsemble(nn.Module):
    """Networks of one architecture answering together: the log of the mean of their softmax
    probabilities, as logits (a softmax of them gives that mean back). Answers as its members do: a
    ``{"logits": ...}`` dict (:class:`SegNet`) or the tensor (:class:`SegLogits`)."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one network.")
        self.members = nn.ModuleList(members)
        self.context = int(getattr(members[0], "context", 0))
        self.motion = bool(getattr(members[0], "motion", False))

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        outs = [m(x) for m in self.members]
        mean = torch.stack([torch.softmax(_logits(o).float(), dim=1) for o in outs]).mean(0)
        logits = mean.clamp_min(torch.finfo(mean.dtype).tiny).log()
        return {"logits": logits} if isinstance(outs[0], dict) else logits


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


def ensemble_size(manifest: dict[str, Any]) -> int:
    """How many networks a stage-3 manifest's run trained (``ensemble``; 1 for a run made before the
    setting existed)."""
    return int(manifest.get("config", {}).get("ensemble", 1))


def member_layouts(output_dir: str | Path) -> list[StageLayout]:
    """The stage folders of a run's finished stage-3 networks: ``seg/``, then ``seg_members/member<k>/``
    of an ensemble; refuses a run without a finished stage 3 (or one missing a member), with the
    command."""
    run = RunLayout(output_dir)
    layouts = [run.seg] + [run.seg_member(k) for k in range(1, ensemble_size(seg_manifest(output_dir)))]
    for layout in layouts[1:]:
        seg_manifest(output_dir, layout.path)
    return layouts


def network_def(output_dir: str | Path, stage_dir: str | Path | None = None) -> SegLogits | SegEnsemble:
    """The architecture a run's finished stage 3 recorded (network, widths, input channels, classes), as a
    :class:`SegLogits` with fresh weights: load a checkpoint into it (``CheckpointLoader``,
    ``ckpt_export --key_in_ckpt model``); a run's ensemble (``seg/`` of a run trained with ``ensemble``
    > 1) as a :class:`SegEnsemble` of them (:func:`with_checkpoint` loads each). Refuses a run without a
    finished stage 3, with the command."""
    manifest = seg_manifest(output_dir, stage_dir)
    cfg = recorded_config(manifest, SegConfig)

    def one() -> SegLogits:
        return SegLogits(len(manifest["classes"]) + 1, manifest["in_channels"], cfg).eval()

    size = ensemble_size(manifest) if stage_dir is None else 1
    return one() if size == 1 else SegEnsemble([one() for _ in range(size)]).eval()


def checkpoint_file(output_dir: str | Path, checkpoint: str = "last", member: int = 0) -> Path:
    """``seg/<checkpoint>.pt`` of a run with a finished stage 3 (``member`` k of an ensemble:
    ``seg_members/member<k>/<checkpoint>.pt``); refuses a missing one with the command."""
    layouts = member_layouts(output_dir)
    if not 0 <= member < len(layouts):
        raise ValueError(f"{output_dir} trained {len(layouts)} stage-3 network(s), not a member {member}.")
    return _existing_checkpoint(layouts[member], checkpoint, output_dir)


def _existing_checkpoint(layout: StageLayout, checkpoint: str, output_dir: str | Path) -> Path:
    path = layout.checkpoint(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; make it with: {_make_command(output_dir)}")
    return path


def with_checkpoint(network: nn.Module, output_dir: str | Path, checkpoint: str = "last") -> nn.Module:
    """``network`` (:func:`network_def`) with the weights of the run's ``seg/<checkpoint>.pt`` (each member
    of a :class:`SegEnsemble` with its own), loaded strictly and ``weights_only`` (a file carrying code,
    or one of another architecture, is refused by name)."""
    nets = list(network.members) if isinstance(network, SegEnsemble) else [network]
    layouts = member_layouts(output_dir)
    if len(nets) != len(layouts):
        raise ValueError(
            f"{output_dir} trained {len(layouts)} stage-3 network(s); the network given has {len(nets)}."
        )
    for net, layout in zip(nets, layouts, strict=True):
        load_weights(net, _existing_checkpoint(layout, checkpoint, output_dir), layout.manifest)
    return network


def load_seg(
    output_dir: str | Path,
    checkpoint: str = "last",
    device: str | torch.device = "cpu",
    stage_dir: str | Path | None = None,
) -> tuple[dict[str, Any], SegNet | SegEnsemble]:
    """Load a finished stage 3: its manifest and network from ``checkpoint``.pt (refusing a missing,
    unfinished or foreign one with the command that makes it); ``stage_dir``: another stage-3 folder of the
    run than ``seg/`` (a self-training round's). A run trained with ``ensemble`` > 1 gives, for ``seg/``,
    a :class:`SegEnsemble` of its networks."""
    make = _make_command(output_dir)

    def build(manifest: dict[str, Any], cfg: SegConfig) -> SegNet:
        return SegNet(len(manifest["classes"]) + 1, manifest["in_channels"], cfg)

    def load(where: Path) -> tuple[dict[str, Any], nn.Module]:
        return load_finished_stage(where, SEG_STAGE, "stage 3", make, checkpoint, SegConfig, build, device)

    if stage_dir is not None:
        return load(Path(stage_dir))  # type: ignore[return-value]
    layouts = member_layouts(output_dir)
    manifest, model = load(layouts[0].path)
    if len(layouts) == 1:
        return manifest, model  # type: ignore[return-value]
    members = [model] + [load(layout.path)[1] for layout in layouts[1:]]
    return manifest, SegEnsemble(members).to(device).eval()


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
