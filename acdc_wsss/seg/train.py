"""Stage 3: a segmentation network (DeepLab-v2 by default) trained on the stage-2 pseudo labels.

``run_seg(SegConfig(output_dir=RUN))`` is what ``bundles/deeplab_acdc/train.json`` calls. It reads the
run's datalist, ``cache/`` and ``cam/pseudo/`` (the ``target`` arrays: pseudo labels with
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
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from monai.losses import MaskedDiceLoss
from monai.utils import set_determinism
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

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
from acdc_wsss.data.registry import get_seg_data
from acdc_wsss.engine import build_trainer, training_loader
from acdc_wsss.labels import IGNORE
from acdc_wsss.layout import MANIFEST, SEG_STAGE, RunLayout
from acdc_wsss.seg.config import SegConfig
from acdc_wsss.seg.data import StageData  # the module registers the acdc stage-3 data
from acdc_wsss.seg.model import SegNet
from acdc_wsss.seg.rounds import round_row, self_train, write_round_table
from acdc_wsss.utils import moved, read_json

__all__ = ["SegLoss", "run_seg"]

logger = logging.getLogger(__name__)

#: Names that lived here before 0.2.0 (import them from :mod:`acdc_wsss.seg`).
__getattr__ = moved(
    __name__,
    {
        "load_seg": "acdc_wsss.seg.model",
        "predict_slices": "acdc_wsss.seg.model",
        "PseudoLabelSlices": "acdc_wsss.seg.data",
        "StageData": "acdc_wsss.seg.data",
        "augmentation": "acdc_wsss.seg.data",
        "read_targets": "acdc_wsss.seg.data",
        "NETWORKS": "acdc_wsss.seg.config",
    },
)


#: Weight of the pseudo label in soft bootstrapping (``loss="bootstrap"``); the rest is the network's own
#: prediction.
BOOTSTRAP = 0.8


class SegLoss(nn.Module):
    """Stage 3's loss: pixel cross-entropy weighted by ``weight`` (the stage-2 confidence, or ones),
    normalised by the total weight, plus, with ``dice``, MONAI's masked Dice loss over the labelled pixels;
    pixels labelled :data:`~acdc_wsss.labels.IGNORE` count nowhere (a batch of only those gives zero,
    not NaN). Multi-scale DeepLab: each scale too.

    Noisy labels: ``label_smoothing`` spreads that mass of the target over all classes; ``bootstrap``
    (soft bootstrapping) takes as target ``bootstrap * label + (1 - bootstrap) * p``, ``p`` the network's
    own softmax (detached); None: the label alone."""

    def __init__(
        self, dice: bool = False, label_smoothing: float = 0.0, bootstrap: float | None = None
    ) -> None:
        super().__init__()
        self.dice = MaskedDiceLoss(include_background=False, to_onehot_y=True, softmax=True) if dice else None
        self.label_smoothing, self.bootstrap = label_smoothing, bootstrap

    def _ce(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(
            logits, target, ignore_index=IGNORE, reduction="none", label_smoothing=self.label_smoothing
        )
        if self.bootstrap is None:
            return ce
        own = torch.softmax(logits.detach().float(), dim=1)
        self_ce = -(own * F.log_softmax(logits, dim=1)).sum(dim=1)
        return self.bootstrap * ce + (1 - self.bootstrap) * self_ce

    def _one(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        known = target != IGNORE
        w = weight * known
        loss = (self._ce(logits, target) * w).sum() / w.sum().clamp_min(1e-6)
        if self.dice is not None:
            labels = torch.where(known, target, 0)[:, None]
            loss = loss + self.dice(logits, labels, mask=known[:, None].float())
        return loss

    def forward(
        self, out: dict[str, torch.Tensor], target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        if not bool((target != IGNORE).any()):  # a random crop of a VOC pseudo label can be all void
            return out["logits"].sum() * 0.0
        weight = torch.ones_like(target, dtype=torch.float32) if weight is None else weight
        loss = self._one(out["logits"], target, weight)
        for logits in out.get("scales", ()):
            loss = loss + self._one(logits, target, weight)
        return loss


def _stage2_manifest(run: RunLayout) -> dict[str, Any]:
    """Stage 2's manifest (``cam/manifest.json``), or the command that makes stages 1 and 2."""
    if not run.cam.manifest.is_file() or not run.datalist.is_file():
        raise FileNotFoundError(
            f"{run.root} holds no stage-2 output; make stages 1 and 2 first: python -m acdc_wsss run "
            f"--output_dir {run.root} (or the l2g_acdc bundles train.json, then infer.json)."
        )
    return json.loads(run.cam.manifest.read_text(encoding="utf-8"))


def _manifest(
    cfg: SegConfig, run: RunLayout, manifest2: dict[str, Any], in_channels: int, training_slices: int
) -> dict[str, Any]:
    """What ``seg/manifest.json`` records before training: settings, seed, data, pseudo-label source."""
    source = Path(cfg.pseudo_dir) / MANIFEST if cfg.pseudo_dir else run.cam.pseudo_manifest
    pseudo = json.loads(source.read_text(encoding="utf-8"))
    pseudo.pop("volumes", None)
    return {
        "stage": SEG_STAGE,
        "status": "running",
        "config": cfg.to_dict(),
        "config_digest": config_digest(cfg),
        "seed": cfg.seed,
        "classes": manifest2["classes"],
        "in_channels": in_channels,
        "preprocess": manifest2["preprocess"],
        "dataset": manifest2.get("dataset", "acdc"),
        "pseudo_labels": pseudo,
        "training_slices": training_slices,
        "versions": versions(),
    }


def run_seg(config: SegConfig | dict[str, Any], handlers: tuple[Any, ...] = ()) -> Path:
    """Train stage 3 and return ``output_dir/seg``.

    With ``rounds`` > 0, self-training: the network of round ``r`` trains in ``seg_rounds/round<r>/`` on
    round ``r``'s labels (round 0: stage 2's), then relabels the training patients for round ``r + 1``
    (:func:`~acdc_wsss.seg.rounds.relabel`); the last round's network trains in ``seg/``, and
    ``seg/rounds.json`` holds the round table. A finished round is kept on resume.

    Raises:
        FileNotFoundError: no stage-2 pseudo labels in ``output_dir`` (the message gives the command).
        FileExistsError: ``seg/`` holds a run and neither ``resume`` nor ``overwrite`` is set.
    """
    cfg = config if isinstance(config, SegConfig) else SegConfig(**config)
    if cfg.rounds > 0:
        return self_train(cfg, _train_stage, handlers)
    run = RunLayout(cfg.output_dir)
    stage_dir = _train_stage(cfg, run.seg.path, handlers)
    if read_json(run.seg.manifest)["dataset"] == "acdc":  # the round table: round 0 alone
        write_round_table(run, [round_row(run, 0, cfg.pseudo_dir, run.seg)])
    return stage_dir


def _train_stage(cfg: SegConfig, stage_dir: Path, handlers: tuple[Any, ...] = ()) -> Path:
    """Train the network of ``stage_dir``. The run's own ``seg/`` with ``cfg.ensemble`` > 1: first the other
    members, ``seg_members/member<k>/`` with seed ``cfg.seed + k`` (a finished one kept, an interrupted
    one resumed, unless ``overwrite``), then ``seg/`` itself, so a finished ``seg/`` means a finished
    ensemble. Self-training rounds before the last train one network each."""
    run = RunLayout(cfg.output_dir)
    if cfg.ensemble > 1 and Path(stage_dir) == run.seg.path:
        rank, _ = setup_distributed(cfg.distributed, "bundles/deeplab_acdc/multi_gpu_train.json")
        prepare_stage_dir(run.seg.path, cfg, rank)  # refuses a finished seg/ before any member trains
        if cfg.overwrite and rank == 0 and run.seg_members.exists():
            shutil.rmtree(run.seg_members)  # no member of an earlier, larger ensemble survives
        if dist.is_initialized():
            dist.barrier()
        for k in range(1, cfg.ensemble):
            member = run.seg_member(k)
            resume = member.last.is_file() and not cfg.overwrite
            member_cfg = dataclasses.replace(cfg, seed=cfg.seed + k, resume=resume, overwrite=False)
            recorded = read_json(member.manifest).get("config_digest") if member.complete else None
            if resume and recorded == config_digest(member_cfg):
                continue  # finished with these settings (others are refused when it resumes)
            logger.info("stage 3: ensemble network %d of %d (seed %d)", k + 1, cfg.ensemble, cfg.seed + k)
            _train_network(member_cfg, member.path, handlers)
    return _train_network(cfg, stage_dir, handlers)


def _train_network(cfg: SegConfig, stage_dir: Path, handlers: tuple[Any, ...] = ()) -> Path:
    """Train one stage-3 network on ``cfg.pseudo_dir``'s labels (stage 2's when None) in ``stage_dir``."""
    rank, world = setup_distributed(cfg.distributed, "bundles/deeplab_acdc/multi_gpu_train.json")
    out = Path(cfg.output_dir)
    run = RunLayout(out)
    manifest2 = _stage2_manifest(run)
    classes = manifest2["classes"]
    # before any work: the data set's builder refuses missing pseudo labels now
    stage_data: StageData = get_seg_data(manifest2.get("dataset", "acdc"))(out, manifest2, cfg)
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
    loader, epoch_start = training_loader(data, aug, cfg.batch_size, cfg.num_workers, cfg.seed, world, rank)

    bootstrap = BOOTSTRAP if cfg.loss == "bootstrap" else None
    criterion = SegLoss(cfg.loss == "dice_ce", cfg.label_smoothing, bootstrap)
    # with ``ema``, the moving average of the weights is the network: validated, checkpointed as "model"
    # (what inference loads), the raw weights kept beside it for resuming
    averaged = None
    if cfg.ema > 0:
        averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
    weights: dict[str, nn.Module] = {"model": model}
    if averaged is not None:
        weights = {"model": averaged.module, "training_model": model, "averaging": averaged}

    def step(engine: Any, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        model.train()
        x, target = batch["image"].to(device), batch["target"].to(device)
        weight = batch["weight"].to(device) if "weight" in batch else None
        loss = criterion(net(x), target, weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if averaged is not None:
            averaged.update_parameters(model)
        return {"loss": loss.item()}

    def validate(engine: Any) -> dict[str, float]:
        return stage_data.validate(weights["model"], device)

    trainer = build_trainer(
        step,
        output_dir=stage_dir,
        save_dict={**weights, "optimizer": opt, **({"scheduler": sched} if sched else {})},
        scheduler=sched,
        validate=validate if stage_data.validate is not None else None,
        val_interval=cfg.val_interval,
        key_metric=stage_data.key_metric,
        progress=cfg.progress,
        tensorboard=cfg.tensorboard,
        rank=rank,
        on_epoch_start=[epoch_start],
    )
    manifest = _manifest(cfg, run, manifest2, in_channels, len(data))
    run_recorded(trainer, loader, cfg.epochs, manifest, stage_dir, model, rank, world, resuming, handlers)
    return stage_dir
