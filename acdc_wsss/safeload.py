"""Loading ``.pt`` files without running code from them, and the plain form that makes that possible.

Every checkpoint and cache file this package reads goes through :func:`load_pt`, which calls
``torch.load(..., weights_only=True)``: tensors, numbers, strings, lists, tuples and dicts load; a pickled
Python object (whose unpickling could run any code) is refused with :class:`UnsafeFileError` naming the
file, before anything it carries runs.

Objects that are not plain (MONAI ``MetaTensor``, NumPy arrays, MONAI's string enums) are stored through
:func:`to_plain` and read back with :func:`from_plain`.
"""

from __future__ import annotations

import os
import pickle
import re
from enum import Enum
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.utils import SpaceKeys, TraceKeys

__all__ = ["UnsafeFileError", "from_plain", "load_pt", "to_plain"]

#: The enums a plain form may name (by class name); nothing else is rebuilt from a name.
_ENUMS: dict[str, type[Enum]] = {cls.__name__: cls for cls in (SpaceKeys, TraceKeys)}
_TAG = "__acdc_wsss_plain__"


class UnsafeFileError(ValueError):
    """A ``.pt`` file holds pickled Python objects and was refused (nothing in it ran)."""


def load_pt(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``, refusing files that carry pickled objects.

    Raises:
        UnsafeFileError: the file holds something other than tensors and plain Python types; the message
            names the file and the object refused.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        what = f"it names {found.group(1)}" if found else "an object that is not a tensor or plain type"
        raise UnsafeFileError(
            f"{path}: refused to load: it carries pickled Python objects ({what}), whose loading could run "
            "code. Only tensors and plain types are loaded; use a file this package wrote, or make it again."
        ) from None


def to_plain(obj: Any) -> Any:
    """``obj`` with every MetaTensor, NumPy array or MONAI enum replaced by a tagged dict of plain types,
    so that it loads with ``weights_only=True``; :func:`from_plain` reverses it."""
    if isinstance(obj, MetaTensor):
        return {
            _TAG: "MetaTensor",
            "data": obj.as_tensor(),
            "meta": to_plain(dict(obj.meta)),
            "ops": to_plain(list(obj.applied_operations)),
        }
    if isinstance(obj, np.ndarray):
        return {_TAG: "ndarray", "data": torch.from_numpy(np.ascontiguousarray(obj))}
    if isinstance(obj, Enum) and type(obj).__name__ in _ENUMS:
        return {_TAG: "enum", "cls": type(obj).__name__, "value": obj.value}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):  # MONAI keys trace entries with string enums: stored as their string
        return {(k.value if isinstance(k, Enum) else k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_plain(v) for v in obj)
    return obj


def from_plain(obj: Any) -> Any:
    """The objects :func:`to_plain` replaced, rebuilt (only those three kinds, from an allow-list)."""
    if isinstance(obj, dict):
        kind = obj.get(_TAG)
        if kind == "MetaTensor":
            return MetaTensor(
                obj["data"], meta=from_plain(obj["meta"]), applied_operations=from_plain(obj["ops"])
            )
        if kind == "ndarray":
            return obj["data"].numpy()
        if kind == "enum":
            return _ENUMS[obj["cls"]](obj["value"])
        return {k: from_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(from_plain(v) for v in obj)
    return obj
