"""Data sets the training stages can read, by name: ``acdc`` (built in) and those an adapter registers.

An adapter (``voc_adapter``) registers a builder on import; a stage's ``dataset`` setting picks it, so a
stage takes a parameter instead of being copied per data set. A builder gets the stage config, the run
folder and the DDP rank and returns ``(data_dir, splits, train, val)``: the data folder, the patient or
image split, and the training and validation datasets. Their samples are dicts with ``image``
``(C, H, W)``, ``tags`` ``(num_classes,)``, ``label`` ``(1, H, W)`` (255 where unknown), ``has_label`` and
any saliency key the stage uses; the dataset has ``classes`` and a ``config`` with ``to_dict()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = [
    "DATASETS",
    "SEG_DATA",
    "VOLUMES",
    "get_dataset",
    "get_seg_data",
    "get_volumes",
    "register_dataset",
    "register_seg_data",
    "register_volumes",
]

#: name -> builder(config, output_dir, rank) -> (data_dir, splits, train, val)
DATASETS: dict[str, Callable[..., tuple[Any, dict[str, list[str]], Any, Any]]] = {}


def register_dataset(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering a data set builder under ``name``."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        DATASETS[name] = fn
        return fn

    return wrap


#: name -> builder(items, preprocess dict, classes, output_dir, progress) -> whole-image "volumes" for the
#: inference stages: an object with ``items``, ``volumes`` (dicts: ``image`` ``(C, H, W, S)``, ``label``
#: ``(1, H, W, S)`` uint8 or None, ``tags`` ``(S, num_classes)``), ``classes``, ``num_classes``, ``config``.
VOLUMES: dict[str, Callable[..., Any]] = {}


def register_volumes(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering a whole-image builder for the inference stages under ``name``."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        VOLUMES[name] = fn
        return fn

    return wrap


def get_volumes(name: str) -> Callable[..., Any]:
    """The whole-image builder registered as ``name`` (see :data:`VOLUMES`)."""
    if name not in VOLUMES:
        raise ValueError(f"no inference data for dataset {name!r}; known: {sorted(['acdc', *VOLUMES])}.")
    return VOLUMES[name]


#: name -> builder(output_dir, cam manifest, stage-3 config) -> :class:`acdc_wsss.seg.train.StageData`.
SEG_DATA: dict[str, Callable[..., Any]] = {}


def register_seg_data(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering the stage-3 training data builder of a data set."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        SEG_DATA[name] = fn
        return fn

    return wrap


def get_seg_data(name: str) -> Callable[..., Any]:
    """The stage-3 builder registered as ``name`` (see :data:`SEG_DATA`)."""
    if name not in SEG_DATA:
        raise ValueError(f"no stage-3 data for dataset {name!r}; known: {sorted(['acdc', *SEG_DATA])}.")
    return SEG_DATA[name]


def get_dataset(name: str) -> Callable[..., Any]:
    """The builder registered as ``name``; a clear error names the known ones and the adapter to import."""
    if name not in DATASETS:
        hint = (
            ' (add "$import voc_adapter" to the bundle\'s imports, or import voc_adapter)'
            if name == "voc"
            else ""
        )
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(['acdc', *DATASETS])}{hint}.")
    return DATASETS[name]
