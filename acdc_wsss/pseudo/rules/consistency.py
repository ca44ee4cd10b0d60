"""ED-ES consistency: the LV cavity shrinks from end-diastole to end-systole, so the ES cavity is sought
inside the ED cavity of the same slice, grown a little."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from acdc_wsss.pseudo.rules.common import LV

__all__ = ["es_lv_region"]


def es_lv_region(ed_labels: np.ndarray, margin_px: int = 3) -> np.ndarray:
    """Where the ES LV cavity may lie, from the ED labels of the same patient on the same grid: the ED
    cavity grown by ``margin_px`` in-plane (the cavity shrinks from ED to ES; the chain crops both frames
    around one motion centre, so their pixels match). Pass it as ``lv_within`` for the ES frame."""
    structure = np.ones((3, 3, 1), bool)
    cavity = ed_labels == LV
    return ndi.binary_dilation(cavity, structure, iterations=margin_px) if margin_px else cavity
