"""Stage-1 settings: :class:`L2GConfig`, one field per id of ``bundles/l2g_acdc/train.json``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from acdc_wsss.config import check_types

__all__ = ["L2GConfig"]


@dataclass
class L2GConfig:
    """Settings of stage 1 (every field can be overridden from the bundle command line).

    Data: ``dataset_dir`` (None: the phantom in ``phantom_dir``), ``output_dir``, ``dataset`` (``acdc`` or
    one an adapter registers, e.g. ``voc``; see :mod:`acdc_wsss.data.registry`), ``image_size`` (training
    crop of RGB data sets), ``splits`` (patient fractions), ``split_seed``, ``skip_bad``, ``tags_csv``,
    preprocessing ``spacing``/``roi_size``/``centre``.
    Networks: ``backbone``, ``width``, ``pcm``, ``pretrained``, ``pooled_map`` (``cam``: image-level
    logits pool the raw CAM; ``pcm``: the PCM output, as the reference), ``pcm_features`` (``raw`` or
    ``activated``: the backbone features after BN + ReLU, as the reference's ResNet-38), ``freeze``
    (backbone parameter-name prefixes kept at their initial, pretrained values; ``bn`` also freezes every
    BatchNorm layer, statistics included: the reference freezes ``bn``, ``conv1a``, ``b2``).
    Augmentation of RGB data sets: ``color_jitter`` (brightness, contrast, saturation and hue jitter).
    Method: ``l2g`` (False: plain-CAM baseline),
    ``num_views``, ``view_ratio``, ``att_weight``, ``att_threshold``, ``global_cls``, ``bg_weight``,
    ``saliency_key``, ``saliency_sigma`` (pixels of Gaussian smoothing of the saliency map; 0 keeps it),
    ``saliency_pool`` (with L2G, image-level logits pooled with the saliency map as weights, not a plain
    mean; the baseline always pools plainly).
    Optimisation: ``epochs``, ``batch_size``, ``optimizer``, ``lr``, ``new_lr_mult``, ``weight_decay``,
    ``lr_schedule``. Engine: ``val_interval``, ``resume``, ``overwrite``, ``seed``,
    ``device``, ``num_workers``, ``progress``, ``tensorboard``, ``distributed``.
    """

    dataset_dir: str | None = None
    output_dir: str = "runs/l2g_acdc"
    dataset: str = "acdc"
    image_size: int = 321
    phantom_dir: str = "data/phantom"
    phantom_patients: int = 10
    splits: dict[str, float] = field(
        default_factory=lambda: {"training": 0.6, "validation": 0.2, "testing": 0.2}
    )
    split_seed: int = 0
    skip_bad: bool = False
    tags_csv: str | None = None
    spacing: float = 1.5
    roi_size: list[int] = field(default_factory=lambda: [128, 128])
    centre: str = "motion"
    backbone: str = "resnet18"
    width: float = 0.25
    pcm: bool = True
    pretrained: str | None = None
    pooled_map: str = "cam"
    pcm_features: str = "raw"
    freeze: list[str] = field(default_factory=list)
    color_jitter: bool = False
    l2g: bool = True
    num_views: int = 6
    view_ratio: float = 0.625
    att_weight: float = 10.0
    att_threshold: float = 0.1
    global_cls: bool = True
    bg_weight: float = 1.0
    saliency_key: str | None = "motion"
    saliency_sigma: float = 4.0
    saliency_pool: bool = True
    epochs: int = 8
    batch_size: int = 8
    optimizer: str = "adamw"
    lr: float = 1e-3
    new_lr_mult: float = 10.0
    weight_decay: float = 5e-4
    lr_schedule: str = "poly"
    val_interval: int = 1
    resume: bool = False
    overwrite: bool = False
    seed: int = 0
    device: str = "cpu"
    num_workers: int = 0
    progress: bool = True
    tensorboard: bool = False
    distributed: bool = False

    def __post_init__(self) -> None:
        self.device = str(self.device)
        check_types(self, "L2G")
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.num_views >= 1, "num_views must be >= 1"),
            (0 < self.view_ratio <= 1, "view_ratio must be in (0, 1]"),
            (self.optimizer in ("sgd", "adamw"), "optimizer must be 'sgd' or 'adamw'"),
            (self.lr_schedule in ("poly", "step", "none"), "lr_schedule must be 'poly', 'step' or 'none'"),
            (self.val_interval >= 1, "val_interval must be >= 1"),
            ("training" in self.splits, "splits needs a 'training' fraction"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"L2G config: {msg}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
