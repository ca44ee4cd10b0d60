"""The one preprocessing chain every stage uses, and its inverse.

Chain (MONAI dictionary transforms, on datalist items with ``image`` and optional ``label`` and ``pair``,
the other cardiac phase of the same scan):

1. ``LoadImaged`` (nibabel) with channel first: ``(1, X, Y, S)``, ``S`` short-axis slices.
2. ``SliceTagsd``: multi-hot slice tags from the label on its original grid (where a label exists).
3. ``Spacingd``: in-plane resampling to ``spacing`` mm, slice spacing kept (bilinear; labels nearest). The
   affine keeps its rotation, so oblique scans stay oblique.
4. ``ClipZScoreIntensityd``: percentile clip, then z-score, per volume (image and pair).
5. ``MotionMapd`` + ``HeartCentred``: the ED-ES motion map and the heart centre (centre mode ``"motion"``;
   a frame without its pair falls back to the image centre).
6. ``CropPadAroundCentred``: in-plane crop/pad to ``roi_size`` around that centre (image padded with its
   minimum, label and motion with 0).

Everything geometric is invertible: :func:`invert` maps any ``(C, H, W, S)`` array in the preprocessed
grid back to the source image's grid (same shape and affine) with MONAI's ``Invertd``; :func:`invert_labels`
(with :func:`label_inverter`, the one way every stage carries labels back) maps a label map.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from monai.data import MetaTensor
from monai.transforms import AsDiscreted, Compose, DeleteItemsd, Invertd, LoadImaged, Spacingd
from monai.utils import TraceKeys

from acdc_wsss.data.transforms import (
    ClipZScoreIntensityd,
    CropPadAroundCentred,
    HeartCentred,
    MotionMapd,
    SliceTagsd,
)

__all__ = [
    "CENTRE_MODES",
    "PreprocessConfig",
    "build_preprocessing",
    "forget_transform_ids",
    "invert",
    "invert_labels",
    "label_inverter",
]

#: How the crop centre is chosen: the ED-ES motion map's heart centre, or the image centre.
CENTRE_MODES: tuple[str, ...] = ("motion", "image")


@dataclass(frozen=True)
class PreprocessConfig:
    """Settings of the preprocessing chain (all stages of a run must share them).

    Attributes:
        spacing: in-plane voxel size in mm after resampling.
        roi_size: in-plane output size ``(H, W)`` in voxels.
        percentiles: intensity clip percentiles ``(lower, upper)`` before the z-score.
        centre: ``"motion"`` (heart centre from the ED-ES motion map) or ``"image"``.
        motion_sigma: in-plane smoothing of the motion map, in output voxels.
    """

    spacing: float = 1.5
    roi_size: tuple[int, int] = field(default=(128, 128))
    percentiles: tuple[float, float] = field(default=(0.5, 99.5))
    centre: str = "motion"
    motion_sigma: float = 2.0

    def __post_init__(self) -> None:
        if self.spacing <= 0:
            raise ValueError(f"spacing must be > 0 mm, got {self.spacing}.")
        if self.centre not in CENTRE_MODES:
            raise ValueError(f"centre must be one of {CENTRE_MODES}, got {self.centre!r}.")
        object.__setattr__(self, "roi_size", tuple(int(s) for s in self.roi_size))
        object.__setattr__(self, "percentiles", tuple(float(p) for p in self.percentiles))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (for manifests and cache keys)."""
        return asdict(self)


def build_preprocessing(config: PreprocessConfig | None = None, num_classes: int = 3) -> Compose:
    """Build the preprocessing chain.

    Args:
        config: chain settings; default :class:`PreprocessConfig`.
        num_classes: number of foreground classes, for the slice tags (take it from the dataset).

    Returns:
        A MONAI ``Compose`` mapping a datalist item to ``image`` ``(1, H, W, S)`` float32 (z-scored),
        ``label`` ``(1, H, W, S)`` (where given), ``motion`` ``(1, H, W, S)`` in [0, 1], ``tags``
        ``(S, num_classes)`` (where a label is given) and ``centre`` (in-plane voxel centre before the crop,
        or None).
    """
    c = config or PreprocessConfig()
    keys = ["image", "label", "pair"]
    steps: list[Any] = [
        LoadImaged(
            keys, reader="NibabelReader", image_only=True, ensure_channel_first=True, allow_missing_keys=True
        ),
        SliceTagsd("label", num_classes=num_classes),
        Spacingd(
            keys,
            pixdim=(c.spacing, c.spacing, -1),
            mode=("bilinear", "nearest", "bilinear"),
            padding_mode="border",
            allow_missing_keys=True,
        ),
        ClipZScoreIntensityd(["image", "pair"], *c.percentiles, allow_missing_keys=True),
        MotionMapd("image", pair_key="pair", sigma=c.motion_sigma),
    ]
    if c.centre == "motion":
        steps.append(HeartCentred("motion"))
    steps += [
        DeleteItemsd("pair"),
        CropPadAroundCentred(
            ["image", "label", "motion"],
            roi_size=c.roi_size,
            pad_value=(None, 0.0, 0.0),
            allow_missing_keys=True,
        ),
    ]
    return Compose(steps)


def forget_transform_ids(x: MetaTensor) -> MetaTensor:
    """Mark ``x``'s recorded transforms as inverted by any instance of their class.

    MONAI checks that the object inverting a transform is the one that applied it (``id``), which fails
    once a preprocessed volume was cached to disk and read back by another process. The chain is rebuilt
    from the same :class:`PreprocessConfig`, so the class check suffices; ``TraceKeys.NONE`` is MONAI's own
    way to skip the id check.
    """

    def strip(ops: Any) -> None:
        for op in ops:
            op[TraceKeys.ID] = TraceKeys.NONE
            strip(
                op.get(TraceKeys.EXTRA_INFO, {}).get("applied_operations", []) if isinstance(op, dict) else []
            )

    strip(x.applied_operations)
    return x


def invert(
    values: torch.Tensor,
    reference: MetaTensor,
    transform: Compose,
    nearest: bool = True,
) -> MetaTensor:
    """Map a ``(C, H, W, S)`` array on the preprocessed grid back to the source image's grid.

    Args:
        values: array on the preprocessed grid (a mask, probabilities, a CAM...).
        reference: the preprocessed ``image`` of the same volume (carries the recorded transforms).
        transform: the chain that produced ``reference`` (or one built from the same config).
        nearest: nearest-neighbour resampling (masks); False uses each step's own mode (bilinear).

    Returns:
        MetaTensor ``(C, X, Y, S)`` with the source image's spatial shape and affine.
    """
    if tuple(values.shape[1:]) != tuple(reference.shape[1:]):
        raise ValueError(
            f"values of shape {tuple(values.shape)} are not on the reference grid {tuple(reference.shape)}."
        )
    inverter = Invertd("pred", transform=transform, orig_keys="image", nearest_interp=nearest)
    data: Mapping[Hashable, Any] = {"image": reference, "pred": MetaTensor(torch.as_tensor(values))}
    return inverter(dict(data))["pred"]


def label_inverter(transform: Compose, num_classes: int, linear: bool = True) -> Compose:
    """Carry the labels (0..``num_classes``) in ``pred`` back through ``transform``'s inverse onto the source
    grid (``image``'s recorded transforms): with ``linear``, as one-hot channels each interpolated linearly,
    then the argmax, so a boundary falls between the chain's pixels where the source grid is finer; else
    nearest-neighbour (which gives back a mask that came onto the chain's grid by nearest-neighbour)."""
    if not linear:
        return Compose([Invertd("pred", transform, orig_keys="image", nearest_interp=True)])
    return Compose(
        [
            AsDiscreted("pred", to_onehot=num_classes + 1),
            Invertd("pred", transform, orig_keys="image", nearest_interp=False),
            AsDiscreted("pred", argmax=True),
        ]
    )


def invert_labels(
    labels: torch.Tensor, reference: MetaTensor, transform: Compose, num_classes: int, linear: bool = True
) -> MetaTensor:
    """Map a ``(1, H, W, S)`` label map on the preprocessed grid back to the source image's grid with
    :func:`label_inverter`; returns ``(1, X, Y, S)`` labels with the source's shape and affine."""
    if tuple(labels.shape) != (1, *reference.shape[1:]):
        raise ValueError(
            f"labels of shape {tuple(labels.shape)} are not one channel on the reference grid "
            f"{tuple(reference.shape)}."
        )
    data = {"image": reference, "pred": MetaTensor(torch.as_tensor(labels, dtype=torch.float32))}
    return label_inverter(transform, num_classes, linear)(data)["pred"]
