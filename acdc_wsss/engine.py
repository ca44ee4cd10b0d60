"""The training loop every stage uses: an ignite ``Engine`` with MONAI and ignite handlers.

A stage supplies its iteration function (one batch in, a dict of float losses out), its data loader and
a validation function; :func:`build_trainer` adds the rest: a progress bar (on a terminal; a log file gets
one line per epoch), MONAI ``StatsHandler`` logging, a stop with :class:`NonFiniteLossError` at the first
NaN loss, optional TensorBoard, the learning-rate schedule (MONAI ``LrScheduleHandler``), validation every
N epochs, a metrics JSON after every epoch, and atomic checkpoints (``last.pt`` every epoch, ``best.pt``
when the key metric improves). :func:`resume` restores a run from ``last.pt``: the model, the optimiser,
the scheduler, the engine's epoch counter and the score ``best.pt`` holds; with data order and random
views derived from (seed, epoch, iteration), a resumed run ends with the same weights and the same
``best.pt`` as an uninterrupted one. Checkpoints hold tensors and plain types only and load with
``weights_only=True`` (:mod:`acdc_wsss.safeload`).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint
from monai.handlers import LrScheduleHandler, StatsHandler
from monai.transforms import Randomizable
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from acdc_wsss.layout import BEST, LAST, StageLayout
from acdc_wsss.safeload import load_pt
from acdc_wsss.utils import atomic_write, write_json

__all__ = [
    "CheckpointHandler",
    "NonFiniteLossError",
    "build_trainer",
    "epoch_seeder",
    "resume",
    "seed_worker",
    "training_loader",
]

logger = logging.getLogger(__name__)


class CheckpointHandler:
    """Save ``last.pt`` after every epoch and ``best.pt`` when ``key_metric`` improves, atomically.

    Args:
        save_dir: checkpoint folder.
        save_dict: name -> object with ``state_dict()`` (networks, optimiser, scheduler, the engine).
        key_metric: name in ``engine.state.metrics`` that selects ``best.pt`` (None: no best).
        greater_is_better: direction of the key metric.
        enabled: False on non-zero DDP ranks.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: Mapping[str, Any],
        key_metric: str | None = None,
        greater_is_better: bool = True,
        enabled: bool = True,
    ) -> None:
        self.save_dir, self.save_dict = Path(save_dir), dict(save_dict)
        self.key_metric, self.sign = key_metric, 1.0 if greater_is_better else -1.0
        self.enabled = enabled
        self.best = -math.inf

    def _save(self, name: str, extra: Mapping[str, Any]) -> Path:
        path = self.save_dir / name
        with atomic_write(path) as tmp:
            torch.save({**{k: v.state_dict() for k, v in self.save_dict.items()}, **extra}, tmp)
        return path

    def __call__(self, engine: Engine) -> None:
        if not self.enabled:
            return
        self.save_dir.mkdir(parents=True, exist_ok=True)
        extra = {"metrics": dict(engine.state.metrics), "epoch": engine.state.epoch}
        value = engine.state.metrics.get(self.key_metric) if self.key_metric else None
        # best.pt first: a run killed between the two files redoes this epoch and finds it saved
        if value is not None and math.isfinite(value) and self.sign * value > self.best:
            self.best = self.sign * value
            self._save(BEST, extra)
            logger.info(
                "new best %s %.4f at epoch %d -> %s", self.key_metric, value, engine.state.epoch, BEST
            )
        self._save(LAST, extra)

    def restore_best(self) -> None:
        """Take up the score of an existing ``best.pt`` (a resumed run), so that only a better epoch
        replaces it."""
        path = self.save_dir / BEST
        if self.key_metric is None or not path.is_file():
            return
        value = load_pt(path).get("metrics", {}).get(self.key_metric)
        if value is not None and math.isfinite(value):
            self.best = self.sign * float(value)
            logger.info("best.pt holds %s %.4f; a resumed epoch must beat it", self.key_metric, value)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)


def resume(
    path: str | os.PathLike, save_dict: Mapping[str, Any], checkpoints: CheckpointHandler | None = None
) -> dict[str, Any]:
    """Load a checkpoint written by :class:`CheckpointHandler` into ``save_dict``'s objects (tensors and
    plain types only: ``weights_only=True``), and into ``checkpoints`` the score of the run's ``best.pt``.

    Returns the checkpoint's ``metrics`` and ``epoch``.

    Raises:
        UnsafeFileError: the file carries pickled objects (refused before anything in it runs).
    """
    ckpt = load_pt(path)
    if checkpoints is not None:
        checkpoints.restore_best()
    Checkpoint.load_objects(to_load=dict(save_dict), checkpoint={k: ckpt[k] for k in save_dict})
    return {"metrics": ckpt.get("metrics", {}), "epoch": ckpt.get("epoch", 0)}


def epoch_seeder(sampler: Any, augmentation: Any, seed: int, rank: int = 0) -> Callable[[Engine], None]:
    """An ``on_epoch_start`` callable of :func:`build_trainer`: the data order (``sampler.set_epoch``) and
    the random training transforms (``augmentation``, a MONAI ``Randomizable``; anything else, such as None,
    is left alone) of each epoch derive from (``seed``, epoch, ``rank``) alone, so two runs with one seed,
    resumed or not, draw the same batches, crops and flips."""

    def start(engine: Engine) -> None:
        epoch = engine.state.epoch
        sampler.set_epoch(epoch)
        if isinstance(augmentation, Randomizable):
            augmentation.set_random_state(seed=(seed * 1_000_003 + epoch * 7919 + rank) % 2**32)

    return start


def seed_worker(augmentation: Any, worker_id: int) -> None:
    """A training DataLoader's ``worker_init_fn`` (bound to the data set's ``augmentation`` by
    :func:`training_loader`): the worker's copy of the random transforms (a MONAI ``Randomizable``, seeded
    for the epoch by :func:`epoch_seeder` before the workers start) is reseeded from that state and the
    worker's number. Without it every worker would repeat the first one's crops and flips, batch position by
    batch position; with it the draws still derive from (seed, epoch, rank, worker) alone."""
    if isinstance(augmentation, Randomizable):
        drawn = int(augmentation.R.randint(2**31))
        augmentation.set_random_state(seed=(drawn + 104_729 * (worker_id + 1)) % 2**32)


def training_loader(
    data: Dataset,
    augmentation: Any,
    batch_size: int,
    num_workers: int,
    seed: int,
    world: int = 1,
    rank: int = 0,
) -> tuple[DataLoader, Callable[[Engine], None]]:
    """A stage's training loader and its ``on_epoch_start`` callable: this process's share of ``data`` (of
    ``world``), shuffled from ``seed`` and the epoch, and the random transforms ``augmentation`` that
    ``data`` applies (None: none) seeded for each epoch (:func:`epoch_seeder`) and each worker
    (:func:`seed_worker`; the worker's copy of ``data`` and of the bound ``augmentation`` are one object,
    forked or pickled together)."""
    sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    loader = DataLoader(
        data,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        worker_init_fn=functools.partial(seed_worker, augmentation),
    )
    return loader, epoch_seeder(sampler, augmentation, seed, rank)


def build_trainer(
    step: Callable[[Engine, Any], dict[str, float]],
    *,
    output_dir: str | os.PathLike,
    save_dict: Mapping[str, Any],
    scheduler: Any | None = None,
    validate: Callable[[Engine], Mapping[str, float]] | None = None,
    val_interval: int = 1,
    key_metric: str | None = None,
    progress: bool = True,
    tensorboard: bool = False,
    rank: int = 0,
    on_epoch_start: Iterable[Callable[[Engine], Any]] = (),
) -> Engine:
    """An ignite trainer with the project's handlers attached.

    Args:
        step: iteration function returning float losses (``"loss"`` is the total).
        output_dir: stage folder: checkpoints, ``metrics.json`` and TensorBoard logs go there.
        save_dict: objects to checkpoint; the trainer itself is added as ``"trainer"``.
        scheduler: epoch-level LR scheduler (MONAI ``LrScheduleHandler``).
        validate: called every ``val_interval`` epochs (and after the last); its metrics land in
            ``engine.state.metrics`` and ``metrics.json``.
        val_interval: epochs between validations.
        key_metric: metric that selects ``best.pt``.
        progress: tqdm progress bar, shown only when stderr is a terminal (otherwise one log line per epoch).
        tensorboard: TensorBoard logs in ``output_dir/tb`` (needs the ``tensorboard`` package).
        rank: DDP rank; only rank 0 writes files, logs and shows progress.
        on_epoch_start: callables run at the start of every epoch (e.g. ``sampler.set_epoch``).
    """
    out = Path(output_dir)
    trainer = Engine(step)
    save_dict = {**save_dict, "trainer": trainer}
    trainer.state_dict_user_keys.append("history")
    trainer.add_event_handler(Events.ITERATION_COMPLETED, _stop_on_non_finite, out.name)
    _attach_epoch_records(
        trainer, out, save_dict.get("optimizer"), validate, val_interval, rank, on_epoch_start
    )
    if rank == 0:
        _attach_logging(trainer, out, progress, tensorboard)
    if scheduler is not None:
        LrScheduleHandler(scheduler, print_lr=False, epoch_level=True).attach(trainer)
    # registered after validation so that best.pt sees this epoch's metrics
    checkpoints = CheckpointHandler(out, save_dict, key_metric, enabled=rank == 0)
    checkpoints.attach(trainer)
    trainer.state.history = []
    trainer.save_dict = save_dict  # type: ignore[attr-defined]
    trainer.checkpoints = checkpoints  # type: ignore[attr-defined]
    return trainer


def _attach_epoch_records(
    trainer: Engine,
    out: Path,
    opt: Any,
    validate: Callable[[Engine], Mapping[str, float]] | None,
    val_interval: int,
    rank: int,
    on_epoch_start: Iterable[Callable[[Engine], Any]],
) -> None:
    """Per epoch: the ``on_epoch_start`` callables, mean losses, the learning rate, validation every
    ``val_interval`` epochs (and after the last), the epoch's time; the history in ``engine.state.history``
    and (rank 0) ``metrics.json``."""
    history: list[dict[str, Any]] = []
    timer = {"t0": 0.0}

    @trainer.on(Events.EPOCH_STARTED)
    def _start(engine: Engine) -> None:
        timer["t0"] = time.perf_counter()
        engine.state.sums = {}
        for fn in on_epoch_start:
            fn(engine)

    @trainer.on(Events.ITERATION_COMPLETED)
    def _accumulate(engine: Engine) -> None:
        for k, v in engine.state.output.items():
            total, n = engine.state.sums.get(k, (0.0, 0))
            engine.state.sums[k] = (total + float(v), n + 1)

    @trainer.on(Events.EPOCH_COMPLETED)
    def _epoch_end(engine: Engine) -> None:
        row: dict[str, Any] = {"epoch": engine.state.epoch}
        row.update({k: total / max(n, 1) for k, (total, n) in engine.state.sums.items()})
        if opt is not None:
            row["lr"] = opt.param_groups[0]["lr"]
        last = engine.state.epoch == engine.state.max_epochs
        if validate is not None and (engine.state.epoch % val_interval == 0 or last):
            metrics = dict(validate(engine))
            engine.state.metrics.update(metrics)
            row["val"] = metrics
        row["epoch_s"] = round(time.perf_counter() - timer["t0"], 2)
        history[:] = [h for h in getattr(engine.state, "history", []) if h["epoch"] < engine.state.epoch]
        history.append(row)
        engine.state.history = list(history)
        if rank == 0:
            write_json({"epochs": history}, StageLayout(out).metrics)
            logger.info("epoch %d: %s", engine.state.epoch, _short(row))


class NonFiniteLossError(ValueError):
    """A training loss became NaN or infinite; training stopped and the last good checkpoint was kept."""


def _stop_on_non_finite(engine: Engine, stage: str) -> None:
    """Stop at the first non-finite loss (like ignite's ``TerminateOnNan``, but as an error that names the
    stage and the epoch), before this epoch writes any checkpoint."""
    bad = {k: v for k, v in engine.state.output.items() if not math.isfinite(float(v))}
    if not bad:
        return
    epoch, it = engine.state.epoch, (engine.state.iteration - 1) % engine.state.epoch_length + 1
    kept = f"last.pt holds epoch {epoch - 1}, the last good one" if epoch > 1 else "no checkpoint was written"
    raise NonFiniteLossError(
        f"stage {stage}: loss {', '.join(f'{k}={v}' for k, v in bad.items())} at epoch {epoch}, "
        f"iteration {it}; training stopped ({kept}). Check the input images "
        "(python -m acdc_wsss.data.check DATASET_DIR) or lower the learning rate."
    )


def _attach_logging(trainer: Engine, out: Path, progress: bool, tensorboard: bool) -> None:
    """MONAI ``StatsHandler`` logging, a progress bar, and TensorBoard logs in ``out/tb`` (rank 0)."""
    # name=None logs through the engine's own logger (a named one would stop propagating to the root)
    StatsHandler(iteration_log=False, output_transform=lambda o: o["loss"], name=None).attach(trainer)
    if progress and sys.stderr.isatty():  # a log file gets the one line per epoch of _epoch_end instead
        from ignite.handlers import ProgressBar

        ProgressBar(persist=False, desc="train").attach(
            trainer, output_transform=lambda o: {"loss": o["loss"]}
        )
    if tensorboard:
        try:
            from monai.handlers import TensorBoardStatsHandler
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ImportError(
                "tensorboard=True needs the tensorboard package: pip install tensorboard"
            ) from e
        TensorBoardStatsHandler(
            SummaryWriter(log_dir=str(out / "tb")), output_transform=lambda o: o["loss"]
        ).attach(trainer)


def _short(row: Mapping[str, Any]) -> str:
    parts = [f"{k} {v:.4f}" for k, v in row.items() if isinstance(v, float) and k != "epoch_s"]
    val = row.get("val", {})
    parts += [f"val_{k} {v:.4f}" for k, v in val.items() if isinstance(v, float)]
    return ", ".join(parts) + f" ({row.get('epoch_s', 0):.1f} s)"
