"""Stage-3 inference as MONAI components: what ``bundles/deeplab_acdc/inference.json`` wires and what
:func:`acdc_wsss.seg.predict` builds, so that both write the same masks.

- ``preprocessing``: the run's one preprocessing chain (:func:`inference_preprocessing`);
- ``inferer``: :class:`VolumeSliceInferer`, a volume ``(B, C, H, W, S)`` segmented slice by slice (2D or
  2.5D), optionally flip-averaged;
- ``postprocessing``: :func:`inference_postprocessing`: :class:`AnatomyFusiond` (the stage-2 rules from the
  scan as a prior), :class:`SliceCRFd` (optional dense CRF), ``AsDiscreted``,
  ``KeepLargestConnectedComponentd``, ``Invertd`` back to the source grid, :class:`WriteMaskd` (NIfTI and
  ``.seg.nrrd``, written atomically);
- handlers: :class:`PredictionRecord` (colour table and ``predictions/manifest.json`` when the run ends)
  and :class:`TerminalProgress`.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.engines import SupervisedEvaluator
from monai.inferers import Inferer
from monai.transforms import (
    AsDiscreted,
    Compose,
    CopyItemsd,
    DeleteItemsd,
    KeepLargestConnectedComponentd,
    MapTransform,
)

from acdc_wsss.crf import CRF_SEG, CRFParams, dense_crf
from acdc_wsss.data.preprocess import PreprocessConfig, build_preprocessing, label_inverter
from acdc_wsss.data.slices import volume_key
from acdc_wsss.layout import PredictionLayout
from acdc_wsss.nifti import save_nifti, save_seg_nrrd, write_colour_table
from acdc_wsss.pseudo.rules import ScanRules, carry_probabilities, es_lv_region, rules_source, scan_labels
from acdc_wsss.seg.masks import BRIGHT_PHASES, RV, rv_after_descent, slice_rules
from acdc_wsss.seg.model import network_slices, predict_slices
from acdc_wsss.utils import write_json

# The inference fusions' defaults, chosen by cross-validation over the 64 non-test patients of the default
# split (``bench/stage3.py --fold``, pooled by ``bench/anatomy.py``): the rules' weight where a frame has
# its ED/ES pair, and the ED frame's weight in an ES frame's probabilities (0.3 before the rules on the
# predicted masks below; 0.4 with them).
DEFAULT_ANATOMY = 0.4
DEFAULT_TEMPORAL = 0.4
#: How far (mm) below its ED frame's most basal RV slice an ES frame's RV may begin: at systole the
#: tricuspid annulus moves towards the apex, so the ES frame's basal slices show the right atrium, not the
#: RV. Chosen on the validation patients (``bench/anatomy.py --rv_descent``), cross-validated with the two
#: below.
DEFAULT_RV_DESCENT = 10.0
#: An ES slice's RV that the cut above would remove is kept where the network's mean probability over it
#: is at least this share of its mean probability over the frame's RV on the other slices: where the
#: tricuspid annulus moves little (a failing RV), the ES basal slice still shows RV, and the network is as
#: sure of it as of the rest (cross-validated, ``bench/anatomy.py --rv_confident``; None: always cut).
DEFAULT_RV_CONFIDENT: float | None = 1.0
#: The predicted LV made convex over the myocardium, and the epicardium pulled in by this many pixels of the
#: chain's grid: the network draws the wall too thick on both sides (chosen on the validation patients and
#: cross-validated, ``bench/anatomy.py --lv_hull --epi_px``).
DEFAULT_LV_HULL = True
DEFAULT_EPI_PX = 1
#: The most basal LV slice's LV kept only where the myocardium holds at least half the LV's outline (on: it
#: loses with no network measured), and each slice's RV kept only where it touches the left heart (off:
#: its cross-validated gain came from one fold's network and did not hold with two others;
#: ``bench/anatomy.py --rv_attached --lv_enclosed``).
DEFAULT_RV_ATTACHED = False
DEFAULT_LV_ENCLOSED = True
#: On ED frames, the myocardium next to the LV turned LV where the image is brighter than this share of the
#: way from the myocardium's median intensity to the LV's (cross-validated, ``bench/anatomy.py
#: --lv_bright``; None: off).
DEFAULT_LV_BRIGHT = 0.3
#: A dense CRF on each slice's fused probabilities before the argmax (kernels :data:`acdc_wsss.crf.CRF_SEG`):
#: cross-validated like the fusions (``bench/anatomy.py --crf``).
DEFAULT_CRF = True
#: The masks carried back to the scan's grid as one-hot channels with each step's own (linear)
#: interpolation, then the argmax, instead of nearest-neighbour: smoother boundaries between the chain's
#: 1.5 mm pixels and the scan's (cross-validated on the original grid, ``bench/inference.py``).
DEFAULT_LINEAR_INVERT = True

__all__ = [
    "AnatomyFusiond",
    "PredictionRecord",
    "RVDescentd",
    "SliceCRFd",
    "TerminalProgress",
    "VolumeSliceInferer",
    "WallRulesd",
    "WriteMaskd",
    "fuse_volume",
    "fuse_with_rules",
    "image_and_motion",
    "inference_evaluator",
    "inference_postprocessing",
    "inference_preprocessing",
    "mask_name",
    "mix_with_ed",
    "slice_crf",
]

logger = logging.getLogger(__name__)


def check_anatomy(confidence: float | None, num_classes: int) -> None:
    """Refuse a rules' weight at inference outside ``[1/K, 1]`` (``K`` classes with the background)."""
    k = num_classes
    if confidence is not None and not 1 / k <= confidence <= 1:
        raise ValueError(
            f"the rules' weight at inference (infer_anatomy) must lie in [1/{k}, 1], got {confidence}:"
            f" below 1/{k} the rules would count against their own label; None gives the network alone"
        )


def fuse_with_rules(probs: np.ndarray, rules: np.ndarray, confidence: float) -> np.ndarray:
    """Product of experts: the network's ``(S, K, H, W)`` probabilities times the rules' ``(S, H, W)``
    labels read as probabilities (``confidence`` on the rule's label, the rest shared), renormalised.
    ``confidence`` lies in ``[1/K, 1]``: at ``1/K`` the rules add nothing, below it they would push the
    network away from their own label."""
    k = probs.shape[1]
    check_anatomy(confidence, k)
    rest = (1 - confidence) / (k - 1)
    prior = np.eye(k, dtype=np.float32)[rules].transpose(0, 3, 1, 2) * (confidence - rest) + rest
    fused = probs * prior
    return fused / fused.sum(axis=1, keepdims=True)


def fuse_volume(probs: np.ndarray, rules: np.ndarray, confidence: float) -> np.ndarray:
    """:func:`fuse_with_rules` on a volume: ``(K, H, W, S)`` probabilities, ``(H, W, S)`` rule labels."""
    fused = fuse_with_rules(probs.transpose(3, 0, 1, 2), rules.transpose(2, 0, 1), confidence)
    return np.ascontiguousarray(fused.transpose(1, 2, 3, 0))


def mask_name(item: Mapping[str, Any]) -> str:
    """The name of an item's mask: its volume key, or a single file's stem."""
    if item.get("phase") == "frame":
        return str(item["patient"])
    return volume_key({**item, "frame": int(item["frame"])})


def inference_preprocessing(config: PreprocessConfig | Mapping[str, Any], num_classes: int = 3) -> Compose:
    """The run's preprocessing chain (``config``: its :class:`PreprocessConfig` or the dict a manifest
    records), dropping the crop centre and slice tags, which inference does not use (and a batch cannot
    hold a missing centre)."""
    cfg = config if isinstance(config, PreprocessConfig) else PreprocessConfig(**config)
    return Compose([build_preprocessing(cfg, num_classes), DeleteItemsd(["centre", "tags"])])


class VolumeSliceInferer(Inferer):
    """Segment volumes ``(B, C, H, W, S)`` slice by slice with a 2D network: softmax probabilities
    ``(B, K, H, W, S)``, averaged with the flipped slice when ``flip``. A 2.5D network (``context``
    attribute, see :func:`acdc_wsss.seg.model.volume_slices`) gets its neighbour slices as channels, and a
    network that reads the ED-ES motion map (``motion`` attribute) the ``motion`` ``(B, 1, H, W, S)`` that
    :func:`image_and_motion` hands over."""

    def __init__(self, flip: bool = True, batch: int = 32) -> None:
        super().__init__()
        self.flip, self.batch = flip, batch

    def __call__(
        self,
        inputs: torch.Tensor,
        network: Any,
        *args: Any,
        motion: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        out = [
            predict_slices(
                network,
                network_slices(network, v, None if motion is None else motion[b]),
                inputs.device,
                self.flip,
                self.batch,
            )
            for b, v in enumerate(inputs)
        ]
        return torch.stack([p.permute(1, 2, 3, 0) for p in out])


def image_and_motion(
    batchdata: Mapping[str, Any],
    device: torch.device | str | None = None,
    non_blocking: bool = False,
    **kwargs: Any,
) -> tuple[torch.Tensor, None, tuple, dict[str, torch.Tensor]]:
    """The evaluator's ``prepare_batch`` for :class:`VolumeSliceInferer`: the batch's ``image`` as the
    inputs, and its ED-ES ``motion`` map (all zeros for a frame without its partner) handed to the inferer
    for a network that reads it."""
    image = batchdata["image"].to(device=device, non_blocking=non_blocking)
    motion = batchdata["motion"].to(device=device, non_blocking=non_blocking)
    return image, None, (), {"motion": motion}


class AnatomyFusiond(MapTransform):
    """Fuse the network's probabilities ``pred`` ``(K, H, W, S)`` with the stage-2 rules run on the scan
    (no tags: none at inference), where the frame has its ED/ES pair (:func:`fuse_with_rules`; the rules'
    label gets probability ``confidence``; None: unchanged); then, with ``temporal``, mix an ES frame's
    probabilities with its ED frame's carried onto it by registration (:func:`mix_with_ed`).

    Reads ``image`` and ``motion`` (preprocessed), ``patient``, ``phase`` and ``has_pair``. An ES frame's LV
    is sought inside its ED frame's, so ED frames must come first (:func:`acdc_wsss.seg.inference_items`
    orders them so); the ED labels (and, with ``temporal``, image and probabilities) are kept per patient
    until its ES frame has used them. ``septal``: the septal direction stage 2's labels were made with (the
    seg manifest's ``pseudo_labels.septal``, :func:`acdc_wsss.pseudo.rows.run_septal`), so the rules seek
    the RV on the same side. ``rules``: the rules' settings (default
    :class:`~acdc_wsss.pseudo.rules.ScanRules`).
    """

    def __init__(
        self,
        keys: Any = "pred",
        confidence: float | None = DEFAULT_ANATOMY,
        spacing: float = 1.5,
        temporal: float | None = None,
        septal: float | None = None,
        rules: ScanRules | None = None,
    ) -> None:
        super().__init__(keys)
        self.confidence, self.spacing, self.temporal = confidence, spacing, temporal
        self.septal, self.scan_rules = septal, rules
        self._ed: dict[str, np.ndarray] = {}
        self._ed_probs: dict[str, tuple[np.ndarray, dict[Hashable, np.ndarray]]] = {}

    def rules(self, d: Mapping[Hashable, Any]) -> np.ndarray:
        """The rules' ``(H, W, S)`` labels of the frame in ``d`` (kept per patient for an ED frame)."""
        return self._rules(d)

    def _rules(self, d: Mapping[Hashable, Any]) -> np.ndarray:
        image = np.asarray(d["image"][0].detach().cpu(), dtype=np.float32)
        # the motion map as the run's cache stores it (float16), so the rules see what stage 2 saw
        motion = d["motion"][0].detach().cpu().half().float().numpy()
        patient, phase = str(d["patient"]), str(d["phase"])
        ed = self._ed.pop(patient, None) if phase == "ES" else None
        within = es_lv_region(ed) if ed is not None and ed.shape == image.shape else None
        rules = scan_labels(
            image, motion, None, self.spacing, rules=self.scan_rules, lv_within=within, septal=self.septal
        )
        if phase == "ED":
            self._ed[patient] = rules
        return rules

    def _temporal(self, d: dict[Hashable, Any]) -> None:
        """Keep an ED frame's image and probabilities; mix an ES frame's with them."""
        image = np.asarray(d["image"][0].detach().cpu(), dtype=np.float32)
        patient, phase = str(d["patient"]), str(d["phase"])
        if phase == "ED":
            self._ed_probs[patient] = (image, {k: d[k].detach().cpu().numpy() for k in self.key_iterator(d)})
            return
        ed_image, ed_probs = self._ed_probs.pop(patient, (None, {}))
        if ed_image is None or ed_image.shape != image.shape:
            return
        fields: dict = {}
        for key in self.key_iterator(d):
            es_probs = d[key].detach().cpu().numpy()
            mixed = mix_with_ed(es_probs, image, ed_probs[key], ed_image, self.temporal, fields)
            d[key] = torch.as_tensor(mixed)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if not bool(d.get("has_pair")):
            return d
        if self.confidence is not None:
            rules = self._rules(d)
            for key in self.key_iterator(d):
                d[key] = torch.as_tensor(fuse_volume(d[key].detach().cpu().numpy(), rules, self.confidence))
        if self.temporal is not None:
            self._temporal(d)
        return d


def mix_with_ed(
    es_probs: np.ndarray,
    es_image: np.ndarray,
    ed_probs: np.ndarray,
    ed_image: np.ndarray,
    weight: float,
    fields: dict | None = None,
) -> np.ndarray:
    """``(K, H, W, S)`` float32: an ES frame's class probabilities mixed with its ED frame's carried onto the
    ES images (:func:`~acdc_wsss.pseudo.rules.carry_probabilities`), the carried ones with ``weight``: the
    network segments the larger ED heart better, and the two frames' errors differ."""
    carried = carry_probabilities(ed_probs, ed_image, es_image, region=es_probs[0] < 0.5, fields=fields)
    return ((1.0 - weight) * es_probs + weight * carried).astype(np.float32)


def _with_labels(pred: torch.Tensor, labels: np.ndarray) -> torch.Tensor:
    """A copy of ``pred`` ``(1, H, W, S)`` (its MetaTensor metadata kept, for ``Invertd``) holding
    ``labels``."""
    out = pred.clone()
    out[0] = torch.as_tensor(labels, dtype=out.dtype)
    return out


class RVDescentd(MapTransform):
    """On discrete labels ``pred`` ``(1, H, W, S)``: where a patient has both frames, keep the ED frame's
    labels and remove from its ES frame the RV on the slices basal to ``descent_mm`` below the ED frame's
    basal RV slice (:func:`rv_after_descent`; the slice spacing is read from ``image``'s ``pixdim``), except
    a slice's RV whose mean probability in ``probs`` (the probabilities before the argmax, ``(K, H, W, S)``)
    is at least ``confident`` times the frame's uncut RV's. ED frames must come first, as for
    :class:`AnatomyFusiond`. ``descent_mm`` None: unchanged; ``confident`` None: every such slice cut."""

    def __init__(
        self,
        keys: Any = "pred",
        descent_mm: float | None = DEFAULT_RV_DESCENT,
        confident: float | None = DEFAULT_RV_CONFIDENT,
        probs: str = "probs",
    ) -> None:
        super().__init__(keys)
        if descent_mm is not None and descent_mm < 0:
            raise ValueError(
                f"the RV's descent at inference (infer_rv_descent) must be >= 0 mm, got {descent_mm}"
            )
        if confident is not None and confident < 0:
            raise ValueError(
                f"the kept RV's share of probability (infer_rv_confident) must be >= 0, got {confident}"
            )
        self.descent_mm, self.confident, self.probs = descent_mm, confident, probs
        self._ed: dict[str, np.ndarray] = {}

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.descent_mm is None or not bool(d.get("has_pair")):
            return d
        patient, phase = str(d["patient"]), str(d["phase"])
        for key in self.key_iterator(d):
            labels = d[key][0].detach().cpu().numpy()
            if phase == "ED":
                self._ed[patient] = labels
                continue
            ed = self._ed.pop(patient, None)
            if ed is None:
                continue
            rv_prob = None
            if self.confident is not None and self.probs in d:
                rv_prob = np.asarray(d[self.probs][RV].detach().cpu(), dtype=np.float32)
            slice_mm = float(d["image"].pixdim[-1])
            cut = rv_after_descent(labels, ed, slice_mm, self.descent_mm, rv_prob, self.confident)
            d[key] = _with_labels(d[key], cut)
        return d


class WallRulesd(MapTransform):
    """On discrete labels ``pred`` ``(1, H, W, S)``, slice by slice, in this order: the LV made convex over
    the myocardium (:func:`~acdc_wsss.seg.masks.convex_lv`; the masks draw the endocardium round the
    papillary muscles and trabeculae) when ``lv_hull``; the epicardium pulled in by ``epi_px`` pixels
    (:func:`~acdc_wsss.seg.masks.thin_epicardium`; 0: kept); the RV's pieces away from the left heart
    removed when ``rv_attached`` (:func:`~acdc_wsss.seg.masks.attached_rv`); the most basal LV slice's LV
    removed where the wall does not surround it when ``lv_enclosed``
    (:func:`~acdc_wsss.seg.masks.enclosed_lv`); on an ED frame (``phase``), the bright endocardium next to
    the LV turned LV with share ``lv_bright`` of the ``image``
    (:func:`~acdc_wsss.seg.masks.bright_endocardium`; None: not)."""

    def __init__(
        self,
        keys: Any = "pred",
        lv_hull: bool = DEFAULT_LV_HULL,
        epi_px: int = DEFAULT_EPI_PX,
        rv_attached: bool = DEFAULT_RV_ATTACHED,
        lv_enclosed: bool = DEFAULT_LV_ENCLOSED,
        lv_bright: float | None = DEFAULT_LV_BRIGHT,
    ) -> None:
        super().__init__(keys)
        if epi_px < 0:
            raise ValueError(
                f"the epicardium's pull at inference (infer_epi_px) must be >= 0 pixels, got {epi_px}"
            )
        if lv_bright is not None and not 0 <= lv_bright <= 1:
            raise ValueError(
                f"the bright endocardium's share (infer_lv_bright) must be in [0, 1], got {lv_bright}"
            )
        self.lv_hull, self.epi_px = bool(lv_hull), int(epi_px)
        self.rv_attached, self.lv_enclosed = bool(rv_attached), bool(lv_enclosed)
        self.lv_bright = lv_bright

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        phase = str(d.get("phase"))
        bright = self.lv_bright is not None and phase in BRIGHT_PHASES  # only then is the image read
        if not (self.lv_hull or self.epi_px or self.rv_attached or self.lv_enclosed or bright):
            return d
        image = np.asarray(d["image"][0].detach().cpu(), dtype=np.float32) if bright else None
        for key in self.key_iterator(d):
            labels = d[key][0].detach().cpu().numpy()
            rules = (self.lv_hull, self.epi_px, self.rv_attached, self.lv_enclosed, self.lv_bright)
            d[key] = _with_labels(d[key], slice_rules(labels, *rules, image=image, phase=phase))
        return d


def slice_crf(probs: np.ndarray, image: np.ndarray, params: CRFParams = CRF_SEG) -> np.ndarray:
    """Dense CRF on each slice of ``(K, H, W, S)`` probabilities, guided by the ``(H, W, S)`` image: the
    ``(K, H, W, S)`` float32 marginals."""
    q = [dense_crf(image[..., z], probs[..., z], params) for z in range(image.shape[-1])]
    return np.stack(q, axis=-1)


class SliceCRFd(MapTransform):
    """Dense CRF on each slice's probabilities ``(K, H, W, S)`` of ``key`` (:func:`slice_crf`; default
    kernels :data:`acdc_wsss.crf.CRF_SEG`), with the preprocessed ``image`` as the guide; the CRF's marginals
    replace the probabilities."""

    def __init__(self, keys: Any = "pred", params: CRFParams = CRF_SEG) -> None:
        super().__init__(keys)
        self.params = params

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = np.asarray(d["image"][0].detach().cpu(), dtype=np.float32)
        for key in self.key_iterator(d):
            probs = np.asarray(d[key].detach().cpu(), dtype=np.float32)
            d[key] = torch.as_tensor(slice_crf(probs, image, self.params))
        return d


class WriteMaskd(MapTransform):
    """Write ``pred`` ``(1, X, Y, Z)`` (on the source grid, after ``Invertd``) as
    ``<folder>/<name>_seg.nii.gz``, uint8 with the source affine, and beside it ``<name>_seg.seg.nrrd`` (3D
    Slicer segmentation naming ``classes``) when ``nrrd``; both atomically. ``written`` lists the NIfTI
    names in the order written."""

    def __init__(
        self, folder: str | os.PathLike, classes: Sequence[str], nrrd: bool = True, keys: Any = "pred"
    ) -> None:
        super().__init__(keys)
        self.layout, self.classes, self.nrrd = PredictionLayout(folder), tuple(classes), nrrd
        self.written: list[str] = []

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        name = mask_name(d)
        for key in self.key_iterator(d):
            labels = d[key][0].detach().cpu().numpy().round()
            affine = d[key].affine.detach().cpu().numpy()
            path = save_nifti(labels, affine, self.layout.mask(name))
            if self.nrrd:
                save_seg_nrrd(labels, affine, self.layout.segmentation(name), self.classes)
            self.written.append(path.name)
        return d


def inference_postprocessing(
    preprocessing: Compose,
    writer: WriteMaskd,
    anatomy: float | None = DEFAULT_ANATOMY,
    spacing: float = 1.5,
    crf: bool = DEFAULT_CRF,
    largest_component: bool = True,
    num_classes: int = 3,
    temporal: float | None = DEFAULT_TEMPORAL,
    septal: float | None = None,
    rv_descent: float | None = DEFAULT_RV_DESCENT,
    lv_hull: bool = DEFAULT_LV_HULL,
    epi_px: int = DEFAULT_EPI_PX,
    rv_attached: bool = DEFAULT_RV_ATTACHED,
    lv_enclosed: bool = DEFAULT_LV_ENCLOSED,
    lv_bright: float | None = DEFAULT_LV_BRIGHT,
    linear_invert: bool = DEFAULT_LINEAR_INVERT,
    rv_confident: float | None = DEFAULT_RV_CONFIDENT,
) -> Compose:
    """Probabilities to written masks: anatomy fusion and ED-ES mixing (:class:`AnatomyFusiond`, ``septal``
    as there), optional CRF, argmax, each class's largest 3D component (26-connected), the rules on each
    slice (``lv_hull``, ``epi_px``, ``rv_attached``, ``lv_enclosed``, ``lv_bright``: :class:`WallRulesd`),
    the ES frame's RV cut at its ED frame's base moved by ``rv_descent`` mm, except where the network is
    as sure of it as of the rest (``rv_confident``; :class:`RVDescentd`, reading a copy of the probabilities
    before the argmax), inverse of ``preprocessing`` (:func:`~acdc_wsss.data.preprocess.label_inverter`,
    ``linear_invert``), ``writer``. An ``anatomy`` weight outside ``[1/K, 1]`` is refused here, before any
    volume."""
    check_anatomy(anatomy, num_classes + 1)
    steps: list[Any] = [AnatomyFusiond("pred", anatomy, spacing, temporal, septal)]
    if crf:
        steps.append(SliceCRFd("pred"))
    keep_probs = rv_descent is not None and rv_confident is not None
    if keep_probs:
        steps.append(CopyItemsd("pred", names="probs"))
    steps.append(AsDiscreted("pred", argmax=True))
    if largest_component:
        labels = list(range(1, num_classes + 1))
        steps.append(KeepLargestConnectedComponentd("pred", labels, independent=True, connectivity=3))
    steps.append(WallRulesd("pred", lv_hull, epi_px, rv_attached, lv_enclosed, lv_bright))
    steps.append(RVDescentd("pred", rv_descent, rv_confident))
    if keep_probs:
        steps.append(DeleteItemsd("probs"))
    return Compose([*steps, label_inverter(preprocessing, num_classes, linear_invert), writer])


class PredictionRecord:
    """When the evaluator finishes (or on :meth:`write`), write the colour table and
    ``predictions/manifest.json``: the files ``writer`` wrote, the settings that made them and the digest of
    the rules the fusions ran (:func:`~acdc_wsss.pseudo.rules.rules_source`)."""

    def __init__(self, writer: WriteMaskd, settings: Mapping[str, Any]) -> None:
        self.writer, self.settings = writer, dict(settings)

    def write(self) -> Path:
        layout = self.writer.layout
        write_colour_table(layout.colour_table, self.writer.classes)
        files = {"files": self.writer.written, "classes": list(self.writer.classes)}
        write_json({**self.settings, "rules_source": rules_source(), **files}, layout.manifest)
        logger.info(
            "%d masks written to %s (3D Slicer: drag a .seg.nrrd in, or load the .nii.gz with %s)",
            len(self.writer.written),
            layout.path,
            layout.colour_table.name,
        )
        return layout.path

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, lambda _: self.write())


class TerminalProgress:
    """A progress bar over an engine's iterations, on a terminal only (a log file gets none)."""

    def __init__(self, desc: str = "segmenting volumes", enabled: bool = True) -> None:
        self.desc, self.enabled = desc, enabled

    def attach(self, engine: Engine) -> None:
        if self.enabled and sys.stderr.isatty():
            from ignite.handlers import ProgressBar

            ProgressBar(persist=False, desc=self.desc).attach(engine)


def inference_evaluator(
    items: Sequence[Mapping[str, Any]],
    network: torch.nn.Module,
    preprocessing: Compose,
    postprocessing: Compose,
    device: str | torch.device = "cpu",
    flip: bool = True,
    handlers: Sequence[Any] = (),
) -> SupervisedEvaluator:
    """A ``SupervisedEvaluator`` over ``items`` (one volume per batch, in order), as the bundle builds it."""
    from monai.data import DataLoader, Dataset  # MONAI's collation keeps each volume's transforms

    loader = DataLoader(Dataset(list(items), preprocessing), batch_size=1, shuffle=False, num_workers=0)
    return SupervisedEvaluator(
        device=torch.device(device),
        val_data_loader=loader,
        network=network,
        inferer=VolumeSliceInferer(flip),
        prepare_batch=image_and_motion,
        postprocessing=postprocessing,
        val_handlers=list(handlers),
    )
