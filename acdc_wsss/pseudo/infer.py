"""Stage 2, step 1: CAMs of every volume from a trained stage 1, stored as float16 arrays.

``run_cam(CamConfig(output_dir=RUN))`` reads ``RUN/l2g/`` (refusing a missing, unfinished or foreign
stage 1 with the command that makes it) and writes ``RUN/cam/``:

- ``cams/<patientXXX_frameYY>.npz``: ``scores`` ``(C, H, W, S)`` float16 multi-scale, flip-averaged CAM
  scores in [0, 1] (tagged classes only; PCM output), ``raw_scores`` the same before PCM revision,
  ``bg_prob`` ``(H, W, S)`` float16 learned background probability,
  ``tags`` ``(S, C)``; with the datalist item, each array goes back into its volume through
  :meth:`acdc_wsss.data.slices.SliceDataset.to_original`.
- ``manifest.json``: settings, the stage-1 checkpoint's fingerprint (a retrained stage 1 makes this stale),
  volumes, versions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from acdc_wsss.cam_maps import CAM_SCALES, multiscale_cam
from acdc_wsss.data.slices import volume_key
from acdc_wsss.l2g.model import load_l2g
from acdc_wsss.layout import CAM_STAGE, RunLayout
from acdc_wsss.pseudo.store import inference_volumes
from acdc_wsss.utils import moved, progress_bar, write_json, write_npz

__all__ = ["CamConfig", "run_cam", "stage1_fingerprint"]

logger = logging.getLogger(__name__)

STAGE = CAM_STAGE

#: Names that lived here before 0.2.0.
__getattr__ = moved(__name__, {"load_cams": "acdc_wsss.pseudo.store"})


@dataclass
class CamConfig:
    """Settings of CAM inference.

    Attributes:
        output_dir: the run folder holding ``l2g/`` (input) and getting ``cam/`` (output).
        checkpoint: ``"best"`` or ``"last"`` stage-1 checkpoint.
        scales: inference scales (each also flipped when ``flip``).
        flip: add horizontal flips.
        resize: ``bilinear`` or ``bicubic`` (the reference) upsampling of each pass's maps.
        relu: ``each`` pass's maps ReLU'd, or the ``mean`` only (the reference).
        splits: datalist splits whose volumes get CAMs.
        device: torch device.
        progress: progress bar on a terminal.
        overwrite: redo an existing ``cam/``.
    """

    output_dir: str = "runs/l2g_acdc"
    checkpoint: str = "best"
    scales: list[float] = field(default_factory=lambda: list(CAM_SCALES))
    flip: bool = True
    resize: str = "bilinear"
    relu: str = "each"
    splits: list[str] = field(default_factory=lambda: ["training", "validation"])
    device: str = "cpu"
    progress: bool = True
    overwrite: bool = False

    def __post_init__(self) -> None:
        self.device = str(self.device)
        self.scales = [float(s) for s in self.scales]
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"CAM config: scales must be positive, got {self.scales}.")
        if self.checkpoint not in ("best", "last"):
            raise ValueError(f"CAM config: checkpoint must be 'best' or 'last', got {self.checkpoint!r}.")


#: Version of the stored arrays; CAMs of another version are redone.
CAM_FORMAT = 2


def plain(x: Any) -> torch.Tensor:
    """A MetaTensor's plain tensor (other tensors as they are)."""
    return x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)


def stage1_fingerprint(output_dir: str | os.PathLike, checkpoint: str) -> str:
    """Hash of the stage-1 checkpoint file's name, size and modification time."""
    path = RunLayout(output_dir).l2g.checkpoint(checkpoint)
    st = path.stat()
    return hashlib.sha1(f"{path.name}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]


def run_cam(config: CamConfig | dict[str, Any]) -> Path:
    """Compute and store the CAMs of every volume of the chosen splits; return ``output_dir/cam``.

    Raises:
        FileNotFoundError / ValueError: stage 1 missing, unfinished or foreign (from
            :func:`~acdc_wsss.l2g.load_l2g`).

    CAMs already made from the same stage-1 checkpoint with the same settings are kept (nothing is redone)
    unless ``overwrite``; a retrained stage 1 makes them stale and they are redone.
    """
    cfg = config if isinstance(config, CamConfig) else CamConfig(**config)
    out = Path(cfg.output_dir)
    run = RunLayout(out)
    device = torch.device(cfg.device)
    manifest1, model = load_l2g(out, cfg.checkpoint, device)
    stage = run.cam.path
    fingerprint = stage1_fingerprint(out, cfg.checkpoint)
    old = run.cam.manifest
    if old.is_file() and not cfg.overwrite:
        previous = json.loads(old.read_text(encoding="utf-8"))
        same_config = _lasting(previous.get("config", {})) == _lasting(dataclasses.asdict(cfg))
        same_format = previous.get("format") == CAM_FORMAT
        if previous.get("stage1_fingerprint") == fingerprint and same_config and same_format:
            logger.info(
                "%s holds these CAMs already (same stage 1, same settings); --overwrite True redoes them.",
                stage,
            )
            return stage
    classes = manifest1["classes"]
    items = [it for split in cfg.splits for it in run.split(split)]
    ds = inference_volumes(manifest1, items, out, cfg.progress)
    cams = run.cam.cams
    cams.mkdir(parents=True, exist_ok=True)
    net = model.global_net
    for v in progress_bar(range(len(ds.volumes)), "CAM inference", cfg.progress):
        vol = ds.volumes[v]
        x = plain(vol["image"]).permute(3, 0, 1, 2).float().to(device)  # (S, C, H, W)
        tags = vol["tags"].to(device)
        res = multiscale_cam(net, x, tags, tuple(cfg.scales), cfg.flip, cfg.resize, cfg.relu)
        write_npz(
            run.cam.cam(volume_key(ds.items[v])),
            scores=res["scores"].permute(1, 2, 3, 0).cpu().numpy().astype(np.float16),
            raw_scores=res["raw_scores"].permute(1, 2, 3, 0).cpu().numpy().astype(np.float16),
            bg_prob=res["bg_prob"][:, 0].permute(1, 2, 0).cpu().numpy().astype(np.float16),
            tags=vol["tags"].numpy(),
        )
    write_json(
        {
            "stage": STAGE,
            "status": "complete",
            "format": CAM_FORMAT,
            "config": dataclasses.asdict(cfg),
            "stage1_fingerprint": fingerprint,
            "stage1_l2g": manifest1["config"]["l2g"],
            "seed": manifest1.get("seed"),
            "classes": classes,
            "preprocess": manifest1["preprocess"],
            "dataset": manifest1.get("dataset", "acdc"),
            "volumes": [volume_key(it) for it in ds.items],
            "splits": cfg.splits,
        },
        run.cam.manifest,
    )
    logger.info("CAMs of %d volumes written to %s", len(ds.volumes), cams)
    return stage


def _lasting(config: dict[str, Any]) -> dict[str, Any]:
    """The CAM settings that change the CAMs (not where the run lies, the device or the progress bars)."""
    return {k: v for k, v in config.items() if k not in ("output_dir", "device", "progress", "overwrite")}
