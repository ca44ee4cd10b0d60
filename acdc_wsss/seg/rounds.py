"""Self-training: a trained stage-3 network relabels the training patients for the next network.

:func:`relabel` writes, for every training volume, the network's flip-averaged probabilities fused with the
stage-2 pseudo labels (a product of experts: the stage-2 label gets probability ``fuse``), classes absent
from a slice's tags removed (the tags are what weak supervision gives), then each class's largest 3D
component; the confidence is the fused probability of the chosen label (0 on slices missing a tagged
class). The files have the layout of stage 2's ``cam/pseudo/`` (``labels``, ``target``, ``confidence``), so
the next network reads them as it reads stage 2's (``SegConfig.pseudo_dir``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from acdc_wsss.data.slices import volume_key
from acdc_wsss.layout import MANIFEST, RunLayout
from acdc_wsss.pseudo.rules import uncertain_to_ignore
from acdc_wsss.seg.data import read_targets
from acdc_wsss.seg.infer import fuse_with_rules, largest_components
from acdc_wsss.seg.model import SegNet, predict_slices
from acdc_wsss.utils import atomic_write, progress_bar, write_json

__all__ = ["relabel", "relabel_volume"]


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
    for z in range(labels.shape[-1]):
        if any(tags[z, c] > 0 and not (labels[..., z] == c + 1).any() for c in range(tags.shape[1])):
            conf[..., z] = 0
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
) -> Path:
    """Relabel the training patients of the run ``output_dir`` with ``model`` into ``pseudo_dir``.

    Args:
        output_dir: the run folder (its stage-2 pseudo labels and preprocessed volumes).
        model: the trained stage-3 network.
        pseudo_dir: where the new ``<key>.npz`` files and ``manifest.json`` go.
        source_dir: the labels fused with the network (default: stage 2's ``cam/pseudo``).
        fuse: probability given to the source label in the fusion (0: the network alone).
        ignore_band: pixels each side of a class boundary ignored in ``target``.
        device: torch device.
        progress: progress bar on a terminal.
    """
    run = RunLayout(output_dir)
    manifest2 = json.loads(run.cam.manifest.read_text(encoding="utf-8"))
    ds = run.slices(manifest2, "training")
    source = read_targets(Path(output_dir), ds, "labels", source_dir)
    dest = Path(pseudo_dir)
    dest.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device)
    model.eval()
    for v in progress_bar(range(len(ds.volumes)), "relabelling training patients", progress):
        vol = ds.volumes[v]
        x = vol["image"].as_tensor().permute(3, 0, 1, 2).float()
        probs = predict_slices(model, x, dev, flip=True).numpy()
        tags = vol["tags"].numpy()
        labels, conf = relabel_volume(probs, source[v], tags, fuse)
        target = uncertain_to_ignore(labels, tags, ignore_band)
        with atomic_write(dest / f"{volume_key(ds.items[v])}.npz") as tmp:
            np.savez_compressed(tmp, labels=labels, target=target, confidence=conf.astype(np.float16))
    record = {"source": str(source_dir or run.cam.pseudo), "fuse": fuse, "ignore_band": ignore_band}
    write_json({**record, "volumes": [volume_key(it) for it in ds.items]}, dest / MANIFEST)
    return dest
