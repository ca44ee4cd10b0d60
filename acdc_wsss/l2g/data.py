"""Stage-1 data: :func:`prepare_data` builds the training and validation sets of the ``dataset`` setting
through the data set registry (:mod:`acdc_wsss.data.registry`); this module registers ``acdc``, as
``voc_adapter`` registers ``voc``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.distributed as dist

from acdc_wsss.data.acdc import make_datalist, split_patients, write_datalist
from acdc_wsss.data.check import validated_patients
from acdc_wsss.data.phantom import ensure_phantom
from acdc_wsss.data.preprocess import PreprocessConfig
from acdc_wsss.data.registry import get_dataset, register_dataset
from acdc_wsss.data.slices import SliceDataset
from acdc_wsss.errors import DatasetError
from acdc_wsss.layout import RunLayout

__all__ = ["acdc_training_data", "prepare_data"]


def prepare_data(cfg: Any, rank: int = 0) -> tuple[Path, Any, Any, Any]:
    """``(data folder, splits, training set, validation set or None)`` of ``cfg.dataset``, made by its
    registered builder (which also writes the run's datalist)."""
    return get_dataset(cfg.dataset)(cfg, Path(cfg.output_dir), rank)


@register_dataset("acdc")
def acdc_training_data(
    cfg: Any, out: Path, rank: int = 0
) -> tuple[Path, dict[str, list[str]], SliceDataset, SliceDataset | None]:
    """The ``acdc`` builder of stage 1: the dataset folder (the phantom in ``phantom_dir``, made on rank 0,
    when ``dataset_dir`` is None), checked; the patient split; the run's datalist; the training and
    validation slices (preprocessed once into the run's cache)."""
    run = RunLayout(out)
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
