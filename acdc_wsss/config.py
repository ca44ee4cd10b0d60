"""What every stage's settings and run folder share: typed checks of bundle overrides, the digest a resumed
run must match, software versions for manifests, the stage folder's resume/overwrite rules, DDP set-up,
optimiser parameter groups and the LR schedule."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import platform
import shutil
import types
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import monai
import numpy as np
import torch
import torch.distributed as dist
from torch import nn

import acdc_wsss
from acdc_wsss.engine import resume
from acdc_wsss.layout import StageLayout
from acdc_wsss.safeload import load_pt
from acdc_wsss.utils import ensure_writable, write_json

__all__ = [
    "build_optimizer",
    "check_types",
    "config_digest",
    "finished_manifest",
    "load_finished_stage",
    "load_weights",
    "lr_scheduler",
    "param_groups",
    "prepare_stage_dir",
    "ranks_identical",
    "recorded_config",
    "run_recorded",
    "setup_distributed",
    "versions",
]

logger = logging.getLogger(__name__)

#: Settings that may differ between a run and its resumption.
VOLATILE: frozenset[str] = frozenset(
    {"epochs", "resume", "overwrite", "progress", "device", "num_workers", "tensorboard", "distributed"}
)


def _check_type(label: str, name: str, value: Any, hint: Any) -> None:
    origin = get_origin(hint)
    options = get_args(hint) if origin in (Union, types.UnionType) else (hint,)
    for opt in options:
        base = get_origin(opt) or opt
        if opt is type(None) and value is None:
            return
        if base is float and isinstance(value, int | float) and not isinstance(value, bool):
            return
        if (
            base is not type(None)
            and isinstance(value, base)
            and not (base is int and isinstance(value, bool))
        ):
            return
    names = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise TypeError(f"{label} config: {name} must be {names}, got {value!r} ({type(value).__name__}).")


def check_types(cfg: Any, label: str) -> None:
    """Refuse a dataclass field of the wrong type (a bundle override) with a message naming the setting."""
    hints = get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        _check_type(label, f.name, getattr(cfg, f.name), hints[f.name])


def config_digest(cfg: Any) -> str:
    """Hash of the settings a resumed run must share with the run it continues."""
    d = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in VOLATILE}
    return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def versions() -> dict[str, str]:
    """Software versions recorded in every manifest."""
    return {
        "acdc_wsss": acdc_wsss.__version__,
        "monai": monai.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def prepare_stage_dir(stage_dir: Path, cfg: Any, rank: int = 0) -> bool:
    """Apply the run-folder rules before any work; return True when the run resumes from ``last.pt``.

    A folder holding a run is refused unless ``cfg.resume`` (continue it; the settings must match) or
    ``cfg.overwrite`` (the folder is cleared, so no stale checkpoint or evaluation survives).
    """
    ensure_writable(stage_dir.parent)
    last = StageLayout(stage_dir).last
    if last.exists() and not (cfg.resume or cfg.overwrite):
        raise FileExistsError(
            f"{stage_dir} holds a run: --resume True continues it, --overwrite True redoes it."
        )
    if cfg.resume and last.exists():
        path = StageLayout(stage_dir).manifest
        manifest = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        if manifest.get("config_digest") not in (None, config_digest(cfg)):
            raise ValueError(
                f"{stage_dir} was trained with other settings; --resume True needs the same ones."
            )
        return True
    if cfg.overwrite and stage_dir.exists() and rank == 0:
        shutil.rmtree(stage_dir)
    return False


def setup_distributed(distributed: bool, bundle: str) -> tuple[int, int]:
    """``(rank, world size)``: ``(0, 1)`` unless ``distributed``, which needs torchrun's process group."""
    if not distributed:
        return 0, 1
    if not dist.is_initialized():
        raise RuntimeError(
            f"distributed=True needs an initialised process group: run through torchrun with {bundle}."
        )
    return dist.get_rank(), dist.get_world_size()


def param_groups(nets: Iterable[nn.Module], lr: float, new_lr_mult: float) -> list[dict[str, Any]]:
    """Two groups per network: pretrained-able parameters at ``lr``, its ``new_parameters()`` (the head)
    at ``lr * new_lr_mult``."""
    groups = []
    for net in nets:
        new = net.new_parameters()
        new_ids = {id(p) for p in new}
        old = [p for p in net.parameters() if id(p) not in new_ids and p.requires_grad]  # frozen ones out
        groups.append({"params": old, "lr": lr})
        groups.append({"params": [p for p in new if p.requires_grad], "lr": lr * new_lr_mult})
    return [g for g in groups if g["params"]]


def build_optimizer(groups: list[dict[str, Any]], name: str, lr: float, weight_decay: float) -> Any:
    """SGD (momentum 0.9, Nesterov) or AdamW over ``groups``."""
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)


def lr_scheduler(opt: torch.optim.Optimizer, schedule: str, epochs: int) -> Any:
    """Epoch-level schedule: ``poly`` (power 0.9), ``step`` (x0.1 at half-way) or ``none``."""
    if schedule == "poly":
        return torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=epochs, power=0.9)
    if schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, epochs // 2), gamma=0.1)
    return None


def ranks_identical(model: nn.Module) -> bool:
    """True when every DDP rank holds the same weights (checked by all-gathering a checksum)."""
    flat = torch.cat([p.detach().float().flatten().cpu() for p in model.parameters()])
    local = torch.tensor([float(flat.sum()), float((flat * flat).sum())], dtype=torch.float64)
    gathered = [torch.zeros_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, local)
    return all(torch.allclose(g, gathered[0], rtol=0, atol=1e-9) for g in gathered)


def finished_manifest(stage_dir: Path, stage: str, label: str, make: str) -> dict[str, Any]:
    """The manifest of a finished stage in ``stage_dir``, refusing a missing, foreign or unfinished one.

    Raises:
        FileNotFoundError: no manifest; the message gives the command ``make``.
        ValueError: another stage's output, or an unfinished run (with the command that finishes it).
    """
    manifest_path = StageLayout(stage_dir).manifest
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"{stage_dir} holds no trained {label} (no {manifest_path.name}); make it with: {make}"
        )
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if manifest.get("stage") != stage:
        raise ValueError(f"{manifest_path} belongs to stage {manifest.get('stage')!r}, not {stage!r}.")
    if manifest.get("status") != "complete":
        raise ValueError(f"{stage_dir} holds an unfinished {label}; finish it with: {make} --resume True")
    return manifest


def recorded_config(manifest: dict[str, Any], config_cls: type, device: str | torch.device = "cpu") -> Any:
    """The stage config a manifest records (fields of ``config_cls`` only) on ``device``, without
    pretrained weights (a checkpoint holds them)."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    saved = {k: v for k, v in manifest["config"].items() if k in names}
    return config_cls(**{**saved, "device": str(device), "pretrained": None})


def load_finished_stage(
    stage_dir: Path,
    stage: str,
    label: str,
    make: str,
    checkpoint: str,
    config_cls: type,
    build: Any,
    device: str | torch.device = "cpu",
) -> tuple[dict[str, Any], nn.Module]:
    """Load a finished stage (:func:`finished_manifest`): its manifest and ``build(manifest, config)``'s
    network (:func:`recorded_config`) with the weights of ``checkpoint``.pt, loaded strictly.

    Raises:
        FileNotFoundError: no manifest or no such checkpoint; the message gives the command ``make``.
        ValueError: another stage's output, an unfinished run, or a checkpoint that does not fit the
            recorded architecture.
    """
    manifest = finished_manifest(stage_dir, stage, label, make)
    layout = StageLayout(stage_dir)
    path = layout.checkpoint(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; make it with: {make}")
    model = build(manifest, recorded_config(manifest, config_cls, device))
    load_weights(model, path, layout.manifest)
    return manifest, model.to(device).eval()


def load_weights(model: nn.Module, path: Path, manifest_path: Path) -> nn.Module:
    """Load the ``model`` weights of checkpoint ``path`` (``weights_only``: a file carrying code is refused)
    strictly into ``model``; a checkpoint of another architecture than ``manifest_path`` records is refused
    by name."""
    state = load_pt(path)["model"]
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise ValueError(f"{path} does not fit the architecture in {manifest_path} ({first}).") from e
    return model


def run_recorded(
    trainer: Any,
    loader: Any,
    epochs: int,
    manifest: dict[str, Any],
    stage_dir: Path,
    model: nn.Module,
    rank: int = 0,
    world: int = 1,
    resuming: bool = False,
    handlers: Iterable[Any] = (),
    on_complete: Callable[[Any], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run a stage's trainer with its manifest kept on disk: resume from ``last.pt`` when asked, attach
    extra ``handlers``, write the manifest as ``running``, train, then record ``complete``, the epochs
    run, the history, ``on_complete(trainer)``'s entries and the DDP check (rank 0 writes). Returns the
    final manifest."""
    layout = StageLayout(stage_dir)
    if resuming:
        info = resume(layout.last, trainer.save_dict, getattr(trainer, "checkpoints", None))
        logger.info("resuming %s from epoch %d", stage_dir, info["epoch"])
    for h in handlers:
        h(trainer)
    if rank == 0:
        stage_dir.mkdir(parents=True, exist_ok=True)
        write_json(manifest, layout.manifest)
    trainer.run(loader, max_epochs=epochs)
    manifest.update(status="complete", epochs_run=trainer.state.epoch, history=trainer.state.history)
    if on_complete is not None:
        manifest.update(on_complete(trainer))
    manifest["ddp"] = {"world_size": world, "ranks_identical": ranks_identical(model) if world > 1 else True}
    if rank == 0:
        write_json(manifest, layout.manifest)
    return manifest
