"""Dense-CRF refinement of labels on the image: grayscale MRI kernels for ACDC, DeepLab's RGB kernels for
photos (:mod:`acdc_wsss.crf`)."""

from __future__ import annotations

import numpy as np

from acdc_wsss.crf import CRF_MRI, CRF_RGB, dense_crf

__all__ = ["crf_labels", "rgb_crf_labels"]


def crf_labels(image: np.ndarray, labels: np.ndarray, confidence: float, num_labels: int = 4) -> np.ndarray:
    """Dense-CRF refinement of a label volume, slice by slice: each pixel's label gets probability
    ``confidence``, the others share the rest; grayscale MRI kernels (:data:`acdc_wsss.crf.CRF_MRI`)."""
    out = np.zeros_like(labels)
    rest = (1 - confidence) / (num_labels - 1)
    for z in range(labels.shape[-1]):
        onehot = np.eye(num_labels, dtype=np.float32)[labels[..., z]].transpose(2, 0, 1)
        probs = onehot * (confidence - rest) + rest
        out[..., z] = dense_crf(image[..., z], probs, CRF_MRI).argmax(0)
    return out


def rgb_crf_labels(rgb: np.ndarray, scores: np.ndarray, background: float) -> np.ndarray:
    """CAM labels refined by DeepLab's RGB dense CRF: ``[background, scores]`` as probabilities of each
    image ``(H, W, 3, S)`` uint8 (scores ``(C, H, W, S)``).

    The CRF runs over the background and the classes with a score somewhere in the image (its tags) only:
    a class without any score has the smallest probability everywhere and is never chosen, and the CRF's
    cost grows with the number of labels (a photo has 1 to 3 of VOC's 20 classes)."""
    out = np.zeros(scores.shape[1:], np.uint8)
    for z in range(scores.shape[-1]):
        present = np.flatnonzero(scores[..., z].reshape(len(scores), -1).max(axis=1) > 0)
        if present.size == 0:
            continue
        probs = np.concatenate([np.full_like(scores[:1, ..., z], background), scores[present, ..., z]])
        picked = dense_crf(rgb[..., z], probs, CRF_RGB).argmax(0)
        out[..., z] = np.concatenate([[0], present + 1]).astype(np.uint8)[picked]
    return out
