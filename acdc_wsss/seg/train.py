"""Stage 3: a segmentation network (DeepLab-v2 by default) trained on the stage-2 pseudo labels.

``run_seg(SegConfig(output_dir=RUN))`` is what ``bundles/deeplab_acdc/train.json`` calls. It reads the
run's ``datalist.json``, ``cache/`` and ``cam/pseudo/`` (the ``target`` arrays: pseudo labels with
uncertain pixels 255, ignored by the loss) and writes ``RUN/seg/``: ``last.pt``, ``best.pt`` (the best
agreement with the validation patients' pseudo labels: no mask is used to choose), ``metrics.json`` (per
epoch: loss, learning rate, validation Dice against the pseudo labels and, for evaluation only, against the
masks) and ``manifest.json``. Training uses the project's one ignite loop (:mod:`acdc_wsss.engine`): poly
LR, the head at ``new_lr_mult`` times the learning rate, MONAI augmentation (scale, small rotation, flip,
intensity), checkpoints, resume, progress bar, DDP.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import BasicUNet
from monai.transforms import (
    Compose,
    RandAffined,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
)
from monai.utils import set_determinism
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from acdc_wsss.config import (
    build_optimizer,
    check_types,
    config_digest,
    load_finished_stage,
    lr_scheduler,
    param_groups,
    prepare_stage_dir,
    run_recorded,
    setup_distributed,
    versions,
)
from acdc_wsss.data.registry import get_seg_data
from acdc_wsss.data.slices import SliceDataset, volume_key
from acdc_wsss.engine import build_trainer
from acdc_wsss.labels import IGNORE
from acdc_wsss.layout import SEG_STAGE, RunLayout
from acdc_wsss.metrics import DiceAccumulator
from acdc_wsss.networks import DeepLabV2

__all__ = ["SegConfig", "SegNet", "StageData", "load_seg", "predict_slices", "run_seg"]

logger = logging.getLogger(__name__)

STAGE = SEG_STAGE
NETWORKS = ("deeplab", "unet")


@dataclass
class SegConfig:
    """Settings of stage 3 (every field can be overridden from the bundle command line).

    Network: ``network`` (``deeplab``: DeepLab-v2; ``unet``: MONAI's BasicUNet, for comparison),
    ``backbone``, ``width``, ``multiscale`` (DeepLab's multi-scale input), ``pretrained`` (local backbone
    weights), ``input_scale`` (slices are enlarged by this factor before the network and the scores shrunk
    back: DeepLab's stride 8 is coarse on 128-pixel slices). Optimisation: ``epochs``, ``batch_size``,
    ``optimizer``, ``lr``, ``new_lr_mult``, ``weight_decay``, ``lr_schedule``. Augmentation: ``aug_scale``
    (fraction), ``aug_rotate`` (degrees), ``aug_flip``, ``aug_intensity`` (fraction); ``image_size``: the
    training crop of photo data sets (VOC). Engine: as stage 1.
    """

    output_dir: str = "runs/l2g_acdc"
    network: str = "deeplab"
    backbone: str = "resnet18"
    width: float = 0.5
    multiscale: bool = False
    pretrained: str | None = None
    input_scale: float = 1.0
    epochs: int = 12
    batch_size: int = 8
    optimizer: str = "adamw"
    lr: float = 1e-3
    new_lr_mult: float = 10.0
    weight_decay: float = 1e-4
    lr_schedule: str = "poly"
    aug_scale: float = 0.15
    aug_rotate: float = 15.0
    aug_flip: bool = True
    aug_intensity: float = 0.1
    val_interval: int = 1
    resume: bool = False
    overwrite: bool = False
    seed: int = 0
    device: str = "cpu"
    num_workers: int = 0
    progress: bool = True
    tensorboard: bool = False
    distributed: bool = False
    unet_features: list[int] = field(default_factory=lambda: [16, 16, 32, 64, 128, 16])
    image_size: int = 321

    def __post_init__(self) -> None:
        self.device = str(self.device)
        check_types(self, "Stage 3")
        checks = [
            (self.network in NETWORKS, f"network must be one of {NETWORKS}"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.input_scale > 0, "input_scale must be > 0"),
            (self.optimizer in ("sgd", "adamw"), "optimizer must be 'sgd' or 'adamw'"),
            (self.lr_schedule in ("poly", "step", "none"), "lr_schedule must be 'poly', 'step' or 'none'"),
            (
                0 <= self.aug_scale < 1 and self.aug_rotate >= 0,
                "aug_scale must be in [0, 1), aug_rotate >= 0",
            ),
            (len(self.unet_features) == 6, "unet_features needs 6 numbers"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"Stage 3 config: {msg}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class SegNet(nn.Module):
    """The stage-3 network: DeepLab-v2 or a MONAI BasicUNet, with optional input enlargement.

    ``forward(x)`` returns ``logits`` ``(B, num_classes, H, W)`` at the input size (and, for multi-scale
    DeepLab in training, ``scales``).
    """

    def __init__(self, num_classes: int, in_channels: int, cfg: SegConfig) -> None:
        super().__init__()
        self.input_scale = cfg.input_scale
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


class PseudoLabelSlices(Dataset):
    """Slices of a :class:`SliceDataset` with their stage-2 targets, augmented by a MONAI chain."""

    def __init__(self, slices: SliceDataset, targets: list[np.ndarray], transform: Any | None = None):
        self.slices, self.targets, self.transform = slices, targets, transform

    def __len__(self) -> int:
        return len(self.slices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        v, z = self.slices.index[i]
        d = {
            "image": self.slices.volumes[v]["image"].as_tensor()[..., z].float(),
            "target": torch.as_tensor(self.targets[v][None, :, :, z].astype(np.float32)),
        }
        if self.transform is not None:
            d = self.transform(d)
        return {"image": torch.as_tensor(d["image"]), "target": torch.as_tensor(d["target"])[0].long()}


def augmentation(cfg: SegConfig) -> Compose:
    """Training augmentation: scale and small rotation (targets nearest, padding ignored), flip, intensity."""
    keys = ["image", "target"]
    steps: list[Any] = [
        RandAffined(
            keys,
            prob=0.7,
            rotate_range=(math.radians(cfg.aug_rotate),),
            scale_range=(cfg.aug_scale, cfg.aug_scale),
            mode=("bilinear", "nearest"),
            padding_mode="zeros",
        ),
    ]
    if cfg.aug_flip:
        steps.append(RandFlipd(keys, prob=0.5, spatial_axis=1))
    if cfg.aug_intensity > 0:
        steps += [
            RandScaleIntensityd("image", factors=cfg.aug_intensity, prob=0.5),
            RandShiftIntensityd("image", offsets=cfg.aug_intensity, prob=0.5),
        ]
    return Compose(steps)


def read_targets(output_dir: Path, ds: SliceDataset, key: str = "target") -> list[np.ndarray]:
    """The exported stage-2 arrays (``target`` or ``labels``) of every volume of ``ds``, refusing missing
    ones with the command that makes them."""
    stage2 = RunLayout(output_dir).cam
    make = (
        "python -m monai.bundle run --config_file \"['bundles/l2g_acdc/train.json',"
        f"'bundles/l2g_acdc/infer.json']\" --output_dir {output_dir}"
    )
    if not stage2.pseudo_manifest.is_file():
        raise FileNotFoundError(
            f"{stage2.pseudo} holds no pseudo labels (no manifest.json); make them with: {make}"
        )
    out = []
    for item, vol in zip(ds.items, ds.volumes, strict=True):
        path = stage2.pseudo_labels(volume_key(item))
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; make the pseudo labels with: {make}")
        with np.load(path) as z:
            arr = z[key]
        if arr.shape != tuple(vol["image"].shape[1:]):
            raise ValueError(
                f"{path}: shape {arr.shape} does not match the preprocessed volume "
                f"{tuple(vol['image'].shape[1:])}; the pseudo labels are stale, remake them with: {make}"
            )
        out.append(arr)
    return out


@torch.no_grad()
def predict_slices(
    net: nn.Module, images: torch.Tensor, device: torch.device, flip: bool = False, batch: int = 32
) -> torch.Tensor:
    """Softmax probabilities ``(N, K, H, W)`` of ``(N, C, H, W)`` slices, optionally flip-averaged."""
    net.eval()
    out = []
    for i in range(0, len(images), batch):
        x = images[i : i + batch].to(device)
        p = torch.softmax(net(x)["logits"].float(), dim=1)
        if flip:
            p = (p + torch.softmax(net(x.flip(-1))["logits"].float(), dim=1).flip(-1)) / 2
        out.append(p.cpu())
    return torch.cat(out)


def _loss(out: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    loss = F.cross_entropy(out["logits"], target, ignore_index=IGNORE)
    for logits in out.get("scales", ()):  # multi-scale DeepLab: each scale too
        loss = loss + F.cross_entropy(logits, target, ignore_index=IGNORE)
    return loss


def _validation(
    model: SegNet, ds: SliceDataset, pseudo: list[np.ndarray], device: torch.device
) -> dict[str, float]:
    k = ds.num_classes + 1
    agree, truth = DiceAccumulator(list(range(k))), DiceAccumulator(list(range(k)))
    for v, vol in enumerate(ds.volumes):
        x = vol["image"].as_tensor().permute(3, 0, 1, 2).float()
        pred = predict_slices(model, x, device).argmax(1).permute(1, 2, 0).numpy()
        agree.update(pred, pseudo[v])
        if vol["label"] is not None:
            truth.update(pred, vol["label"][0].numpy())
    result = {"pseudo_dice": float(np.nanmean(agree.compute()[1:]))}
    if any(vol["label"] is not None for vol in ds.volumes):
        dice = truth.compute()[1:]
        result.update({f"dice_{c}": float(d) for c, d in zip(ds.classes, dice, strict=True)})
        result["dice_mean"] = float(np.nanmean(dice))
    return result


@dataclass
class StageData:
    """What stage 3 trains and validates on: ``train`` yields ``image`` and ``target`` (255 ignored);
    ``validate(model, device)`` returns metrics (or is None); ``augmentation`` is reseeded every epoch."""

    train: Dataset
    in_channels: int
    augmentation: Any
    validate: Callable[[nn.Module, torch.device], dict[str, float]] | None
    key_metric: str | None


def _acdc_data(out: Path, manifest2: dict[str, Any], cfg: SegConfig) -> StageData:
    run = RunLayout(out)
    train_ds = run.slices(manifest2, "training", progress=cfg.progress)
    train_targets = read_targets(out, train_ds)  # before any work: refuse missing pseudo labels now
    has_val = "validation" in manifest2["splits"]
    val_items = run.split("validation") if has_val else []
    val_ds = run.slices(manifest2, val_items, progress=cfg.progress) if val_items else None
    val_pseudo = read_targets(out, val_ds, "labels") if val_ds is not None else []
    aug = augmentation(cfg)
    return StageData(
        train=PseudoLabelSlices(train_ds, train_targets, aug),
        in_channels=int(train_ds.volumes[0]["image"].shape[0]),
        augmentation=aug,
        validate=(lambda model, device: _validation(model, val_ds, val_pseudo, device)) if val_ds else None,
        key_metric="pseudo_dice" if val_ds is not None else None,
    )


def run_seg(config: SegConfig | dict[str, Any], handlers: tuple[Any, ...] = ()) -> Path:
    """Train stage 3 and return ``output_dir/seg``.

    Raises:
        FileNotFoundError: no stage-2 pseudo labels in ``output_dir`` (the message gives the command).
        FileExistsError: ``seg/`` holds a run and neither ``resume`` nor ``overwrite`` is set.
    """
    cfg = config if isinstance(config, SegConfig) else SegConfig(**config)
    rank, world = setup_distributed(cfg.distributed, "bundles/deeplab_acdc/multi_gpu_train.json")
    out = Path(cfg.output_dir)
    run = RunLayout(out)
    stage_dir = run.seg.path
    cam_manifest = run.cam.manifest
    if not cam_manifest.is_file() or not run.datalist.is_file():
        raise FileNotFoundError(
            f"{out} holds no stage-2 output; make stages 1 and 2 first: python -m acdc_wsss run "
            f"--output_dir {out} (or the l2g_acdc bundles train.json, then infer.json)."
        )
    manifest2 = json.loads(cam_manifest.read_text(encoding="utf-8"))
    classes = manifest2["classes"]
    if manifest2.get("dataset", "acdc") == "acdc":
        stage_data = _acdc_data(out, manifest2, cfg)
    else:  # before any work: a registered builder refuses missing pseudo labels now
        stage_data = get_seg_data(manifest2["dataset"])(out, manifest2, cfg)
    resuming = prepare_stage_dir(stage_dir, cfg, rank)
    set_determinism(seed=cfg.seed)
    device = torch.device(cfg.device)
    in_channels = stage_data.in_channels
    model = SegNet(len(classes) + 1, in_channels, cfg).to(device)
    net: nn.Module = model
    if world > 1:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = build_optimizer(
        param_groups([model], cfg.lr, cfg.new_lr_mult), cfg.optimizer, cfg.lr, cfg.weight_decay
    )
    sched = lr_scheduler(opt, cfg.lr_schedule, cfg.epochs)
    aug, data = stage_data.augmentation, stage_data.train
    sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
    loader = DataLoader(data, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers)

    def epoch_start(engine: Any) -> None:  # data order and augmentation derive from (seed, epoch, rank)
        sampler.set_epoch(engine.state.epoch)
        aug.set_random_state(seed=(cfg.seed * 1_000_003 + engine.state.epoch * 7919 + rank) % 2**32)

    def step(engine: Any, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        model.train()
        x, target = batch["image"].to(device), batch["target"].to(device)
        loss = _loss(net(x), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.item()}

    def validate(engine: Any) -> dict[str, float]:
        return stage_data.validate(model, device)

    trainer = build_trainer(
        step,
        output_dir=stage_dir,
        save_dict={"model": model, "optimizer": opt, **({"scheduler": sched} if sched else {})},
        scheduler=sched,
        validate=validate if stage_data.validate is not None else None,
        val_interval=cfg.val_interval,
        key_metric=stage_data.key_metric,
        progress=cfg.progress,
        tensorboard=cfg.tensorboard,
        rank=rank,
        on_epoch_start=[epoch_start],
    )
    pseudo = json.loads(run.cam.pseudo_manifest.read_text(encoding="utf-8"))
    pseudo.pop("volumes", None)
    manifest = {
        "stage": STAGE,
        "status": "running",
        "config": cfg.to_dict(),
        "config_digest": config_digest(cfg),
        "seed": cfg.seed,
        "classes": classes,
        "in_channels": in_channels,
        "preprocess": manifest2["preprocess"],
        "dataset": manifest2.get("dataset", "acdc"),
        "pseudo_labels": pseudo,
        "training_slices": len(data),
        "versions": versions(),
    }
    run_recorded(trainer, loader, cfg.epochs, manifest, stage_dir, model, rank, world, resuming, handlers)
    return stage_dir


def load_seg(
    output_dir: str | Path, checkpoint: str = "last", device: str | torch.device = "cpu"
) -> tuple[dict[str, Any], SegNet]:
    """Load a finished stage 3: its manifest and network from ``checkpoint``.pt (refusing a missing,
    unfinished or foreign one with the command that makes it)."""
    make = (
        f"python -m monai.bundle run --config_file bundles/deeplab_acdc/train.json --output_dir {output_dir}"
    )

    def build(manifest: dict[str, Any], cfg: SegConfig) -> SegNet:
        return SegNet(len(manifest["classes"]) + 1, manifest["in_channels"], cfg)

    return load_finished_stage(  # type: ignore[return-value]
        RunLayout(output_dir).seg.path, STAGE, "stage 3", make, checkpoint, SegConfig, build, device
    )
