"""What stage 3 trains and validates on: :class:`StageData`, built per data set.

For ACDC (:func:`acdc_seg_data`): the run's preprocessed training slices with their exported stage-2
targets (``target``: pseudo labels with uncertain pixels 255, ignored by the loss) and, with
``confidence_weight``, their per-pixel confidence (``weight``), augmented by a MONAI chain
(:func:`augmentation`), and validation against the validation patients' pseudo labels (and, for
evaluation only, their masks).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import get_track_meta, set_track_meta
from monai.transforms import (
    Compose,
    Rand2DElasticd,
    RandAdjustContrastd,
    RandAffined,
    RandBiasFieldd,
    RandCoarseDropoutd,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
)
from torch import nn
from torch.utils.data import Dataset

from acdc_wsss.data.registry import register_seg_data
from acdc_wsss.data.slices import SliceDataset, volume_key
from acdc_wsss.labels import argmax_labels
from acdc_wsss.layout import RunLayout
from acdc_wsss.metrics import DiceAccumulator
from acdc_wsss.seg.config import SegConfig
from acdc_wsss.seg.model import SegNet, input_channels, network_slices, predict_slices, slice_input

__all__ = [
    "PseudoLabelSlices",
    "StageData",
    "acdc_seg_data",
    "augmentation",
    "read_targets",
    "training_items",
    "untracked",
]


@dataclass
class StageData:
    """What stage 3 trains and validates on: ``train`` yields ``image`` and ``target`` (255 ignored);
    ``validate(model, device)`` returns metrics (or is None); ``augmentation`` is reseeded every epoch."""

    train: Dataset
    in_channels: int
    augmentation: Any
    validate: Callable[[nn.Module, torch.device], dict[str, float]] | None
    key_metric: str | None


class PseudoLabelSlices(Dataset):
    """Slices of a :class:`SliceDataset` with their stage-2 targets (and per-pixel loss ``weights``, e.g.
    the stage-2 confidence), augmented by a MONAI chain."""

    def __init__(
        self,
        slices: SliceDataset,
        targets: list[np.ndarray],
        transform: Any | None = None,
        weights: list[np.ndarray] | None = None,
        context: int = 0,
        motion: bool = False,
    ):
        self.slices, self.targets, self.transform, self.weights = slices, targets, transform, weights
        self.context, self.motion = context, motion

    def __len__(self) -> int:
        return len(self.slices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        v, z = self.slices.index[i]
        vol = self.slices.volumes[v]
        d = {
            "image": slice_input(vol["image"], z, self.context),
            "target": torch.as_tensor(self.targets[v][None, :, :, z].astype(np.float32)),
            "weight": torch.ones(1, *self.targets[v].shape[:2])
            if self.weights is None
            else torch.as_tensor(self.weights[v][None, :, :, z].astype(np.float32)),
        }
        if self.motion:
            d["motion"] = slice_input(vol["motion"], z, self.context)
        if self.transform is not None:
            d = untracked(self.transform, d)
        image = torch.as_tensor(d["image"])
        if self.motion:  # the motion map's channels follow the image's, as at inference (slice_input)
            image = torch.cat([image, torch.as_tensor(d["motion"])])
        return {
            "image": image,
            "target": torch.as_tensor(d["target"])[0].long(),
            "weight": torch.as_tensor(d["weight"])[0].float(),
        }


def untracked(transform: Callable[[Any], Any], data: Any) -> Any:
    """``transform(data)`` with MONAI's metadata tracking off: training slices need no affine or transform
    history, and keeping them costs more than the warping itself (``bench/speed.py``)."""
    was = get_track_meta()
    set_track_meta(False)
    try:
        return transform(data)
    finally:
        set_track_meta(was)


def augmentation(cfg: SegConfig) -> Compose:
    """Training augmentation: scale and rotation (targets nearest, loss weights bilinear, padding weighted
    0), an elastic deformation (``aug_elastic``), flip, intensity scale and shift, gamma (contrast), a
    smooth intensity field (``aug_bias``); with ``motion_input`` the motion map moves with
    the image, keeps its values, and is zeroed on a ``motion_dropout`` share of the slices."""
    keys = ["image", "target", "weight"] + (["motion"] if cfg.motion_input else [])
    # every spatial step: targets nearest, the rest bilinear, zeros outside
    warp: dict[str, Any] = {
        "mode": ("bilinear", "nearest", "bilinear", "bilinear")[: len(keys)],
        "padding_mode": "zeros",
    }
    steps: list[Any] = [
        RandAffined(
            keys,
            prob=0.7,
            rotate_range=(math.radians(cfg.aug_rotate),),
            scale_range=(cfg.aug_scale, cfg.aug_scale),
            **warp,
        ),
    ]
    if cfg.aug_elastic > 0:
        steps.append(
            Rand2DElasticd(
                keys,
                spacing=(24, 24),
                magnitude_range=(0.0, cfg.aug_elastic),
                prob=1 / 3,
                **warp,
            )
        )
    if cfg.motion_input and cfg.motion_dropout > 0:
        # one hole the size of the slice: the whole map zeroed
        steps.append(
            RandCoarseDropoutd(
                "motion", holes=1, spatial_size=(-1, -1), fill_value=0.0, prob=cfg.motion_dropout
            )
        )
    if cfg.aug_flip:
        steps.append(RandFlipd(keys, prob=0.5, spatial_axis=1))
    if cfg.aug_intensity > 0:
        steps += [
            RandScaleIntensityd("image", factors=cfg.aug_intensity, prob=0.5),
            RandShiftIntensityd("image", offsets=cfg.aug_intensity, prob=0.5),
        ]
    if cfg.aug_gamma > 0:
        gamma = (1 / (1 + cfg.aug_gamma), 1 + cfg.aug_gamma)
        steps.append(RandAdjustContrastd("image", prob=0.5, gamma=gamma))
    if cfg.aug_bias > 0:
        steps.append(RandBiasFieldd("image", degree=3, coeff_range=(-cfg.aug_bias, cfg.aug_bias), prob=0.5))
    return Compose(steps)


def read_targets(
    output_dir: Path, ds: SliceDataset, key: str = "target", pseudo_dir: str | os.PathLike | None = None
) -> list[np.ndarray]:
    """The exported stage-2 arrays (``target``, ``labels`` or ``confidence``) of every volume of ``ds``
    (from ``pseudo_dir`` when given: a self-training round's labels), refusing missing ones with the
    command that makes them."""
    stage2 = RunLayout(output_dir).cam
    make = (
        "python -m monai.bundle run --config_file \"['bundles/l2g_acdc/train.json',"
        f"'bundles/l2g_acdc/infer.json']\" --output_dir {output_dir}"
    )
    folder = Path(pseudo_dir) if pseudo_dir is not None else stage2.pseudo
    if not (folder / stage2.pseudo_manifest.name).is_file():
        raise FileNotFoundError(
            f"{folder} holds no pseudo labels (no {stage2.pseudo_manifest.name}); make them with: {make}"
        )
    out = []
    for item, vol in zip(ds.items, ds.volumes, strict=True):
        path = folder / stage2.pseudo_labels(volume_key(item)).name
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; make the pseudo labels with: {make}")
        with np.load(path) as z:
            if key not in z.files:
                raise ValueError(
                    f"{path} holds no {key!r} (made by an older version); remake it with: {make}"
                )
            arr = z[key]
        if arr.shape != tuple(vol["image"].shape[1:]):
            raise ValueError(
                f"{path}: shape {arr.shape} does not match the preprocessed volume "
                f"{tuple(vol['image'].shape[1:])}; the pseudo labels are stale, remake them with: {make}"
            )
        out.append(arr)
    return out


def _validation(
    model: SegNet, ds: SliceDataset, pseudo: list[np.ndarray], device: torch.device
) -> dict[str, float]:
    k = ds.num_classes + 1
    agree, truth = DiceAccumulator(list(range(k))), DiceAccumulator(list(range(k)))
    for v, vol in enumerate(ds.volumes):
        x = network_slices(model, vol["image"].as_tensor(), vol["motion"])
        pred = argmax_labels(predict_slices(model, x, device)).permute(1, 2, 0).numpy()
        agree.update(pred, pseudo[v])
        if vol["label"] is not None:
            truth.update(pred, vol["label"][0].numpy())
    result = {"pseudo_dice": float(np.nanmean(agree.compute()[1:]))}
    if any(vol["label"] is not None for vol in ds.volumes):
        dice = truth.compute()[1:]
        result.update({f"dice_{c}": float(d) for c, d in zip(ds.classes, dice, strict=True)})
        result["dice_mean"] = float(np.nanmean(dice))
    return result


def training_items(
    run: RunLayout, manifest2: dict[str, Any], train_on_validation: bool
) -> list[dict[str, Any]]:
    """The volumes stage 3 trains on: the training split's, and with ``train_on_validation`` the validation
    split's too (their pseudo labels, which stage 2 made from their tags; never their masks)."""
    items = run.split("training")
    if train_on_validation and "validation" in manifest2["splits"]:
        items += run.split("validation")
    return items


@register_seg_data("acdc")
def acdc_seg_data(out: Path, manifest2: dict[str, Any], cfg: SegConfig) -> StageData:
    """Stage 3 on ACDC: the training patients' slices with their targets (and the validation patients' with
    ``train_on_validation``), validated on the validation patients' pseudo labels; refuses missing pseudo
    labels before any work."""
    run = RunLayout(out)
    items = training_items(run, manifest2, cfg.train_on_validation)
    train_ds = run.slices(manifest2, items, progress=cfg.progress)
    # before any work: refuse missing pseudo labels now
    train_targets = read_targets(out, train_ds, pseudo_dir=cfg.pseudo_dir)
    has_val = "validation" in manifest2["splits"]
    val_items = run.split("validation") if has_val else []
    val_ds = run.slices(manifest2, val_items, progress=cfg.progress) if val_items else None
    val_pseudo = read_targets(out, val_ds, "labels") if val_ds is not None else []
    weights = read_targets(out, train_ds, "confidence", cfg.pseudo_dir) if cfg.confidence_weight else None
    aug = augmentation(cfg)
    return StageData(
        train=PseudoLabelSlices(train_ds, train_targets, aug, weights, cfg.context_slices, cfg.motion_input),
        in_channels=input_channels(int(train_ds.volumes[0]["image"].shape[0]), cfg),
        augmentation=aug,
        validate=(lambda model, device: _validation(model, val_ds, val_pseudo, device)) if val_ds else None,
        key_metric="pseudo_dice" if val_ds is not None else None,
    )
