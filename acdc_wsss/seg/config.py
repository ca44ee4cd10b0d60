"""Stage-3 settings: :class:`SegConfig`, one field per id of ``bundles/deeplab_acdc/train.json``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from acdc_wsss.config import check_types

__all__ = ["LOSSES", "NETWORKS", "SegConfig"]

NETWORKS = ("deeplab", "unet")
LOSSES = ("ce", "dice_ce", "bootstrap")


@dataclass
class SegConfig:
    """Settings of stage 3 (every field can be overridden from the bundle command line).

    Network: ``network`` (``unet``: MONAI's BasicUNet at full resolution, the default, better on the
    validation patients; ``deeplab``: DeepLab-v2, the paper's network, used on photos),
    ``backbone``, ``width``, ``multiscale`` (DeepLab's multi-scale input), ``pretrained`` (local backbone
    weights), ``input_scale`` (slices are enlarged by this factor before the network and the scores shrunk
    back: DeepLab's stride 8 is coarse on 128-pixel slices). Optimisation: ``epochs``, ``batch_size``,
    ``optimizer``, ``lr``, ``new_lr_mult``, ``weight_decay``, ``lr_schedule``. Augmentation: ``aug_scale``
    (fraction), ``aug_rotate`` (degrees), ``aug_flip``, ``aug_intensity`` (fraction), ``aug_gamma`` (the
    image's contrast curve raised to a power drawn from ``[1 / (1 + g), 1 + g]``, half the time; 0: off;
    the stronger scale, rotation and gamma defaults were chosen on the validation patients with two seeds);
    ``aug_bias``: a smooth multiplicative intensity field (MRI coil shading), its polynomial coefficients
    drawn from ``[-aug_bias, aug_bias]``, half the time (0: off); ``aug_elastic``: a smooth elastic
    deformation of image and target, control points 24 pixels apart moved by up to this many pixels, on
    a third of the slices (0: off);
    ``image_size``: the training crop of photo data sets (VOC). Loss: ``loss`` (``ce``: cross-entropy;
    ``dice_ce``: plus MONAI's masked Dice loss; ``bootstrap``: soft bootstrapping, the target mixed 80/20
    with the network's own detached prediction, so confident disagreement with a noisy label costs less),
    ``label_smoothing`` (cross-entropy against a target with this mass spread over all classes),
    ``confidence_weight`` (each pixel's cross-entropy weighted by the stage-2 confidence exported beside
    its pseudo label). ``ema``: the decay of an exponential moving average of the weights, updated every
    step, that is validated, checkpointed as ``model`` and used at inference (0: off, the default; it lost
    on the validation patients).
    ``pseudo_dir``: where the training targets are read (None:
    stage 2's ``cam/pseudo``; a self-training round's folder). ``rounds``: self-training rounds (each
    trained network relabels the training patients, fused with the stage-2 labels, for a fresh network;
    0: one network on the stage-2 labels). ``train_on_validation``: the validation patients' pseudo labels
    (never their masks) join the training set, once every setting has been chosen on them (the default:
    every labelled patient for the shipped network; then the validation Dice is no longer held out, so
    every benchmark that chooses a setting trains with False). ``context_slices``: neighbouring slices on each
    side given to the network as extra input channels (2.5D; 0: plain 2D). ``motion_input``: the ED-ES
    motion map (the smoothed difference of a frame and its ED/ES partner, all zeros for a frame without
    one) as one more input channel per slice; ``motion_dropout``: the share of training slices whose motion
    channel is zeroed, so a single file, whose map is empty, stays within what the network saw.
    ``ensemble``: networks trained alike but for their seeds (``seed``, ``seed + 1``, ...), whose softmax
    probabilities inference averages (1: one network). Engine: as stage 1.
    """

    output_dir: str = "runs/l2g_acdc"
    network: str = "unet"
    backbone: str = "resnet18"
    width: float = 0.5
    multiscale: bool = False
    pretrained: str | None = None
    input_scale: float = 1.0
    epochs: int = 8
    batch_size: int = 8
    optimizer: str = "adamw"
    lr: float = 1e-3
    new_lr_mult: float = 10.0
    weight_decay: float = 1e-4
    lr_schedule: str = "poly"
    aug_scale: float = 0.3
    aug_rotate: float = 30.0
    aug_flip: bool = True
    aug_intensity: float = 0.1
    aug_gamma: float = 0.5
    aug_bias: float = 0.0
    aug_elastic: float = 0.0
    loss: str = "ce"
    label_smoothing: float = 0.0
    ema: float = 0.0
    confidence_weight: bool = False
    pseudo_dir: str | None = None
    rounds: int = 0
    train_on_validation: bool = True
    context_slices: int = 0
    motion_input: bool = False
    motion_dropout: float = 0.2
    ensemble: int = 1
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
            (self.loss in LOSSES, f"loss must be one of {LOSSES}"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
            (self.ensemble >= 1, "ensemble must be >= 1"),
            (0 <= self.ema < 1, "ema must be in [0, 1)"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.rounds >= 0, "rounds must be >= 0"),
            (self.context_slices >= 0, "context_slices must be >= 0"),
            (0 <= self.motion_dropout < 1, "motion_dropout must be in [0, 1)"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.input_scale > 0, "input_scale must be > 0"),
            (self.optimizer in ("sgd", "adamw"), "optimizer must be 'sgd' or 'adamw'"),
            (self.lr_schedule in ("poly", "step", "none"), "lr_schedule must be 'poly', 'step' or 'none'"),
            (
                0 <= self.aug_scale < 1
                and min(self.aug_rotate, self.aug_gamma, self.aug_bias, self.aug_elastic) >= 0,
                "aug_scale must be in [0, 1); aug_rotate, aug_gamma, aug_bias and aug_elastic >= 0",
            ),
            (len(self.unet_features) == 6, "unet_features needs 6 numbers"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"Stage 3 config: {msg}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
