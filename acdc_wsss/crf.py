"""Dense CRF refinement (pydensecrf), with parameter sets for grayscale MRI and RGB photos.

DeepLab's fully connected CRF: unary = -log(probabilities); a Gaussian (smoothness) kernel and a
bilateral (appearance) kernel over position and intensity. ``addPairwiseBilateral`` of pydensecrf's
``DenseCRF2D`` expects an RGB uint8 image, so grayscale input uses the generic ``DenseCRF`` with a
position-intensity feature built here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pydensecrf.densecrf as dcrf
from pydensecrf.utils import create_pairwise_bilateral, create_pairwise_gaussian, unary_from_softmax

__all__ = ["CRF_MRI", "CRF_RGB", "CRF_SEG", "CRFParams", "dense_crf", "seg_kernels"]


@dataclass(frozen=True)
class CRFParams:
    """Kernel settings: Gaussian ``(weight, xy)``, bilateral ``(weight, xy, intensity)``, iterations."""

    gauss_weight: float = 3.0
    gauss_xy: float = 1.0
    bilateral_weight: float = 4.0
    bilateral_xy: float = 67.0
    bilateral_intensity: float = 3.0
    iterations: int = 10


#: DeepLab's VOC setting (RGB 0-255).
CRF_RGB = CRFParams()
#: Grayscale cine MRI at 1.5 mm, z-scored intensities: tighter spatial range, intensity in z-units.
CRF_MRI = CRFParams(
    gauss_weight=3.0, gauss_xy=1.0, bilateral_weight=5.0, bilateral_xy=8.0, bilateral_intensity=0.3
)


def seg_kernels(strength: float) -> CRFParams:
    """The grayscale MRI kernels used on the stage-3 network's probabilities at inference, scaled by
    ``strength``: bilateral weight ``strength`` (8 px, 0.3 z-units of intensity), Gaussian weight
    ``strength / 2`` (1 px). Weaker and tighter than :data:`CRF_MRI`, which acts on the rules' labels: the
    network's boundaries are already near the image's edges."""
    if strength <= 0:
        raise ValueError(f"the CRF's strength must be > 0, got {strength}")
    return CRFParams(
        gauss_weight=strength / 2,
        gauss_xy=1.0,
        bilateral_weight=strength,
        bilateral_xy=8.0,
        bilateral_intensity=0.3,
    )


#: The kernels of the CRF at stage-3 inference (``--infer_crf``); its strength chosen by
#: ``bench/anatomy.py --crf``.
CRF_SEG = seg_kernels(1.0)


def dense_crf(image: np.ndarray, probs: np.ndarray, params: CRFParams = CRF_MRI) -> np.ndarray:
    """Refine per-pixel class probabilities with a dense CRF.

    Args:
        image: ``(H, W)`` grayscale (any scale; ``bilateral_intensity`` is in its units) or ``(H, W, 3)``
            RGB.
        probs: ``(K, H, W)`` class probabilities (rows need not sum exactly to 1).
        params: kernel settings (:data:`CRF_MRI` or :data:`CRF_RGB`).

    Returns:
        ``(K, H, W)`` float32 marginals after ``params.iterations`` mean-field steps.
    """
    k, h, w = probs.shape
    img = np.asarray(image, dtype=np.float32)
    if img.shape[:2] != (h, w):
        raise ValueError(f"image {img.shape} and probabilities {probs.shape} differ in size.")
    p = np.clip(probs.astype(np.float32), 1e-6, 1.0)
    p = p / p.sum(axis=0, keepdims=True)
    crf = dcrf.DenseCRF(h * w, k)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(p)))
    crf.addPairwiseEnergy(
        create_pairwise_gaussian((params.gauss_xy,) * 2, (h, w)), compat=params.gauss_weight
    )
    chan = img[..., None] if img.ndim == 2 else img
    feats = create_pairwise_bilateral(
        (params.bilateral_xy,) * 2, (params.bilateral_intensity,) * chan.shape[-1], chan, chdim=2
    )
    crf.addPairwiseEnergy(feats, compat=params.bilateral_weight)
    q = np.array(crf.inference(params.iterations), dtype=np.float32)
    return q.reshape(k, h, w)
