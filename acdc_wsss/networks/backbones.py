"""Backbones at output stride 8 for CAM classifiers and DeepLab-v2.

- :class:`DilatedResNet`: MONAI's 2D ResNet (depth 18, 34, 50 or 101; 1 or 3 input channels; width factor)
  with its last two stages dilated (2 and 4) instead of strided.
- :class:`WideResNet38`: the wide ResNet-38 of L2G/SEAM (for users with a GPU and ImageNet weights), with
  the parameter names of the reference implementation so converted weights load strictly.

Every backbone returns a dict of feature maps, all at stride 8: ``low`` and ``mid`` (intermediate stages,
used by the PCM) and ``high`` (the last stage), and exposes their channel counts in ``channels``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from monai.networks.nets import ResNet
from torch import nn

__all__ = [
    "BACKBONES",
    "RESNET_DEPTHS",
    "DilatedResNet",
    "WideResNet38",
    "build_backbone",
    "load_pretrained",
]

#: Block type and blocks per stage of each supported ResNet depth.
RESNET_DEPTHS: dict[int, tuple[str, list[int]]] = {
    18: ("basic", [2, 2, 2, 2]),
    34: ("basic", [3, 4, 6, 3]),
    50: ("bottleneck", [3, 4, 6, 3]),
    101: ("bottleneck", [3, 4, 23, 3]),
}
#: Names accepted by :func:`build_backbone`.
BACKBONES: tuple[str, ...] = (*(f"resnet{d}" for d in RESNET_DEPTHS), "resnet38")


def _dilate(stage: nn.Module, dilation: int) -> None:
    """Turn a strided ResNet stage into a dilated one: stride 1 everywhere, 3x3 convs dilated."""
    for m in stage.modules():
        if isinstance(m, nn.Conv2d):
            m.stride = (1, 1)
            if m.kernel_size == (3, 3):
                m.dilation = (dilation, dilation)
                m.padding = (dilation, dilation)


class DilatedResNet(nn.Module):
    """MONAI 2D ResNet with output stride 8 (stem /4, layer2 /2, layer3 and layer4 dilated 2 and 4).

    Args:
        depth: 18, 34, 50 or 101.
        in_channels: input channels (1 for MRI, 3 for RGB).
        width: width factor of every stage (1.0 is the standard ResNet; 0.25-0.5 are CPU-sized).
    """

    def __init__(self, depth: int = 18, in_channels: int = 1, width: float = 1.0) -> None:
        super().__init__()
        if depth not in RESNET_DEPTHS:
            raise ValueError(f"ResNet depth must be one of {sorted(RESNET_DEPTHS)}, got {depth}.")
        if in_channels < 1 or width <= 0:
            raise ValueError(f"in_channels must be >= 1 and width > 0, got {in_channels}, {width}.")
        block, layers = RESNET_DEPTHS[depth]
        net = ResNet(
            block=block,
            layers=layers,
            block_inplanes=[64, 128, 256, 512],
            spatial_dims=2,
            n_input_channels=in_channels,
            conv1_t_size=7,
            conv1_t_stride=2,
            widen_factor=width,
            feed_forward=False,
        )
        _dilate(net.layer3, 2)
        _dilate(net.layer4, 4)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.act, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.depth, self.in_channels, self.width = depth, in_channels, width
        with torch.no_grad():
            was_training = self.training
            self.eval()
            shapes = {k: v.shape[1] for k, v in self.forward(torch.zeros(1, in_channels, 32, 32)).items()}
            self.train(was_training)
        self.channels: dict[str, int] = shapes

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Args: x: ``(B, in_channels, H, W)``. Returns: ``low``, ``mid``, ``high`` at ``(H/8, W/8)``, and
        ``low_act``/``mid_act``: the same (a post-activation ResNet's stages end with their ReLU)."""
        x = self.layer1(self.stem(x))
        low = self.layer2(x)
        mid = self.layer3(low)
        return {"low": low, "mid": mid, "high": self.layer4(mid), "low_act": low, "mid_act": mid}


class _ResBlock(nn.Module):
    """Pre-activation residual block of ResNet-38 (two 3x3 convs)."""

    def __init__(
        self,
        cin: int,
        cmid: int,
        cout: int,
        stride: int = 1,
        first_dilation: int | None = None,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        first_dilation = dilation if first_dilation is None else first_dilation
        self.same_shape = cin == cout and stride == 1
        self.bn_branch2a = nn.BatchNorm2d(cin)
        self.conv_branch2a = nn.Conv2d(
            cin, cmid, 3, stride, padding=first_dilation, dilation=first_dilation, bias=False
        )
        self.bn_branch2b1 = nn.BatchNorm2d(cmid)
        self.conv_branch2b1 = nn.Conv2d(cmid, cout, 3, padding=dilation, dilation=dilation, bias=False)
        if not self.same_shape:
            self.conv_branch1 = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch2 = torch.relu(self.bn_branch2a(x))
        branch1 = x if self.same_shape else self.conv_branch1(branch2)
        branch2 = self.conv_branch2a(branch2)
        branch2 = self.conv_branch2b1(torch.relu(self.bn_branch2b1(branch2)))
        return branch1 + branch2


class _ResBlockBottle(nn.Module):
    """Pre-activation bottleneck block of ResNet-38 (1x1, dilated 3x3, 1x1) with dropout."""

    def __init__(self, cin: int, cout: int, dilation: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.same_shape = cin == cout
        self.bn_branch2a = nn.BatchNorm2d(cin)
        self.conv_branch2a = nn.Conv2d(cin, cout // 4, 1, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(cout // 4)
        self.dropout_2b1 = nn.Dropout2d(dropout)
        self.conv_branch2b1 = nn.Conv2d(
            cout // 4, cout // 2, 3, padding=dilation, dilation=dilation, bias=False
        )
        self.bn_branch2b2 = nn.BatchNorm2d(cout // 2)
        self.dropout_2b2 = nn.Dropout2d(dropout)
        self.conv_branch2b2 = nn.Conv2d(cout // 2, cout, 1, bias=False)
        if not self.same_shape:
            self.conv_branch1 = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch2 = torch.relu(self.bn_branch2a(x))
        branch1 = x if self.same_shape else self.conv_branch1(branch2)
        branch2 = self.conv_branch2a(branch2)
        branch2 = self.conv_branch2b1(self.dropout_2b1(torch.relu(self.bn_branch2b1(branch2))))
        branch2 = self.conv_branch2b2(self.dropout_2b2(torch.relu(self.bn_branch2b2(branch2))))
        return branch1 + branch2


class WideResNet38(nn.Module):
    """Wide ResNet-38 at output stride 8 (the backbone of SEAM and L2G), reference parameter names.

    ``low`` is the output of stage b4 (512 channels), ``mid`` of b5 (1024), ``high`` of b7 after ``bn7``
    (4096). About 104 M parameters: meant for a GPU and ImageNet weights.

    Args:
        in_channels: input channels.
    """

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.conv1a = nn.Conv2d(in_channels, 64, 3, padding=1, bias=False)
        self.b2, self.b2_1, self.b2_2 = (
            _ResBlock(64, 128, 128, 2),
            _ResBlock(128, 128, 128),
            _ResBlock(128, 128, 128),
        )
        self.b3, self.b3_1, self.b3_2 = (
            _ResBlock(128, 256, 256, 2),
            _ResBlock(256, 256, 256),
            _ResBlock(256, 256, 256),
        )
        self.b4 = _ResBlock(256, 512, 512, 2)
        self.b4_1, self.b4_2, self.b4_3, self.b4_4, self.b4_5 = (_ResBlock(512, 512, 512) for _ in range(5))
        self.b5 = _ResBlock(512, 512, 1024, first_dilation=1, dilation=2)
        self.b5_1, self.b5_2 = _ResBlock(1024, 512, 1024, dilation=2), _ResBlock(1024, 512, 1024, dilation=2)
        self.b6 = _ResBlockBottle(1024, 2048, dilation=4, dropout=0.3)
        self.b7 = _ResBlockBottle(2048, 4096, dilation=4, dropout=0.5)
        self.bn7 = nn.BatchNorm2d(4096)
        self.channels: dict[str, int] = {"low": 512, "mid": 1024, "high": 4096}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Args: x: ``(B, in_channels, H, W)``. Returns: ``low``, ``mid``, ``high`` at ``(H/8, W/8)``; and
        ``low_act``/``mid_act``, ``low`` and ``mid`` after the BN + ReLU that opens the next block (the
        features the reference's PCM reads)."""
        x = self.conv1a(x)
        for name in (
            "b2",
            "b2_1",
            "b2_2",
            "b3",
            "b3_1",
            "b3_2",
            "b4",
            "b4_1",
            "b4_2",
            "b4_3",
            "b4_4",
            "b4_5",
        ):
            x = getattr(self, name)(x)
        low = x
        mid = self.b5_2(self.b5_1(self.b5(low)))
        high = torch.relu(self.bn7(self.b7(self.b6(mid))))
        # pre-activation blocks: the next block's BN + ReLU gives the activated features
        low_act, mid_act = torch.relu(self.b5.bn_branch2a(low)), torch.relu(self.b6.bn_branch2a(mid))
        return {"low": low, "mid": mid, "high": high, "low_act": low_act, "mid_act": mid_act}


def build_backbone(name: str = "resnet18", in_channels: int = 1, width: float = 1.0) -> nn.Module:
    """Build a stride-8 backbone: ``resnet18|34|50|101`` (MONAI, ``width`` applies) or ``resnet38``."""
    match = re.fullmatch(r"resnet(\d+)", name)
    if match is None or name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; expected one of {BACKBONES}.")
    if name == "resnet38":
        return WideResNet38(in_channels)
    return DilatedResNet(int(match.group(1)), in_channels, width)


def load_pretrained(
    module: nn.Module, path: str | os.PathLike, strip_prefixes: tuple[str, ...] = ("module.",)
) -> None:
    """Load weights from a local file into ``module``, strictly.

    Accepts a plain state dict or a checkpoint with a ``state_dict`` / ``model`` entry; the prefixes in
    ``strip_prefixes`` are removed from the keys (e.g. DDP's ``module.``). BatchNorm's
    ``num_batches_tracked`` counters may be absent (a file converted from another framework, as the
    ImageNet ResNet-38): they keep the module's value. Every other key and shape must match.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file holds no state dict, or its keys or shapes differ from the module's; the message
            lists the missing, unexpected and mismatched keys.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights {path} not found (ImageNet weights are a local file).")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}.")
    clean = {}
    for k, v in state.items():
        for prefix in strip_prefixes:
            k = k.removeprefix(prefix)
        clean[k] = v
    own = module.state_dict()
    # BatchNorm's step counter is not a weight: files converted from other frameworks lack it
    for k in set(own) - set(clean):
        if k.endswith(".num_batches_tracked"):
            clean[k] = own[k]
    missing = sorted(set(own) - set(clean))
    unexpected = sorted(set(clean) - set(own))
    mismatched = sorted(k for k in set(own) & set(clean) if tuple(own[k].shape) != tuple(clean[k].shape))
    if missing or unexpected or mismatched:

        def show(keys: list[str]) -> str:
            return ", ".join(keys[:10]) + (f" ... ({len(keys)} in all)" if len(keys) > 10 else "") or "none"

        raise ValueError(
            f"{path} does not match {type(module).__name__}: missing keys: {show(missing)}; "
            f"unexpected keys: {show(unexpected)}; shape mismatches: {show(mismatched)}."
        )
    module.load_state_dict(clean, strict=True)
