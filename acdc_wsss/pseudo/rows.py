"""The rows of the stage-2 table: each row is one way of turning a volume's stored CAMs into labels, built
from the rules of :mod:`acdc_wsss.pseudo.rules`. The L2G rows are cumulative, each adding one refinement
step to the row above it; two yardsticks stand beside them:

- ``baseline``: the plain-CAM baseline run's CAMs, constant background score (only with ``baseline_run``).
- ``cam``: L2G CAM before PCM revision, constant background score (the L2G reference's rule).
- ``pcm``: + PCM revision (the CAM the reference keeps).
- ``learned``: + background from the learned background channel (threshold swept) instead of a constant.
- ``motion``: + background from the motion prior: everything outside the moving heart region.
- ``anatomy``: + ACDC anatomy rules (:func:`~acdc_wsss.pseudo.rules.priors_labels`, the LV blob picked
  with the CAM's help, Myo ring, RV beside the septum, one component per class, holes filled, slices
  tracked on the LV axis).
- ``anatomy_crf``: + dense CRF on the image (confidence swept): the template path's full refinement.
- ``priors``: no CAM at all, anatomy and motion only: the template yardstick.

From the scan (:func:`~acdc_wsss.pseudo.rules.scan_labels`), cumulative from ``priors``, one step each:

- ``scan_lv``: + LV from the scan: blobs chained from slice to slice, the roundest chain, convex hulls.
- ``scan_myo``: + epicardium from the scan (dynamic programming on rays, the patient's own wall).
- ``scan``: + RV grown through blood on the septal side, up to its free wall.
- ``scan_es``: + each ES frame's labels fused with its ED frame's carried onto it by registration: every
  rule from the scan.
- ``scan_cam``: + the L2G CAM's LV score in the choice of the LV chain (its weight swept).

The scan rows seek the RV's seeds on the side of the LV that the run's training patients share
(:func:`run_septal`, computed once per run from their ED images and stored in ``cam/septal.json``).

Photos (VOC) have the CAM rows and ``pcm_crf`` (DeepLab's RGB dense CRF). :func:`volume_context` gathers
what a row's rule reads for one volume; :mod:`acdc_wsss.pseudo.evaluate` scores the rows.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from acdc_wsss.data.slices import SliceDataset, volume_key
from acdc_wsss.layout import RunLayout
from acdc_wsss.pseudo.rules import (
    FusionRules,
    carry_labels,
    crf_labels,
    es_lv_region,
    fuse_es_labels,
    labels_constant,
    labels_learned,
    motion_labels,
    priors_labels,
    rgb_crf_labels,
    scan_labels,
)
from acdc_wsss.pseudo.rules.lv import ChainRules
from acdc_wsss.pseudo.rules.rv import circular_mean, septal_prior
from acdc_wsss.pseudo.rules.scan import ScanRules, scan_septal_direction
from acdc_wsss.pseudo.store import inference_volumes, load_cams, read_cam_manifest
from acdc_wsss.utils import write_json

__all__ = [
    "BG_CONSTANTS",
    "BG_THRESHOLDS",
    "CAM_WEIGHTS",
    "CRF_CONFIDENCES",
    "DEFAULT_ROW",
    "DEFAULT_ROWS",
    "ROWS",
    "ROW_SETS",
    "SCAN_STEPS",
    "SUMMARY_ROWS",
    "context_scan_labels",
    "row_labels",
    "row_set",
    "run_septal",
    "scan_rules",
    "volume_context",
    "volume_contexts",
]

#: Constant background scores swept by the constant-background rows.
BG_CONSTANTS: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7)

#: Learned background probability thresholds swept by the learned-background rows.
BG_THRESHOLDS: tuple[float, ...] = (0.3, 0.5, 0.7, 0.8, 0.9)

#: Dense-CRF confidence (probability of the rule's label) of the CRF row: the value 0.1.0 chose on
#: validation from 0.6/0.7/0.8, kept fixed since the row is no longer exported (one CRF pass, not three,
#: keeps stage 2 within its time).
CRF_CONFIDENCES: tuple[float, ...] = (0.7,)

#: Weights of the CAM's mean LV score in the LV chain's score, swept by the ``scan_cam`` row.
#: (0.25, 0.5, 1 and 2 gave the same validation Dice to 3 decimals: ``bench/rules.py``.)
CAM_WEIGHTS: tuple[float, ...] = (0.5, 2.0)

#: The scan rows' settings (without the CAM weight), cumulative: one step from the scan each.
SCAN_STEPS: dict[str, ScanRules] = {
    "scan_lv": ScanRules(myo_step="ring", rv_step="template", es_step="scan"),
    "scan_myo": ScanRules(rv_step="template", es_step="scan"),
    "scan": ScanRules(es_step="scan"),
    "scan_es": ScanRules(),
}


def _motion(ctx: dict[str, Any], t: float) -> np.ndarray:
    return motion_labels(ctx["scores"], ctx["bg_prob"], ctx["motion"], ctx["spacing"], t)


def _rules(ctx: dict[str, Any], cams: bool) -> np.ndarray:
    """Anatomy-rule labels of a volume (with or without the CAMs), computed once per volume; an ES frame
    seeks its LV inside its ED frame's (``ctx["ed"]``, see :func:`volume_context`)."""
    key = "_anatomy" if cams else "_priors"
    if key not in ctx:
        ed = ctx.get("ed")
        ctx[key] = priors_labels(
            ctx["image"],
            ctx["motion"],
            ctx["tags"],
            ctx["spacing"],
            ctx["scores"] if cams else None,
            lv_within=None if ed is None else es_lv_region(_rules(ed, cams)),
        )
    return ctx[key]


def scan_rules(row: str, value: Any = None) -> ScanRules:
    """The :class:`ScanRules` of a scan row (``scan_cam``: the full rules with CAM weight ``value``)."""
    if row == "scan_cam":
        return ScanRules(chain=ChainRules(w_cam=float(value)))
    return SCAN_STEPS[row]


def _carried(ctx: dict[str, Any], rules: ScanRules, own: np.ndarray) -> np.ndarray:
    """An ES frame's ED labels carried onto it; the registrations are kept in the context, so the rows and
    sweeps whose labels span the same boxes register each slice once."""
    ed = ctx["ed"]
    return carry_labels(
        context_scan_labels(ed, rules),
        ed["image"],
        ctx["image"],
        rules.fusion,
        region=own > 0,
        fields=ctx.setdefault("_fields", {}),
    )


def context_scan_labels(ctx: dict[str, Any], rules: ScanRules) -> np.ndarray:
    """Scan-rule labels of a volume, computed once per volume and settings; an ES frame seeks its LV inside
    its ED frame's (``ctx["ed"]``), as :func:`_rules`, and with ``rules.es_step == "fused"`` its labels are
    then fused with the ED frame's (:func:`~acdc_wsss.pseudo.rules.fuse_es_labels`)."""
    ed = ctx.get("ed")
    if ed is None:  # an ED frame: the ES step's settings do not change its labels
        rules = dataclasses.replace(rules, es_step="scan", fusion=FusionRules())
    cache = ctx.setdefault("_scan", {})
    if rules not in cache:
        if ed is not None and rules.es_step == "fused":
            own = context_scan_labels(ctx, dataclasses.replace(rules, es_step="scan"))
            cache[rules] = fuse_es_labels(own, _carried(ctx, rules, own), ctx["tags"], rules.fusion)
            return cache[rules]
        within = None if ed is None else es_lv_region(context_scan_labels(ed, rules), rules.es_margin_px)
        cache[rules] = scan_labels(
            ctx["image"],
            ctx["motion"],
            ctx["tags"],
            ctx["spacing"],
            ctx.get("scores"),
            rules,
            within,
            ctx.get("septal"),
        )
    return cache[rules]


def _anatomy(ctx: dict[str, Any]) -> np.ndarray:
    return _rules(ctx, cams=True)


def _priors(ctx: dict[str, Any]) -> np.ndarray:
    return _rules(ctx, cams=False)


#: Row id -> (name, labels from a volume's context and the swept value, swept values). The context holds
#: ``scores``, ``raw_scores``, ``bg_prob`` (stored CAMs), ``image``, ``motion`` (preprocessed), ``tags``
#: and ``spacing``. The ``baseline`` row uses the ``constant`` rule on another run's CAMs.
ROWS: dict[str, tuple[str, Callable[[dict[str, Any], Any], np.ndarray], Sequence[Any]]] = {
    "baseline": (
        "Baseline CAM (no L2G), constant background score",
        lambda ctx, t: labels_constant(ctx["scores"], ctx["bg_prob"], t),
        BG_CONSTANTS,
    ),
    "cam": (
        "L2G CAM, constant background score",
        lambda ctx, t: labels_constant(ctx["raw_scores"], ctx["bg_prob"], t),
        BG_CONSTANTS,
    ),
    "pcm": (
        "+ PCM revision",
        lambda ctx, t: labels_constant(ctx["scores"], ctx["bg_prob"], t),
        BG_CONSTANTS,
    ),
    "learned": (
        "+ background from the learned background channel",
        lambda ctx, t: labels_learned(ctx["scores"], ctx["bg_prob"], t),
        BG_THRESHOLDS,
    ),
    "motion": ("+ background outside the moving heart region (motion prior)", _motion, BG_THRESHOLDS),
    "anatomy": (
        "+ anatomy rules (LV blob picked by CAM and motion, Myo ring, RV beside the septum)",
        lambda ctx, t: _anatomy(ctx),
        ("default",),
    ),
    "anatomy_crf": (
        "+ dense CRF (full refinement)",
        lambda ctx, t: crf_labels(ctx["image"], _anatomy(ctx), t),
        CRF_CONFIDENCES,
    ),
    "priors": (
        "Priors only (no CAM): motion centre, blood pools, LV blob, Myo ring, RV beside it",
        lambda ctx, t: _priors(ctx),
        ("default",),
    ),
    "scan_lv": (
        "+ LV from the scan (blobs chained across slices, roundest chain, convex hull)",
        lambda ctx, t: context_scan_labels(ctx, SCAN_STEPS["scan_lv"]),
        ("default",),
    ),
    "scan_myo": (
        "+ epicardium from the scan (rays, dynamic programming, the patient's own wall)",
        lambda ctx, t: context_scan_labels(ctx, SCAN_STEPS["scan_myo"]),
        ("default",),
    ),
    "scan": (
        "+ RV grown through blood on the septal side",
        lambda ctx, t: context_scan_labels(ctx, SCAN_STEPS["scan"]),
        ("default",),
    ),
    "scan_es": (
        "+ ES labels fused with the ED labels carried by registration (every rule from the scan, no CAM)",
        lambda ctx, t: context_scan_labels(ctx, SCAN_STEPS["scan_es"]),
        ("default",),
    ),
    "scan_cam": (
        "+ L2G CAM's LV score in the choice of the LV chain (weight swept)",
        lambda ctx, t: context_scan_labels(ctx, scan_rules("scan_cam", t)),
        CAM_WEIGHTS,
    ),
}
ROWS["pcm_crf"] = (
    "+ PCM revision, dense CRF on the photo (RGB)",
    lambda ctx, t: rgb_crf_labels(ctx["rgb"], ctx["scores"], t),
    (0.2, 0.3, 0.4, 0.5),
)
#: Rows scored per data set: ACDC has the anatomy rules; RGB photos (VOC) the CAM rows and an RGB CRF.
ROW_SETS: dict[str, list[str]] = {
    "acdc": [
        "baseline",
        "cam",
        "pcm",
        "learned",
        "motion",
        "anatomy",
        "anatomy_crf",
        "priors",
        "scan_lv",
        "scan_myo",
        "scan",
        "scan_es",
        "scan_cam",
    ],
    "rgb": ["baseline", "cam", "pcm", "learned", "pcm_crf"],
}
#: The ACDC rows the chain scores unless asked for the full table (``--pseudo_table full``): what stage 1's
#: CAMs give alone and with the priors, and the exported row. The scan rules' step-by-step rows
#: (``scan_lv`` to ``scan``, and ``scan_cam`` at each CAM weight) took about 40% of the chain's table
#: time and change no exported label.
SUMMARY_ROWS: list[str] = ["cam", "pcm", "learned", "motion", "anatomy", "priors", "scan_es"]
#: The row exported for stage 3 unless told otherwise, per row set.
DEFAULT_ROWS: dict[str, str] = {"acdc": "scan_es", "rgb": "pcm_crf"}
DEFAULT_ROW = DEFAULT_ROWS["acdc"]


def row_set(manifest: dict[str, Any]) -> str:
    """``acdc`` for ACDC runs, ``rgb`` for photo data sets (VOC)."""
    return "acdc" if manifest.get("dataset", "acdc") == "acdc" else "rgb"


def row_labels(row: str, ctx: dict[str, Any], value: Any) -> np.ndarray:
    """Labels of one volume by one row's rule, with a clear error for an unknown row."""
    if row not in ROWS:
        raise ValueError(f"unknown pseudo-label row {row!r}; expected one of {sorted(ROWS)}.")
    return ROWS[row][1](ctx, value).astype(np.uint8)


def volume_contexts(
    output_dir: str | os.PathLike, ds: SliceDataset, indices: Iterable[int]
) -> Iterator[tuple[int, dict]]:
    """``(v, volume_context(...))`` of each volume of ``indices`` in turn; an ES frame that follows its ED
    frame (as in the datalist) takes that frame's context, so the ED labels are computed once."""
    known: dict[int, dict] = {}
    septal: float | str | None = "stored"  # read by the first volume that needs it, then passed on
    for v in indices:
        ctx = volume_context(output_dir, ds, v, known=known, septal=septal)
        septal = ctx.get("septal", septal)
        known = {v: ctx}
        yield v, ctx


def volume_context(
    output_dir: str | os.PathLike,
    ds: SliceDataset,
    v: int,
    partner: bool = True,
    known: dict[int, dict] | None = None,
    septal: float | str | None = "stored",
) -> dict:
    """What a row's rule reads for volume ``v``: stored CAMs, preprocessed image and motion, tags, spacing,
    the septal direction the training patients share (``septal``; ``"stored"``: read with
    :func:`run_septal`); for an ES frame whose ED frame is in ``ds`` on the same grid, that frame's context
    as ``"ed"`` (taken from ``known``, contexts by volume index, when there: its labels are then computed
    once)."""
    vol = ds.volumes[v]
    if "rgb" in vol:  # an RGB data set: the photo for the CRF, no motion
        return {
            **load_cams(output_dir, volume_key(ds.items[v])),
            "rgb": vol["rgb"],
            "tags": vol["tags"].numpy(),
        }
    ctx = {
        **load_cams(output_dir, volume_key(ds.items[v])),
        "image": vol["image"].as_tensor()[0].numpy(),
        "motion": vol["motion"][0].float().numpy(),
        "tags": vol["tags"].numpy(),
        "spacing": ds.config.spacing,
        "septal": run_septal(output_dir) if septal == "stored" else septal,
    }
    item = ds.items[v]
    if partner and item.get("phase") == "ES":
        for u, other in enumerate(ds.items):
            same = other["patient"] == item["patient"] and other.get("phase") == "ED"
            if same and ds.volumes[u]["image"].shape == vol["image"].shape:
                ed = (known or {}).get(u)
                if ed is None:
                    ed = volume_context(output_dir, ds, u, partner=False, septal=ctx["septal"])
                ctx["ed"] = ed
                break
    return ctx


def run_septal(output_dir: str | os.PathLike, progress: bool = False) -> float | None:
    """The septal direction (radians on the image grid, LV towards RV) that the run's training patients
    share: each ED frame's own (:func:`~acdc_wsss.pseudo.rules.scan.scan_septal_direction`: images, motion
    and slice tags, no mask), their circular mean when they agree (:func:`~acdc_wsss.pseudo.rules.rv.
    septal_prior`); None for photos, without training ED frames, or when they point every way.

    Stored in ``cam/septal.json`` with the stage-1 fingerprint of the CAMs beside it, and made again when
    stage 1 (and so the preprocessed grid) changes."""
    out = Path(output_dir)
    run = RunLayout(out)
    manifest = read_cam_manifest(out)
    fingerprint = manifest.get("stage1_fingerprint")
    if run.cam.septal.is_file():
        stored = json.loads(run.cam.septal.read_text(encoding="utf-8"))
        if stored.get("stage1_fingerprint") == fingerprint:
            return stored["direction"]
    items = [it for it in run.split("training") if it.get("phase") == "ED"]
    directions: list[float] = []
    if items and row_set(manifest) == "acdc":
        ds = inference_volumes(manifest, items, out, progress)
        for vol in ds.volumes:
            image, motion = vol["image"].as_tensor()[0].numpy(), vol["motion"][0].float().numpy()
            d = scan_septal_direction(image, motion, vol["tags"].numpy(), ds.config.spacing)
            if d is not None:
                directions.append(d)
    rules = ScanRules().rv
    direction = septal_prior(directions, rules.min_agreement)
    agreement = abs(circular_mean(directions))
    record = {
        "direction": direction,
        "direction_deg": None if direction is None else round(float(np.degrees(direction)), 2),
        "agreement": round(agreement, 4),
        "min_agreement": rules.min_agreement,
        "volumes": len(directions),
        "stage1_fingerprint": fingerprint,
    }
    write_json(record, run.cam.septal)
    return direction
