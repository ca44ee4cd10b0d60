"""Stage 1: train the L2G global and local CAM classifiers (or the plain-CAM baseline) from slice tags.

``run_l2g(L2GConfig(...))`` is what ``bundles/l2g_acdc/train.json`` calls. It writes ``output_dir/l2g/``:
``last.pt`` and ``best.pt`` (networks, optimiser, scheduler, engine state), ``metrics.json`` (per-epoch
losses and validation) and ``manifest.json`` (resolved config, seed, versions, data, splits, results).
The run's datalist and preprocessed slices (``output_dir/cache``) are shared with the later stages (the run
folder's names: :mod:`acdc_wsss.layout`).

Deliberate changes to the reference L2G code, each a switch (``L2GConfig``):

- ``global_cls``: the global classifier also gets the classification loss (the reference gives it none).
- ``bg_weight``: the local network's background channel is trained (the reference never trains it):
  ``MSE(softmax(local)[bg], 1 - S)`` with a saliency map ``S``, else against one minus the tagged classes'
  normalised scores.
- Random local views read height and width as such; training data are shuffled (seeded per epoch); class
  counts come from the data; CAMs stay floating point (stage 2).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from monai.utils import set_determinism
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from acdc_wsss.config import (
    build_optimizer,
    config_digest,
    lr_scheduler,
    param_groups,
    prepare_stage_dir,
    run_recorded,
    setup_distributed,
    versions,
)
from acdc_wsss.engine import build_trainer, training_loader
from acdc_wsss.l2g.config import L2GConfig
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
from acdc_wsss.l2g.data import prepare_data  # the module registers the acdc training data
from acdc_wsss.l2g.evaluate import evaluate_classifier, flat_metrics
from acdc_wsss.l2g.model import L2GModel, pool_weight
from acdc_wsss.layout import L2G_STAGE, RunLayout
from acdc_wsss.networks import CAMNet
from acdc_wsss.utils import moved

__all__ = ["build_l2g_optimizer", "make_step", "run_l2g"]

logger = logging.getLogger(__name__)

#: Names that lived here before 0.2.0 (import them from :mod:`acdc_wsss.l2g`).
__getattr__ = moved(
    __name__,
    {
        "load_l2g": "acdc_wsss.l2g.model",
        "evaluate_l2g": "acdc_wsss.l2g.evaluate",
        "BG_SWEEP": "acdc_wsss.l2g.evaluate",
        "BG_CHANNEL_SWEEP": "acdc_wsss.l2g.evaluate",
    },
)


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
        pooled = "pcm" if cfg.pooled_map == "pcm" else "cam"  # the map saliency pooling reads too
        if cfg.global_cls or not cfg.l2g:
            logits = pooled_logits(g[pooled], sal) if pool else g["logits"]
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
            local_logits = pooled_logits(local[pooled], crop_views(sal, boxes)) if pool else local["logits"]
            losses["cls_local"] = classification_loss(local_logits, ltags)
            if cfg.bg_weight > 0:
                losses["bg_local"] = cfg.bg_weight * background_loss(lmap, ltags, s_local)
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.item(), **{k: v.item() for k, v in losses.items()}}

    return step


def _distributed(model: L2GModel, device: torch.device, world: int) -> tuple[nn.Module, nn.Module | None]:
    """The model's global and local networks, DDP-wrapped when ``world`` > 1."""
    gnet, lnet = model.global_net, model.local_net
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        gnet = DistributedDataParallel(gnet, device_ids=ids)
        lnet = DistributedDataParallel(lnet, device_ids=ids) if lnet is not None else None
    return gnet, lnet


def _manifest(
    cfg: L2GConfig, data_dir: Path, splits: dict[str, list[str]], train_ds: Any, in_channels: int
) -> dict[str, Any]:
    """What ``l2g/manifest.json`` records before training: settings, seed, data, split, versions."""
    return {
        "stage": L2G_STAGE,
        "status": "running",
        "config": cfg.to_dict(),
        "config_digest": config_digest(cfg),
        "seed": cfg.seed,
        "dataset_dir": str(data_dir.resolve()),
        "dataset": cfg.dataset,
        "classes": list(train_ds.classes),
        "in_channels": in_channels,
        "splits": splits,
        "preprocess": train_ds.config.to_dict(),
        "versions": versions(),
    }


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
    device = torch.device(cfg.device)
    data_dir, splits, train_ds, val_ds = prepare_data(cfg, rank)
    # seeded right before the weights are made (as stage 3 is), so nothing the data preparation does, such
    # as preprocessing that a filled cache skips, can change them
    set_determinism(seed=cfg.seed)
    classes = list(train_ds.classes)
    in_channels = int(train_ds[0]["image"].shape[0])
    model = L2GModel(len(classes), in_channels, cfg).to(device)
    gnet, lnet = _distributed(model, device, world)
    opt = build_l2g_optimizer(model, cfg)
    sched = lr_scheduler(opt, cfg.lr_schedule, cfg.epochs)
    # a data set's random training transforms (VOC's crops and flips) are seeded with the data order
    aug = getattr(train_ds, "transform", None)
    loader, epoch_start = training_loader(
        train_ds, aug, cfg.batch_size, cfg.num_workers, cfg.seed, world, rank
    )
    val_loader = DataLoader(val_ds, batch_size=32) if val_ds is not None else None
    step = make_step(cfg, model, gnet, lnet, opt, device, rank)

    def validate(engine: Any) -> dict[str, float]:
        if val_loader is None:
            return {}
        m = evaluate_classifier(model.global_net, val_loader, device, classes, pool_weight(cfg))
        engine.state.val_detail = m
        return flat_metrics(m)

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
        on_epoch_start=[epoch_start],
    )
    manifest = _manifest(cfg, data_dir, splits, train_ds, in_channels)
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
