"""VOC images as a dataset the training stages read, registered as ``dataset: voc``.

Each sample: ``image`` ``(3, S, S)`` ImageNet-normalised (a random training crop, or a centre crop for
validation), ``tags`` ``(20,)``, ``label`` ``(1, S, S)`` int64 (255 void), ``has_label``, ``id``, and
``saliency`` ``(1, S, S)`` in [0, 1] where the folder has ``Sal/``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset

from acdc_wsss.data.registry import register_dataset, register_seg_data, register_volumes
from acdc_wsss.errors import DatasetError
from acdc_wsss.labels import argmax_labels
from acdc_wsss.layout import RunLayout
from acdc_wsss.metrics import DiceAccumulator
from acdc_wsss.seg.data import StageData
from acdc_wsss.utils import write_json
from voc_adapter.data import VOC_CLASSES, find_voc_root, make_voc_datalist
from voc_adapter.transforms import load_rgb, voc_eval_transforms, voc_train_transforms, voc_val_transforms

__all__ = ["VOCConfig", "VOCImages", "VOCVolumes", "build_voc", "voc_seg_data", "voc_volumes"]

logger = logging.getLogger(__name__)


@dataclass
class VOCConfig:
    """How VOC images become network inputs (recorded in manifests)."""

    image_size: int = 321
    scale: tuple[float, float] = (0.5, 1.5)
    normalisation: str = "imagenet"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class VOCImages(Dataset):
    """VOC datalist items through a transform chain (see the module docstring for the samples)."""

    def __init__(
        self,
        items: Sequence[dict[str, Any]],
        transform: Callable[[dict[str, Any]], dict[str, Any]],
        config: VOCConfig | None = None,
        classes: Sequence[str] = VOC_CLASSES,
    ) -> None:
        if not items:
            raise DatasetError("VOCImages got no images: the image list is empty.")
        self.items, self.transform = list(items), transform
        self.config = config or VOCConfig()
        self.classes = tuple(classes)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.items[i]
        keys = ("image", "label", "saliency")
        d = self.transform({k: item[k] for k in keys if item.get(k)})
        sample = {
            "image": torch.as_tensor(d["image"]).float(),
            "tags": torch.as_tensor(item["tags"], dtype=torch.float32),
            "label": torch.as_tensor(d["label"]).long(),
            "has_label": True,
            "id": item["id"],
        }
        if "saliency" in d:
            sample["saliency"] = torch.as_tensor(d["saliency"]).float()
        return sample


#: The split of held-out training images that stage 2 chooses its settings on, and its share of train.
HOLDOUT = "holdout"
HOLDOUT_FRACTION = 0.15


@register_dataset("voc")
def build_voc(cfg: Any, out: Path, rank: int = 0) -> tuple[Path, dict[str, list[str]], VOCImages, VOCImages]:
    """The ``voc`` builder for the training stages: check the folder, write ``datalist.json`` (the
    official ``train_aug`` list where it exists, else ``train``, less a held-out part (:func:`hold_out`),
    and ``val``), and return the training
    (random crops) and validation (centre crops) sets."""
    if cfg.dataset_dir is None:
        raise DatasetError("dataset 'voc' needs --dataset_dir (there is no phantom of it).")
    data = Path(cfg.dataset_dir)
    if out.resolve().is_relative_to(data.resolve()):
        raise DatasetError(f"output_dir {out} lies inside the dataset {data}; choose a folder outside it.")
    root = find_voc_root(data)
    has_aug = any(
        (root / "ImageSets" / f / "train_aug.txt").is_file() for f in ("Segmentation", "SegmentationAug")
    )
    datalist = make_voc_datalist(data, {"training": "train_aug" if has_aug else "train", "validation": "val"})
    datalist = hold_out(datalist, getattr(cfg, "seed", 0))
    if rank == 0:
        write_json(datalist, RunLayout(out).datalist)
    if dist.is_initialized():
        dist.barrier()
    items = datalist["training"] + datalist["validation"]
    if getattr(cfg, "saliency_key", None) and not all("saliency" in it for it in items) and rank == 0:
        logger.warning(
            "%s has no Sal/ saliency maps (for every image): L2G's shape transfer runs without saliency.",
            data,
        )
    config = VOCConfig(image_size=cfg.image_size)
    aug = voc_train_transforms(
        cfg.image_size, config.scale, hue_saturation=getattr(cfg, "color_jitter", False)
    )
    train = VOCImages(datalist["training"], aug, config)
    val = VOCImages(datalist["validation"], voc_val_transforms(cfg.image_size), config)
    splits = {k: [it["id"] for it in datalist[k]] for k in ("training", "validation", HOLDOUT)}
    return data, splits, train, val


def hold_out(datalist: dict[str, Any], seed: int = 0, fraction: float = HOLDOUT_FRACTION) -> dict[str, Any]:
    """Move a seeded ``fraction`` of the training images (at least one) into the ``holdout`` split: stage 1
    never trains on them, and stage 2 chooses its settings (the CRF's among them) on them, so that nothing
    is chosen on val, which is reported."""
    train = list(datalist["training"])
    if len(train) < 2:
        raise DatasetError(f"{len(train)} training image(s): too few to hold some out for choosing settings.")
    n = min(len(train) - 1, max(1, round(fraction * len(train))))
    picked = set(np.random.default_rng(seed).choice(len(train), size=n, replace=False).tolist())
    return {
        **datalist,
        "training": [it for i, it in enumerate(train) if i not in picked],
        HOLDOUT: [it for i, it in enumerate(train) if i in picked],
    }


class _LazyImages(Sequence):
    """``volumes[v]`` of :class:`VOCVolumes`, loaded on access (a VOC split does not fit in memory)."""

    def __init__(self, owner: VOCVolumes) -> None:
        self.owner = owner
        self.last: tuple[int, dict[str, Any]] | None = None

    def __len__(self) -> int:
        return len(self.owner.items)

    def __getitem__(self, v: int) -> dict[str, Any]:  # type: ignore[override]
        if not 0 <= v < len(self):
            raise IndexError(v)
        if self.last is not None and self.last[0] == v:  # a stage reads one image a few times in a row
            return self.last[1]
        self.last = (v, self._load(v))
        return self.last[1]

    def _load(self, v: int) -> dict[str, Any]:
        item = self.owner.items[v]
        d = self.owner.transform({k: item[k] for k in ("image", "label") if item.get(k)})
        label = d.get("label")
        return {
            "image": torch.as_tensor(d["image"]).float()[..., None],  # (3, H, W, 1)
            "label": None if label is None else torch.as_tensor(label).to(torch.uint8)[..., None],
            "tags": torch.as_tensor(item["tags"], dtype=torch.float32)[None],  # (1, 20)
            "rgb": (load_rgb(item["image"]).transpose(1, 2, 0) * 255).round().astype(np.uint8)[..., None],
        }


class VOCVolumes:
    """Whole VOC images as one-slice "volumes" for the inference stages (CAMs, pseudo labels): ``image``
    ``(3, H, W, 1)`` normalised, ``label`` ``(1, H, W, 1)`` uint8 (255 void), ``tags`` ``(1, 20)``, and
    ``rgb`` ``(H, W, 3, 1)`` uint8 for the CRF. Items are keyed by image id."""

    def __init__(self, items: Sequence[dict[str, Any]], classes: Sequence[str] = VOC_CLASSES) -> None:
        if not items:
            raise DatasetError("VOCVolumes got no images: the split is empty.")
        self.items = [{**it, "key": it.get("key", it["id"])} for it in items]
        self.classes = tuple(classes)
        self.config = VOCConfig()
        self.transform = voc_eval_transforms()
        self.volumes = _LazyImages(self)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.items)


@register_volumes("voc")
def voc_volumes(
    items: Sequence[dict[str, Any]],
    preprocess: dict[str, Any],
    classes: Sequence[str],
    out: Path,
    progress: bool,
) -> VOCVolumes:
    """The ``voc`` builder of whole images for stage 2."""
    return VOCVolumes(items, classes)


class _Targets(Dataset):
    """VOC training crops with the stage-2 target as ``target`` ``(H, W)`` (255 ignored)."""

    def __init__(self, images: VOCImages) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s = self.images[i]
        return {"image": s["image"], "target": s["label"][0]}


@register_seg_data("voc")
def voc_seg_data(out: Path, manifest: dict[str, Any], cfg: Any) -> Any:
    """Stage 3 on VOC: random crops of the training images with their exported pseudo-label targets
    (``cam/pseudo/<id>_target.png``); validation mIoU against the val masks (evaluation only)."""
    if cfg.context_slices or cfg.rounds or cfg.motion_input:
        raise ValueError(
            "Stage 3 config: context_slices, rounds and motion_input apply to volumes (ACDC); a photo data"
            " set takes 0 / false."
        )
    if cfg.train_on_validation:
        raise ValueError(
            "Stage 3 config: train_on_validation must be False on photos: their validation images are the"
            " split the results are reported on (pass --train_on_validation False)."
        )
    run = RunLayout(out)
    datalist = json.loads(run.datalist.read_text(encoding="utf-8"))
    items = []
    for it in datalist["training"]:
        target = run.cam.pseudo_png(it["id"], target=True)
        if not target.is_file():
            raise FileNotFoundError(
                f"{target} not found; make the pseudo labels first: python -m voc_adapter run --voc-root "
                f"{datalist['base_dir']} --output_dir {out} --stages cam"
            )
        items.append({**it, "label": str(target)})
    config = VOCConfig(image_size=cfg.image_size)
    aug = voc_train_transforms(cfg.image_size, config.scale)
    train = _Targets(VOCImages(items, aug, config))
    val = (
        VOCImages(datalist["validation"], voc_val_transforms(cfg.image_size), config)
        if datalist.get("validation")
        else None
    )

    @torch.no_grad()
    def validate(model: torch.nn.Module, device: torch.device) -> dict[str, float]:
        model.eval()
        acc = DiceAccumulator(range(len(VOC_CLASSES) + 1))
        for i in range(len(val)):
            s = val[i]
            pred = argmax_labels(model(s["image"][None].to(device))["logits"])[0].cpu()
            ref = s["label"][0]
            acc.update(torch.where(ref == 255, 255, pred), ref)
        return {"miou": float(np.nanmean(acc.compute_iou()))}

    return StageData(
        train=train, in_channels=3, augmentation=aug, validate=validate if val else None, key_metric=None
    )
