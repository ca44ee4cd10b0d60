"""Self-training: a trained stage-3 network relabels the patients it trained on for the next network.

:func:`relabel` writes, for every training volume, the network's flip-averaged probabilities fused with the
stage-2 pseudo labels (a product of experts: the stage-2 label gets probability ``fuse``), classes absent
from a slice's tags removed (the tags are what weak supervision gives), then each class's largest 3D
component; the confidence is the fused probability of the chosen label (0 on slices missing a tagged
class). The files have the layout of stage 2's ``cam/pseudo/`` (``labels``, ``target``, ``confidence``), so
the next network reads them as it reads stage 2's (``SegConfig.pseudo_dir``). Given ``items`` (one fold of
the patients) and ``temporal`` (each ES frame mixed with its ED frame, as the inference does), it relabels a
fold with a network that never saw it: ``bench/crossfit.py``.

:func:`self_train` runs the rounds (``SegConfig.rounds``) and writes the round table ``seg/rounds.json``:
per round, its labels' Dice on the training patients (their masks read for this report only) and its
network's Dice on the validation patients (not held out when it trained on them: ``validation_held_out``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from acdc_wsss.data.slices import volume_key
from acdc_wsss.layout import MANIFEST, RunLayout, StageLayout
from acdc_wsss.metrics import DiceAccumulator
from acdc_wsss.pseudo.rules import missing_tagged, uncertain_to_ignore
from acdc_wsss.seg.components import AnatomyFusiond
from acdc_wsss.seg.config import SegConfig
from acdc_wsss.seg.data import read_targets, training_items
from acdc_wsss.seg.infer import fuse_with_rules, largest_components
from acdc_wsss.seg.model import SegNet, load_seg, network_slices, predict_slices, recorded_on_validation
from acdc_wsss.utils import progress_bar, read_json, write_json, write_npz

__all__ = ["RELABEL_FUSE", "labels_dice", "relabel", "relabel_volume", "self_train"]

logger = logging.getLogger(__name__)

#: Probability the stage-2 label gets when a round's network relabels (as the inference fusion's default).
RELABEL_FUSE = 0.7


def relabel_volume(
    probs: np.ndarray, stage2: np.ndarray, tags: np.ndarray, fuse: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(H, W, S)`` uint8 labels and float32 confidence of one volume from the network's ``(S, K, H, W)``
    probabilities, the stage-2 ``(H, W, S)`` labels and the ``(S, K - 1)`` slice tags (see the module
    docstring)."""
    fused = fuse_with_rules(probs, stage2.transpose(2, 0, 1), fuse) if fuse > 0 else probs
    allowed = np.concatenate([np.ones((len(tags), 1)), tags > 0], axis=1)  # (S, K): background always
    fused = fused * allowed[:, :, None, None]
    fused = fused / np.clip(fused.sum(axis=1, keepdims=True), 1e-12, None)
    labels = largest_components(fused.argmax(1).transpose(1, 2, 0).astype(np.uint8), probs.shape[1] - 1)
    conf = np.take_along_axis(fused, labels.transpose(2, 0, 1)[:, None].astype(np.int64), 1)[:, 0]
    conf = conf.transpose(1, 2, 0).astype(np.float32)
    conf[..., missing_tagged(labels, tags)] = 0
    return labels, conf


def relabel(
    output_dir: str | os.PathLike,
    model: SegNet,
    pseudo_dir: str | os.PathLike,
    source_dir: str | os.PathLike | None = None,
    fuse: float = 0.7,
    ignore_band: int = 1,
    device: str | torch.device = "cpu",
    progress: bool = True,
    train_on_validation: bool = False,
    items: Sequence[Mapping[str, Any]] | None = None,
    temporal: float | None = None,
) -> Path:
    """Relabel the training patients of the run ``output_dir`` (and its validation patients with
    ``train_on_validation``, as :func:`acdc_wsss.seg.data.training_items`; or the datalist ``items``) with
    ``model`` into ``pseudo_dir``.

    Args:
        output_dir: the run folder (its stage-2 pseudo labels and preprocessed volumes).
        model: the trained stage-3 network.
        pseudo_dir: where the new ``<key>.npz`` files and ``manifest.json`` go.
        source_dir: the labels fused with the network (default: stage 2's ``cam/pseudo``).
        fuse: probability given to the source label in the fusion (0: the network alone).
        ignore_band: pixels each side of a class boundary ignored in ``target``.
        device: torch device.
        progress: progress bar on a terminal.
        train_on_validation: relabel the validation patients too (the next network trains on them).
        items: the datalist items to relabel instead (e.g. one cross-validation fold).
        temporal: mix each ES frame's fused probabilities with its ED frame's carried onto it by
            registration, the ED frame's with this weight (the inference's own step,
            :class:`~acdc_wsss.seg.components.AnatomyFusiond` without the rules); None: each frame alone.
    """
    run = RunLayout(output_dir)
    manifest2 = json.loads(run.cam.manifest.read_text(encoding="utf-8"))
    chosen = training_items(run, manifest2, train_on_validation) if items is None else list(items)
    # ED before ES within each patient, so that an ES frame can be mixed with its ED frame
    ds = run.slices(manifest2, sorted(chosen, key=lambda it: (it["patient"], it.get("phase") != "ED")))
    source = read_targets(Path(output_dir), ds, "labels", source_dir)
    dest = Path(pseudo_dir)
    dest.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device)
    model.eval()
    # keeps each ED frame's image and probabilities until its ES frame is mixed with them
    with_ed = AnatomyFusiond(confidence=None, temporal=temporal) if temporal is not None else None
    for v in progress_bar(range(len(ds.volumes)), "relabelling the training volumes", progress):
        vol, item = ds.volumes[v], ds.items[v]
        x = network_slices(model, vol["image"].as_tensor(), vol["motion"])
        probs = predict_slices(model, x, dev, True).numpy()
        tags = vol["tags"].numpy()
        fused = fuse_with_rules(probs, source[v].transpose(2, 0, 1), fuse) if fuse > 0 else probs
        if with_ed is not None:
            frame = {"image": vol["image"], "patient": item["patient"], "phase": item.get("phase")}
            pred = torch.as_tensor(np.ascontiguousarray(fused.transpose(1, 2, 3, 0)))  # (K, H, W, S)
            fused = with_ed({**frame, "pred": pred, "has_pair": True})["pred"].numpy().transpose(3, 0, 1, 2)
        labels, conf = relabel_volume(fused, source[v], tags, 0.0)  # fused above
        target = uncertain_to_ignore(labels, tags, ignore_band)
        write_npz(
            dest / f"{volume_key(item)}.npz", labels=labels, target=target, confidence=conf.astype(np.float16)
        )
    record = {
        "source": str(source_dir or run.cam.pseudo),
        "fuse": fuse,
        "temporal": temporal,
        "ignore_band": ignore_band,
    }
    write_json({**record, "volumes": [volume_key(it) for it in ds.items]}, dest / MANIFEST)
    return dest


def labels_dice(output_dir: str | os.PathLike, pseudo_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Dice of a folder of pseudo labels (stage 2's when None) against the training patients' masks, per
    class and mean, accumulated over the split (as the stage-2 table): for reports, never for choosing."""
    run = RunLayout(output_dir)
    manifest2 = json.loads(run.cam.manifest.read_text(encoding="utf-8"))
    ds = run.slices(manifest2, "training", progress=False)
    acc = DiceAccumulator(list(range(ds.num_classes + 1)))
    scored = 0
    for vol, labels in zip(ds.volumes, read_targets(Path(output_dir), ds, "labels", pseudo_dir), strict=True):
        if vol["label"] is not None:  # weakly labelled patients have no mask: nothing to report
            acc.update(labels, vol["label"][0].numpy())
            scored += 1
    if not scored:
        return {}
    dice = acc.compute()[1:]
    return {
        "dice": {c: round(float(d), 4) for c, d in zip(ds.classes, dice, strict=True)},
        "mean": round(float(np.nanmean(dice)), 4),
    }


def _network_row(stage: StageLayout) -> dict[str, Any]:
    """The validation Dice (masks) of a round's network at its best epoch (chosen on pseudo labels), and
    whether those patients were held out (not when the network trained on their pseudo labels)."""
    scored = [e for e in read_json(stage.metrics).get("epochs", []) if "val" in e]
    if not scored or "dice_mean" not in scored[0]["val"]:
        return {}
    best = max(scored, key=lambda e: e["val"]["pseudo_dice"])
    return {
        "validation_dice": round(best["val"]["dice_mean"], 4),
        "best_epoch": best["epoch"],
        "validation_held_out": not recorded_on_validation(read_json(stage.manifest)),
    }


def self_train(
    cfg: SegConfig, train: Callable[[SegConfig, Path, tuple[Any, ...]], Path], handlers: tuple[Any, ...] = ()
) -> Path:
    """``cfg.rounds`` self-training rounds (see :func:`acdc_wsss.seg.run_seg`); ``train(cfg, stage_dir,
    handlers)`` trains one network. Returns ``seg/``."""
    run = RunLayout(cfg.output_dir)
    rank = dist.get_rank() if dist.is_initialized() else 0
    source, table = cfg.pseudo_dir, []
    for r in range(cfg.rounds + 1):
        layout = run.seg_round(r)
        if r > 0:
            if cfg.overwrite or not (layout.pseudo / MANIFEST).is_file():
                if rank == 0:
                    _, model = load_seg(run.root, "best", cfg.device, stage_dir=run.seg_round(r - 1).path)
                    relabel(
                        run.root,
                        model,
                        layout.pseudo,
                        cfg.pseudo_dir,
                        RELABEL_FUSE,
                        device=cfg.device,
                        progress=cfg.progress,
                        train_on_validation=cfg.train_on_validation,
                    )
                if dist.is_initialized():
                    dist.barrier()
            source = str(layout.pseudo)
        stage = run.seg if r == cfg.rounds else layout
        if cfg.overwrite or not stage.complete:
            logger.info("self-training round %d of %d: labels %s", r, cfg.rounds, source or "stage 2")
            train(dataclasses.replace(cfg, pseudo_dir=source), stage.path, handlers)
        table.append(round_row(run, r, source, stage))
    write_round_table(run, table)
    return run.seg.path


def write_round_table(run: RunLayout, table: list[dict[str, Any]]) -> None:
    """``seg/rounds.json`` (written by the first process of a DDP run)."""
    if not dist.is_initialized() or dist.get_rank() == 0:
        write_json({"rounds": table, "fuse": RELABEL_FUSE}, run.rounds)


def round_row(run: RunLayout, r: int, source: str | None, stage: StageLayout) -> dict[str, Any]:
    """Round ``r``'s line of the table: its labels' Dice on the training patients (masks read for the
    report only; ``{}`` where they have none) and its network's on the validation patients."""
    return {
        "round": r,
        "labels": source or "stage 2",
        "training_labels": labels_dice(run.root, source),
        **_network_row(stage),
    }
