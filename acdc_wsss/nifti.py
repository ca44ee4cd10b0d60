"""Masks for 3D Slicer: uint8 NIfTI label volumes on the source grid and the colour table naming them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from acdc_wsss.utils import atomic_write

__all__ = ["SLICER_COLOURS", "save_nifti", "write_colour_table"]

#: 3D Slicer colours (RGBA) of background, RV, Myo, LV (Slicer's own cardiac-ish defaults).
SLICER_COLOURS: tuple[tuple[int, int, int, int], ...] = (
    (0, 0, 0, 0),
    (0, 151, 206, 255),
    (216, 101, 79, 255),
    (221, 130, 101, 255),
)


def save_nifti(labels: np.ndarray, affine: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a uint8 label volume with ``affine`` (qform and sform set) atomically; return the path."""
    path = Path(path)
    img = nib.Nifti1Image(np.asarray(labels, dtype=np.uint8), np.asarray(affine, dtype=np.float64))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    with atomic_write(path) as tmp:
        nib.save(img, tmp)
    return path


def write_colour_table(path: str | os.PathLike, classes: Sequence[str]) -> Path:
    """A 3D Slicer colour table (``index name R G B A`` per line) naming background and ``classes``."""
    names = ["Background", *classes]
    lines = ["# 3D Slicer colour table written by acdc-wsss", f"# {len(names)} values"]
    for i, name in enumerate(names):
        r, g, b, a = SLICER_COLOURS[i] if i < len(SLICER_COLOURS) else (128, 128, 128, 255)
        lines.append(f"{i} {name} {r} {g} {b} {a}")
    with atomic_write(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Path(path)
