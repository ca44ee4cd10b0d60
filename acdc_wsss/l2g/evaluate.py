"""Stage-1 evaluation: tag mAP and F1 against the tag prior, CAM Dice against the masks (evaluation only).

:func:`evaluate_classifier` scores a classifier on a data loader (training validates with it every epoch);
:func:`evaluate_l2g` scores a finished stage 1 of a run on one split and writes
``l2g/evaluation_<split>.json`` (``bundles/l2g_acdc/evaluate.json`` calls it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from acdc_wsss.cam_maps import cam_labels, cam_scores
from acdc_wsss.errors import DatasetError
from acdc_wsss.l2g.config import L2GConfig
from acdc_wsss.l2g.core import pooled_logits
from acdc_wsss.l2g.model import load_l2g, pool_weight
from acdc_wsss.layout import RunLayout
from acdc_wsss.metrics import DiceAccumulator, multilabel_scores
from acdc_wsss.utils import write_json

__all__ = [
    "BG_CHANNEL_SWEEP",
    "BG_SWEEP",
    "DEFAULT_BG_SCORE",
    "DEFAULT_BG_THRESHOLD",
    "evaluate_classifier",
    "evaluate_l2g",
    "flat_metrics",
]

logger = logging.getLogger(__name__)

#: Constant background scores tried when CAM Dice is evaluated (the best is reported).
BG_SWEEP: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)
#: Thresholds on the learned background probability tried for the heart Dice of the background channel.
BG_CHANNEL_SWEEP: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9)
#: The fixed settings used where no validation split exists to choose them on (never the scored split).
DEFAULT_BG_SCORE = 0.2
DEFAULT_BG_THRESHOLD = 0.5


@torch.no_grad()
def evaluate_classifier(
    net: nn.Module,
    loader: DataLoader,
    device: torch.device,
    classes: list[str],
    pool_weight: Callable[[dict[str, Any]], torch.Tensor | None] | None = None,
    bg_score: float | None = None,
    bg_threshold: float | None = None,
) -> dict:
    """Tag mAP/F1 of a CAM classifier, and CAM Dice against the masks (evaluation only).

    CAM Dice: single-scale PCM maps, ReLU, per-class max normalisation, tagged classes only, a constant
    background score, 2D Dice pooled over all slices; ``heart_dice`` is the Dice of any class vs background
    at that score. ``bg_channel_heart_dice``: the heart as the pixels whose learned background probability
    (softmax over the PCM maps) is under a threshold. ``pool_weight(batch)`` gives the weights of
    saliency-pooled logits when the classifier was trained with them.

    Args:
        bg_score: the background score to report at; None chooses the best of :data:`BG_SWEEP` on this
            loader's own masks, which is only right for the selection (validation) split.
        bg_threshold: the same for the background-channel threshold (:data:`BG_CHANNEL_SWEEP`).

    The whole sweep is returned too (``cam_dice_sweep``, ``bg_channel_sweep``), so a choice made on
    validation can be checked.
    """
    was_training = net.training
    net.eval()
    logits, tags = [], []
    acc = {bg: DiceAccumulator(range(1, len(classes) + 1)) for bg in BG_SWEEP}
    heart = {bg: DiceAccumulator([1]) for bg in BG_SWEEP}
    bg_heart = {t: DiceAccumulator([1]) for t in BG_CHANNEL_SWEEP}
    for batch in loader:
        x, t = batch["image"].to(device), batch["tags"].to(device)
        out, weight = net(x), pool_weight(batch) if pool_weight is not None else None
        pooled = out[getattr(net, "pooled", "cam")]  # the map training pooled: "cam" or "pcm"
        z = pooled_logits(pooled, weight.to(device)) if weight is not None else out["logits"]
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
    best = bg_score
    if best is None:
        best = max(BG_SWEEP, key=lambda bg: np.nan_to_num(np.nanmean(dice[bg]), nan=-1.0))
    elif best not in acc:
        raise ValueError(f"bg_score {best} is not one of BG_SWEEP {BG_SWEEP}.")
    result.update(
        {
            "cam_dice": {c: float(d) for c, d in zip(classes, dice[best], strict=True)},
            "cam_dice_mean": float(np.nanmean(dice[best])),
            "cam_bg_score": best,
            "heart_dice": float(heart[best].compute()[0]),
            "cam_dice_sweep": {str(bg): float(np.nanmean(d)) for bg, d in dice.items()},
        }
    )
    bg_dice = {t: float(a.compute()[0]) for t, a in bg_heart.items()}
    best_t = bg_threshold
    if best_t is None:
        best_t = max(BG_CHANNEL_SWEEP, key=lambda t: np.nan_to_num(bg_dice[t], nan=-1.0))
    elif best_t not in bg_heart:
        raise ValueError(f"bg_threshold {best_t} is not one of BG_CHANNEL_SWEEP {BG_CHANNEL_SWEEP}.")
    result.update(
        bg_channel_heart_dice=bg_dice[best_t],
        bg_channel_threshold=best_t,
        bg_channel_sweep={str(t): d for t, d in bg_dice.items()},
    )
    return result


def flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The scalar metrics of an evaluation that training records per epoch."""
    keys = ("map", "prior_map", "macro_f1", "cam_dice_mean", "heart_dice", "bg_channel_heart_dice")
    return {k: float(metrics[k]) for k in keys if k in metrics}


def _chosen_on_validation(
    run: RunLayout,
    manifest: dict[str, Any],
    net: nn.Module,
    device: torch.device,
    weight: Any,
    progress: bool,
) -> tuple[float, float, str]:
    """The background score and threshold chosen on the run's validation split, and where they came from:
    ``"validation"``, or the fixed defaults when the run has no validation split (said in the log)."""
    items = run.split("validation")
    if not items:
        logger.warning(
            "%s has no validation split: stage-1 CAM Dice uses the fixed background score %.2f and "
            "threshold %.2f (nothing is tuned on the scored split).",
            run.datalist,
            DEFAULT_BG_SCORE,
            DEFAULT_BG_THRESHOLD,
        )
        return DEFAULT_BG_SCORE, DEFAULT_BG_THRESHOLD, "fixed default (no validation split)"
    loader = DataLoader(run.slices(manifest, items, progress=progress), batch_size=32)
    chosen = evaluate_classifier(net, loader, device, manifest["classes"], weight)
    return chosen["cam_bg_score"], chosen["bg_channel_threshold"], "validation"


def evaluate_l2g(
    config: L2GConfig | dict[str, Any], split: str = "validation", checkpoint: str = "best"
) -> dict[str, Any]:
    """Evaluate a finished stage 1 on one split of its datalist; write ``l2g/evaluation_<split>.json``.

    Tag mAP/F1 against the tag prior, and CAM Dice against the masks (evaluation only). The background
    score and threshold of CAM Dice are chosen on the validation split (``selected_on``), or fixed defaults
    where the run has none; never on another scored split.
    """
    cfg = config if isinstance(config, L2GConfig) else L2GConfig(**config)
    device = torch.device(cfg.device)
    manifest, model = load_l2g(cfg.output_dir, checkpoint, device)
    run = RunLayout(cfg.output_dir)
    items = run.split(split)
    if not items:
        raise DatasetError(f"{run.datalist}: split {split!r} is empty.")
    weight = pool_weight(model.cfg)
    bg, threshold, selected_on = None, None, "validation"
    if split != "validation":
        bg, threshold, selected_on = _chosen_on_validation(
            run, manifest, model.global_net, device, weight, cfg.progress
        )
    ds = run.slices(manifest, items, progress=cfg.progress)
    loader = DataLoader(ds, batch_size=32)
    result = evaluate_classifier(model.global_net, loader, device, manifest["classes"], weight, bg, threshold)
    result.update(
        split=split,
        checkpoint=checkpoint,
        slices=len(ds),
        l2g=manifest["config"]["l2g"],
        selected_on=selected_on,
    )
    write_json(result, run.l2g.evaluation(split))
    logger.info("stage 1 on %s (%d slices): %s", split, len(ds), flat_metrics(result))
    return result
