"""ACDC data layer: reader, integrity check, preprocessing chain, 2D slice dataset, phantom generator.

Names are imported lazily, so ``python -m acdc_wsss.data.check`` (and the other module commands) do not
import their own module twice.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "acdc": (
        "ACDC_CLASSES",
        "ACDC_GROUPS",
        "DatasetError",
        "Frame",
        "Patient",
        "make_datalist",
        "parse_info_cfg",
        "read_datalist",
        "read_patient",
        "read_patients",
        "split_patients",
        "write_datalist",
    ),
    "check": ("CheckReport", "DatasetCheckError", "Problem", "check_dataset", "validated_patients"),
    "preprocess": ("PreprocessConfig", "build_preprocessing", "invert"),
    "slices": ("SliceDataset", "read_tag_csv", "write_tag_csv"),
    "phantom": ("ensure_phantom", "make_phantom"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
