"""Data sets the stages can read, by name: ``acdc`` and those an adapter registers (``voc``).

Every data set registers its builders the same way, on import: ``acdc`` in the module of the stage that
uses each kind (:mod:`acdc_wsss.l2g.data`, :mod:`acdc_wsss.pseudo.store`, :mod:`acdc_wsss.seg.data`,
which the stage's own code imports, so they are registered before a stage looks one up), ``voc`` in
:mod:`voc_adapter.dataset` (``import voc_adapter``). A stage's ``dataset`` setting picks them, so a stage
takes a parameter instead of being copied per data set. Three kinds of builder:

- :data:`DATASETS` (stage 1): ``builder(config, output_dir, rank) -> (data_dir, splits, train, val)``: the
  data folder, the split, and the training and validation datasets. Their samples are dicts with
  ``image`` ``(C, H, W)``, ``tags`` ``(num_classes,)``, ``label`` ``(1, H, W)`` (255 where unknown),
  ``has_label`` and any saliency key the stage uses; the dataset has ``classes`` and a ``config`` with
  ``to_dict()``.
- :data:`VOLUMES` (stage 2): ``builder(items, preprocess dict, classes, output_dir, progress)`` -> whole
  images as "volumes": an object with ``items``, ``volumes`` (dicts: ``image`` ``(C, H, W, S)``,
  ``label`` ``(1, H, W, S)`` uint8 or None, ``tags`` ``(S, num_classes)``), ``classes``, ``num_classes``,
  ``config``.
- :data:`SEG_DATA` (stage 3): ``builder(output_dir, cam manifest, stage-3 config)`` ->
  :class:`acdc_wsss.seg.data.StageData`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = [
    "DATASETS",
    "SEG_DATA",
    "VOLUMES",
    "Registry",
    "get_dataset",
    "get_seg_data",
    "get_volumes",
    "register_dataset",
    "register_seg_data",
    "register_volumes",
]


class Registry(dict):
    """Builders of one kind by data set name, with a decorator to add one and a clear error for a
    missing one."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator registering a builder under ``name``."""

        def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
            self[name] = fn
            return fn

        return wrap

    def get_builder(self, name: str) -> Callable[..., Any]:
        """The builder registered as ``name``; the error names the known ones and the adapter to import."""
        if name not in self:
            hint = (
                ' (add "$import voc_adapter" to the bundle\'s imports, or import voc_adapter)'
                if name == "voc"
                else ""
            )
            raise ValueError(f"no {self.kind} for dataset {name!r}; known: {sorted(self)}{hint}.")
        return self[name]


DATASETS = Registry("training data")
VOLUMES = Registry("inference data")
SEG_DATA = Registry("stage-3 data")

register_dataset, get_dataset = DATASETS.register, DATASETS.get_builder
register_volumes, get_volumes = VOLUMES.register, VOLUMES.get_builder
register_seg_data, get_seg_data = SEG_DATA.register, SEG_DATA.get_builder
