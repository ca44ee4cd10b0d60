"""Training targets from pseudo labels: what stage 3 learns from, with the uncertain pixels ignored."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from acdc_wsss.labels import IGNORE

__all__ = ["missing_tagged", "uncertain_to_ignore"]


def missing_tagged(labels: np.ndarray, tags: np.ndarray | None) -> np.ndarray:
    """``(S,)`` bool: the slices of ``(H, W, S)`` labels 0..C missing a class their ``(S, C)`` tags say is
    present (where the rules failed); all False without tags."""
    if tags is None:
        return np.zeros(labels.shape[-1], bool)
    present = np.stack([(labels == c + 1).any(axis=(0, 1)) for c in range(tags.shape[1])], axis=1)
    return ((tags > 0) & ~present).any(axis=1)


def uncertain_to_ignore(labels: np.ndarray, tags: np.ndarray | None = None, band: int = 1) -> np.ndarray:
    """Training targets from pseudo labels: ``band`` pixels on both sides of every class boundary become
    :data:`~acdc_wsss.labels.IGNORE` (boundaries are where the rules are least sure), and so does every
    slice missing a class its tags say is present (the rules failed there; background would teach the
    wrong thing).

    Args:
        labels: ``(H, W, S)`` labels 0..C.
        tags: ``(S, C)`` multi-hot, or None.
        band: pixels each side of a boundary; 0 keeps boundaries.
    """
    out = np.array(labels, dtype=np.uint8, copy=True)
    structure = ndi.generate_binary_structure(2, 1)
    failed = missing_tagged(labels, tags)
    for z in range(out.shape[-1]):
        lab = labels[..., z]
        if failed[z]:
            out[..., z] = IGNORE
            continue
        if band:
            edge = np.zeros(lab.shape, bool)
            for c in np.unique(lab):
                mask = lab == c
                edge |= ndi.binary_dilation(mask, structure, band) & ndi.binary_dilation(
                    ~mask, structure, band
                )
            out[..., z][edge] = IGNORE
    return out
