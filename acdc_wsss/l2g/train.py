"""Stage 1: train the L2G global and local CAM classifiers (or the plain-CAM baseline) from slice tags.

``run_l2g(L2GConfig(...))`` is what ``bundles/l2g_acdc/train.json`` calls. It writes ``output_dir/l2g/``:
``last.pt`` and ``best.pt`` (networks, optimiser, scheduler, engine state), ``metrics.json`` (per-epoch
losses and validation) and ``manifest.json`` (resolved config, seed, versions, data, splits, results).
The run's datalist (``output_dir/datalist.json``) and preprocessed slices (``output_dir/cache``) are shared
with the later stages.

Deliberate changes to the reference L2G code, each a switch (``L2GConfig``):

- ``global_cls``: the global classifier also gets the classification loss (the reference gives it none).
- ``bg_weight``: the local network's background channel is trained (the reference never trains it):
  ``MSE(softmax(local)[bg], 1 - S)`` with a saliency map ``S``, else against one minus the tagged classes'
  normalised scores.
- Random local views read height and width as such; training data are shuffled (seeded per epoch); class
  counts come from the data; CAMs stay floating point (stage 2).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from monai.utils import set_determinism
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from acdc_wsss.cam_maps import cam_labels, cam_scores
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
from acdc_wsss.data.acdc import make_datalist, split_patients, write_datalist
from acdc_wsss.data.check import validated_patients
from acdc_wsss.data.phantom import ensure_phantom
from acdc_wsss.data.preprocess import PreprocessConfig
from acdc_wsss.data.registry import get_dataset
from acdc_wsss.data.slices import SliceDataset
from acdc_wsss.engine import build_trainer
from acdc_wsss.errors import DatasetError
from acdc_wsss.l2g.core import (
    attention_loss,
    attention_target,
    background_loss,
    classification_loss,
    crop_views,
    pooled_logits,
    roi_align,
    smooth_saliency,
    view_boxes,
)
from acdc_wsss.layout import L2G_STAGE, RunLayout
from acdc_wsss.metrics import DiceAccumulator, multilabel_scores
from acdc_wsss.networks import CAMNet
from acdc_wsss.utils import write_json

__all__ = [
    "L2GConfig",
    "L2GModel",
    "build_l2g_optimizer",
    "evaluate_classifier",
    "evaluate_l2g",
    "load_l2g",
    "make_step",
    "run_l2g",
]

logger = logging.getLogger(__name__)

STAGE = L2G_STAGE
#: Constant background scores tried when CAM Dice is evaluated (the best is reported).
BG_SWEEP: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)
#: Thresholds on the learned background probability tried for the heart Dice of the background channel.
BG_CHANNEL_SWEEP: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9)


@dataclass
class L2GConfig:
    """Settings of stage 1 (every field can be overridden from the bundle command line).

    Data: ``dataset_dir`` (None: the phantom in ``phantom_dir``), ``output_dir``, ``dataset`` (``acdc`` or
    one an adapter registers, e.g. ``voc``; see :mod:`acdc_wsss.data.registry`), ``image_size`` (training
    crop of RGB data sets), ``splits`` (patient fractions), ``split_seed``, ``skip_bad``, ``tags_csv``,
    preprocessing ``spacing``/``roi_size``/``centre``.
    Networks: ``backbone``, ``width``, ``pcm``, ``pretrained``. Method: ``l2g`` (False: plain-CAM baseline),
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


class L2GModel(nn.Module):
    """The global and (with L2G) local CAM classifiers, trained together by one optimiser."""

    def __init__(self, num_classes: int, in_channels: int, cfg: L2GConfig) -> None:
        super().__init__()

        def net() -> CAMNet:
            return CAMNet(num_classes, cfg.backbone, in_channels, cfg.width, cfg.pcm, cfg.pretrained)

        self.cfg = (
            cfg  # the settings it was built with (pooling and saliency are needed again to evaluate it)
        )
        self.global_net = net()
        self.local_net = net() if cfg.l2g else None


def prepare_data(
    cfg: L2GConfig, rank: int = 0
) -> tuple[Path, dict[str, list[str]], SliceDataset, SliceDataset | None]:
    """Dataset folder (the phantom when none is given), checked; patient split; datalist; slice datasets.

    A ``dataset`` other than ``acdc`` is built by its registered builder (:mod:`acdc_wsss.data.registry`).
    """
    out = Path(cfg.output_dir)
    run = RunLayout(out)
    if cfg.dataset != "acdc":
        if cfg.dataset_dir is None:
            raise DatasetError(f"dataset {cfg.dataset!r} needs --dataset_dir (there is no phantom of it).")
        return get_dataset(cfg.dataset)(cfg, out, rank)
    if cfg.dataset_dir is None:
        data = Path(cfg.phantom_dir)
        if rank == 0:
            ensure_phantom(data, cfg.phantom_patients, cfg.seed, progress=cfg.progress)
        if dist.is_initialized():
            dist.barrier()
    else:
        data = Path(cfg.dataset_dir)
        if out.resolve().is_relative_to(data.resolve()):
            raise DatasetError(
                f"output_dir {out} lies inside the dataset {data}; choose a folder outside it."
            )
    patients = validated_patients(data, skip_bad=cfg.skip_bad, progress=cfg.progress and rank == 0)
    splits = split_patients(patients, cfg.splits, seed=cfg.split_seed)
    if not splits["training"]:
        raise DatasetError(f"{data}: no patient left for training with splits {cfg.splits}.")
    if rank == 0:
        write_datalist(make_datalist(patients, data, splits), run.datalist)
    if dist.is_initialized():
        dist.barrier()
    pre = PreprocessConfig(spacing=cfg.spacing, roi_size=cfg.roi_size, centre=cfg.centre)
    kw = {"config": pre, "tags_csv": cfg.tags_csv, "cache_dir": run.cache, "progress": cfg.progress}
    train = SliceDataset(run.split("training"), **kw)
    val = SliceDataset(run.split("validation"), **kw) if splits.get("validation") else None
    return data, splits, train, val


@torch.no_grad()
def evaluate_classifier(
    net: nn.Module,
    loader: DataLoader,
    device: torch.device,
    classes: list[str],
    pool_weight: Callable[[dict[str, Any]], torch.Tensor | None] | None = None,
) -> dict:
    """Tag mAP/F1 of a CAM classifier, and CAM Dice against the masks (evaluation only).

    CAM Dice: single-scale PCM maps, ReLU, per-class max normalisation, tagged classes only, a constant
    background score (the best of :data:`BG_SWEEP` is reported), 2D Dice pooled over all slices;
    ``heart_dice`` is the Dice of any class vs background at that score. ``bg_channel_heart_dice``: the
    heart as the pixels whose learned background probability (softmax over the PCM maps) is under a
    threshold (the best of :data:`BG_CHANNEL_SWEEP`). ``pool_weight(batch)`` gives the weights of
    saliency-pooled logits when the classifier was trained with them.
    """
    was_training = net.training
    net.eval()
    logits, tags = [], []
    acc = {bg: DiceAccumulator(range(1, len(classes) + 1)) for bg in BG_SWEEP}
    heart = {bg: DiceAccumulator([1]) for bg in BG_SWEEP}
    bg_heart = {t: DiceAccumulator([1]) for t in BG_CHANNEL_SWEEP}
    for batch in loader:
        x, t = batch["image"].to(device), batch["tags"].to(device)
        out = net(x)
        weight = pool_weight(batch) if pool_weight is not None else None
        z = pooled_logits(out["cam"], weight.to(device)) if weight is not None else out["logits"]
        logits.append(z.cpu())
        tags.append(t.cpu())
        scores = cam_scores(out["pcm"], tuple(x.shape[2:]), t)
        has = batch["has_label"].bool()
        if not has.any():
            continue
        ref = batch["label"][has, 0]
        for bg in BG_SWEEP:
            pred = cam_labels(scores[has.to(scores.device)], bg).cpu()
            acc[bg].update(pred, ref)
            heart[bg].update((pred > 0).long(), (ref > 0).long())
        maps = F.interpolate(out["pcm"][has.to(x.device)].float(), tuple(x.shape[2:]), mode="bilinear")
        p_bg = torch.softmax(maps, dim=1)[:, 0].cpu()
        for t in BG_CHANNEL_SWEEP:
            bg_heart[t].update((p_bg < t).long(), (ref > 0).long())
    net.train(was_training)
    result: dict[str, Any] = multilabel_scores(torch.cat(logits), torch.cat(tags), classes)
    dice = {bg: a.compute() for bg, a in acc.items()}
    best = max(BG_SWEEP, key=lambda bg: np.nan_to_num(np.nanmean(dice[bg]), nan=-1.0))
    result.update(
        {
            "cam_dice": {c: float(d) for c, d in zip(classes, dice[best], strict=True)},
            "cam_dice_mean": float(np.nanmean(dice[best])),
            "cam_bg_score": best,
            "heart_dice": float(heart[best].compute()[0]),
        }
    )
    bg_dice = {t: float(a.compute()[0]) for t, a in bg_heart.items()}
    best_t = max(BG_CHANNEL_SWEEP, key=lambda t: np.nan_to_num(bg_dice[t], nan=-1.0))
    result.update(bg_channel_heart_dice=bg_dice[best_t], bg_channel_threshold=best_t)
    return result


def _pool_weight(cfg: L2GConfig) -> Callable[[dict[str, Any]], torch.Tensor | None] | None:
    """The weights of saliency-pooled logits for a batch, as training used them (None: plain mean)."""
    if not (cfg.saliency_pool and cfg.l2g and cfg.saliency_key):
        return None
    key, sigma = cfg.saliency_key, cfg.saliency_sigma
    return lambda batch: smooth_saliency(batch[key], sigma) if key in batch else None


def _flat(metrics: dict[str, Any]) -> dict[str, float]:
    keys = ("map", "prior_map", "macro_f1", "cam_dice_mean", "heart_dice", "bg_channel_heart_dice")
    return {k: float(metrics[k]) for k in keys if k in metrics}


def build_l2g_optimizer(model: L2GModel, cfg: L2GConfig) -> torch.optim.Optimizer:
    """The stage-1 optimiser: both networks, heads at ``new_lr_mult`` times the learning rate."""
    nets = [n for n in (model.global_net, model.local_net) if n is not None]
    return build_optimizer(
        param_groups(nets, cfg.lr, cfg.new_lr_mult), cfg.optimizer, cfg.lr, cfg.weight_decay
    )


def make_step(
    cfg: L2GConfig,
    model: L2GModel,
    gnet: nn.Module,
    lnet: nn.Module | None,
    opt: torch.optim.Optimizer,
    device: torch.device,
    rank: int = 0,
) -> Any:
    """The training iteration ``step(engine, batch) -> dict of float losses`` (L2G or, without ``l2g``,
    the plain-CAM baseline). ``gnet``/``lnet`` are the model's networks, DDP-wrapped where distributed.

    Local views come from a generator seeded by (seed, global iteration, rank), so a resumed run draws the
    same views as an uninterrupted one.
    """

    def step(engine: Any, batch: dict[str, Any]) -> dict[str, float]:
        model.train()
        x, tags = batch["image"].to(device), batch["tags"].to(device)
        sal = batch[cfg.saliency_key].to(device) if cfg.saliency_key and cfg.saliency_key in batch else None
        if sal is not None:
            sal = smooth_saliency(sal, cfg.saliency_sigma)
        g = gnet(x)
        losses: dict[str, torch.Tensor] = {}
        pool = cfg.saliency_pool and cfg.l2g and sal is not None
        if cfg.global_cls or not cfg.l2g:
            logits = pooled_logits(g["cam"], sal) if pool else g["logits"]
            losses["cls_global"] = classification_loss(logits, tags)
        if cfg.l2g and lnet is not None:
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + engine.state.iteration * 7919 + rank)
            h, w = x.shape[2:]
            boxes = torch.stack([view_boxes(h, w, cfg.view_ratio, cfg.num_views, gen) for _ in range(len(x))])
            boxes = boxes.to(device)
            ltags = tags.repeat_interleave(cfg.num_views, dim=0)
            local = lnet(crop_views(x, boxes))
            lmap = local["pcm"]
            s_local = None
            if sal is not None:
                s_local = F.adaptive_avg_pool2d(crop_views(sal, boxes), lmap.shape[2:]).clamp(0, 1)
            target = attention_target(lmap, ltags, s_local, cfg.att_threshold)
            gcrops = roi_align(g["pcm"], boxes, tuple(lmap.shape[2:]), CAMNet.stride)
            losses["attention"] = attention_loss(gcrops, target, cfg.att_weight)
            local_logits = pooled_logits(local["cam"], crop_views(sal, boxes)) if pool else local["logits"]
            losses["cls_local"] = classification_loss(local_logits, ltags)
            if cfg.bg_weight > 0:
                losses["bg_local"] = cfg.bg_weight * background_loss(lmap, ltags, s_local)
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.item(), **{k: v.item() for k, v in losses.items()}}

    return step


def run_l2g(config: L2GConfig | dict[str, Any], handlers: tuple[Any, ...] = ()) -> Path:
    """Train stage 1 and return ``output_dir/l2g``.

    Args:
        config: settings (a dict is turned into :class:`L2GConfig`).
        handlers: extra callables ``f(trainer)`` attached before the run (tests use it to interrupt one).

    Raises:
        FileExistsError: the stage folder holds a finished or partial run and neither ``resume`` nor
            ``overwrite`` is set.
        DatasetError: the data set fails its check.
    """
    cfg = config if isinstance(config, L2GConfig) else L2GConfig(**config)
    rank, world = setup_distributed(cfg.distributed, "bundles/l2g_acdc/multi_gpu_train.json")
    stage_dir = RunLayout(cfg.output_dir).l2g.path
    resuming = prepare_stage_dir(stage_dir, cfg, rank)
    set_determinism(seed=cfg.seed)
    device = torch.device(cfg.device)
    data_dir, splits, train_ds, val_ds = prepare_data(cfg, rank)
    classes = list(train_ds.classes)
    in_channels = int(train_ds[0]["image"].shape[0])
    model = L2GModel(len(classes), in_channels, cfg).to(device)
    gnet, lnet = model.global_net, model.local_net
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        gnet = DistributedDataParallel(gnet, device_ids=ids)
        lnet = DistributedDataParallel(lnet, device_ids=ids) if lnet is not None else None
    opt = build_l2g_optimizer(model, cfg)
    sched = lr_scheduler(opt, cfg.lr_schedule, cfg.epochs)
    sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
    loader = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers)
    val_loader = DataLoader(val_ds, batch_size=32) if val_ds is not None else None
    step = make_step(cfg, model, gnet, lnet, opt, device, rank)

    def validate(engine: Any) -> dict[str, float]:
        if val_loader is None:
            return {}
        m = evaluate_classifier(model.global_net, val_loader, device, classes, _pool_weight(cfg))
        engine.state.val_detail = m
        return _flat(m)

    trainer = build_trainer(
        step,
        output_dir=stage_dir,
        save_dict={"model": model, "optimizer": opt, **({"scheduler": sched} if sched else {})},
        scheduler=sched,
        validate=validate if val_loader is not None else None,
        val_interval=cfg.val_interval,
        key_metric="map" if val_loader is not None else None,
        progress=cfg.progress,
        tensorboard=cfg.tensorboard,
        rank=rank,
        on_epoch_start=[lambda e: sampler.set_epoch(e.state.epoch)],
    )
    manifest = {
        "stage": STAGE,
        "status": "running",
        "config": cfg.to_dict(),
        "config_digest": config_digest(cfg),
        "seed": cfg.seed,
        "dataset_dir": str(data_dir.resolve()),
        "dataset": cfg.dataset,
        "classes": classes,
        "in_channels": in_channels,
        "splits": splits,
        "preprocess": train_ds.config.to_dict(),
        "versions": versions(),
    }
    run_recorded(
        trainer,
        loader,
        cfg.epochs,
        manifest,
        stage_dir,
        model,
        rank,
        world,
        resuming,
        handlers,
        on_complete=lambda t: {"final_validation": getattr(t.state, "val_detail", None)},
    )
    return stage_dir


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
    make = f"python -m monai.bundle run --config_file bundles/l2g_acdc/train.json --output_dir {output_dir}"

    def build(manifest: dict[str, Any], cfg: L2GConfig) -> L2GModel:
        return L2GModel(len(manifest["classes"]), manifest["in_channels"], cfg)

    return load_finished_stage(  # type: ignore[return-value]
        RunLayout(output_dir).l2g.path, STAGE, "stage 1", make, checkpoint, L2GConfig, build, device
    )


def evaluate_l2g(
    config: L2GConfig | dict[str, Any], split: str = "validation", checkpoint: str = "best"
) -> dict[str, Any]:
    """Evaluate a finished stage 1 on one split of its datalist; write ``l2g/evaluation_<split>.json``.

    Tag mAP/F1 against the tag prior, and CAM Dice against the masks (evaluation only).
    """
    cfg = config if isinstance(config, L2GConfig) else L2GConfig(**config)
    device = torch.device(cfg.device)
    manifest, model = load_l2g(cfg.output_dir, checkpoint, device)
    run = RunLayout(cfg.output_dir)
    items = run.split(split)
    if not items:
        raise DatasetError(f"{run.datalist}: split {split!r} is empty.")
    ds = run.slices(manifest, items, progress=cfg.progress)
    loader = DataLoader(ds, batch_size=32)
    result = evaluate_classifier(
        model.global_net, loader, device, manifest["classes"], _pool_weight(model.cfg)
    )
    result.update(split=split, checkpoint=checkpoint, slices=len(ds), l2g=manifest["config"]["l2g"])
    write_json(result, run.l2g.evaluation(split))
    logger.info("stage 1 on %s (%d slices): %s", split, len(ds), _flat(result))
    return result
