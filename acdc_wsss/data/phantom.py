"""Synthetic ACDC-like cine-MRI phantom in the official ACDC folder layout.

The phantom is the default data set of the pipeline and of its tests: it needs no download, is small,
deterministic and learnable, and looks enough like short-axis bSSFP cine MRI (bright blood, dark
myocardium, bright fat, dark lungs, noise, bias field, anisotropic oblique voxels, int16 scanner values)
that the whole pipeline can run on it unchanged::

    OUT/phantom.json                                       # generator parameters (patients, seed, version)
    OUT/training/patient001/Info.cfg                       # ED, ES, Group, Height, NbFrame, Weight
    OUT/training/patient001/patient001_frame01.nii.gz      # ED image, int16, (X, Y, Z), Z = short-axis slices
    OUT/training/patient001/patient001_frame01_gt.nii.gz   # uint8 labels: 0 bg, 1 RV, 2 Myo, 3 LV
    OUT/training/patient001/patient001_frameYY.nii.gz      # ES image (YY random in 8..15)
    OUT/training/patient001/patient001_frameYY_gt.nii.gz

Slice index ``z`` runs from above the base (atria and great vessels, no labels) through the heart, base to
apex, to below the apex (liver, stomach, no labels). The anatomy is drawn in voxel-plane millimetres
(``x_mm = (i - ci) * sx``); the NIfTI affine only adds a random oblique orientation and origin.

Patient ``i`` (1-based) is drawn from ``numpy.random.default_rng([seed, i])`` and is therefore the same
whatever the number of patients. Groups cycle through ``DCM, HCM, MINF, NOR, RV`` (patient001 is DCM), so
any five consecutive patients cover every group.

Usage::

    python -m acdc_wsss.data.phantom --out data/phantom --patients 10 --seed 0
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from acdc_wsss.data.acdc import ACDC_CLASSES, ACDC_GROUPS
from acdc_wsss.utils import progress_bar, setup_cli_logging

__all__ = [
    "CLASS_NAMES",
    "GROUPS",
    "PHANTOM_VERSION",
    "ensure_phantom",
    "main",
    "make_phantom",
]

logger = logging.getLogger(__name__)

#: Bumped whenever the generated data change, so that :func:`ensure_phantom` regenerates old copies.
PHANTOM_VERSION = 2
#: Name of the parameter file at the top of a phantom folder.
PHANTOM_JSON = "phantom.json"

#: Foreground class names in label order (label value = index + 1; 0 is background), as in ACDC.
CLASS_NAMES: tuple[str, ...] = ACDC_CLASSES
LABEL_RV, LABEL_MYO, LABEL_LV = (CLASS_NAMES.index(name) + 1 for name in ("RV", "Myo", "LV"))
#: The five ACDC pathology groups; patient i (0-based) gets ``GROUPS[i % len(GROUPS)]``.
GROUPS: tuple[str, ...] = ACDC_GROUPS

# Info.cfg values.
ED_FRAME = 1
ES_FRAME_RANGE = (8, 15)
NB_FRAME_RANGE = (20, 30)
HEIGHT_RANGE = (150.0, 195.0)
WEIGHT_RANGE = (50.0, 110.0)

# Geometry (mm, voxels).
INPLANE_SIZE_RANGE = (150, 260)
INPLANE_SPACING_RANGE = (1.2, 1.9)
SLICE_THICKNESS_RANGE = (5.0, 10.0)
NUM_SLICES_RANGE = (8, 12)
MIN_HEART_SLICES = 5
MIN_FOV_MM = 230.0
MAX_HEART_OFFSET = 0.2  # fraction of the field of view
ROTATION_DEG_RANGE = (5.0, 30.0)
#: How far the body turns, always the same way, when Y is the longer axis: the RV stays on the same side of
#: the LV whatever the image's shape, as in the real scans.
TALL_TURN_DEG = 50.0
MAX_ORIGIN_MM = 150.0

# Relative tissue intensities of a bSSFP cine (blood = 1).
I_AIR = 0.0
I_BLOOD = 1.0
I_MYO = 0.3
I_FAT = 0.9
I_MUSCLE = 0.4
I_LIVER = 0.42
I_LUNG = 0.05
I_MEDIASTINUM = 0.5
I_BONE = 0.5
I_CSF = 0.8
I_CORD = 0.45
I_STOMACH = 0.7
I_ABDOMEN = 0.45
I_LUNG_VESSEL = 0.3

# Acquisition (relative to blood = 1) and storage.
NOISE_SIGMA_RANGE = (0.02, 0.05)
BIAS_STRENGTH = 0.15
TEXTURE_STRENGTH = 0.05
BLUR_SIGMA_RANGE = (0.4, 0.8)  # in-plane, pixels
INTENSITY_MAX_RANGE = (300.0, 3000.0)


@dataclass(frozen=True)
class _GroupShape:
    """Typical heart of a pathology group (means; each patient jitters them)."""

    lv_radius: float  # ED endocardial radius at the base, mm
    wall: float  # ED wall thickness at the base, mm
    lv_es: float  # ES / ED cavity radius
    rv_width: float  # ED RV width at the base, mm
    rv_es: float  # ES / ED RV width


GROUP_SHAPES: dict[str, _GroupShape] = {
    "DCM": _GroupShape(lv_radius=32.0, wall=6.5, lv_es=0.9, rv_width=16.0, rv_es=0.8),
    "HCM": _GroupShape(lv_radius=18.5, wall=11.5, lv_es=0.62, rv_width=15.0, rv_es=0.68),
    "MINF": _GroupShape(lv_radius=28.0, wall=7.5, lv_es=0.85, rv_width=16.0, rv_es=0.76),
    "NOR": _GroupShape(lv_radius=24.0, wall=8.5, lv_es=0.66, rv_width=17.0, rv_es=0.66),
    "RV": _GroupShape(lv_radius=22.5, wall=8.0, lv_es=0.74, rv_width=30.0, rv_es=0.86),
}


@dataclass
class _Patient:
    """Every random draw of one patient (mm in the voxel plane, angles in radians)."""

    pid: str
    group: str
    info: dict[str, Any]
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    affine: np.ndarray
    n_above: int
    n_heart: int
    # heart
    centre: np.ndarray
    drift: np.ndarray
    es_shift: np.ndarray
    lv_radius: float
    wall: float
    lv_es: float
    rv_width: float
    rv_es: float
    rv_wall: float
    cavity_end: float
    rv_end: float
    rv_dir: np.ndarray
    wall_angle: float
    infarct_angle: float
    infarct_depth: float
    papillary_angles: tuple[float, float]
    fat_angle: float
    fat_thickness: float
    # body
    ant: np.ndarray
    rgt: np.ndarray
    body_centre: np.ndarray
    body_axes: tuple[float, float]
    fat: float
    muscle: float
    cavity_shift: float
    vert_radius: float
    aorta_radius: float
    liver_dome: float
    left_dome: float


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation matrix about a unit ``axis`` by ``angle`` (Rodrigues)."""
    k = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)


def _unit(angle: float) -> np.ndarray:
    return np.array([np.cos(angle), np.sin(angle)])


def _draw_patient(index: int, seed: int) -> _Patient:
    """Draw all parameters of patient ``index`` (1-based) from ``default_rng([seed, index])``.

    The draws come in one fixed order (record, grid, heart, placement, body, details), so a seed always
    gives the same phantom."""
    rng = np.random.default_rng([seed, index])
    group = GROUPS[(index - 1) % len(GROUPS)]
    info = _sample_info(rng, group)
    grid = _sample_grid(rng)
    heart = _sample_heart(rng, group)
    place = _sample_placement(rng, grid, heart)
    body = _sample_body(rng, info, heart, place)
    details = _sample_details(rng, group, place["rv_dir"])
    return _Patient(
        pid=f"patient{index:03d}", group=group, info=info, **grid, **heart, **place, **body, **details
    )


def _sample_info(rng: np.random.Generator, group: str) -> dict[str, Any]:
    """The patient's Info.cfg: ED and ES frames, group, height, frame count, weight."""
    height = round(float(rng.uniform(*HEIGHT_RANGE)), 1)
    weight = round(float(rng.uniform(*WEIGHT_RANGE)), 1)
    es = int(rng.integers(ES_FRAME_RANGE[0], ES_FRAME_RANGE[1] + 1))
    nb_frame = int(rng.integers(NB_FRAME_RANGE[0], NB_FRAME_RANGE[1] + 1))
    return {"ED": ED_FRAME, "ES": es, "Group": group, "Height": height, "NbFrame": nb_frame, "Weight": weight}


def _sample_grid(rng: np.random.Generator) -> dict[str, Any]:
    """Equal in-plane spacing, unequal in-plane sizes, thick slices (some above and below the heart), and
    an oblique affine: a random rotation (unit axis, 5..30 degrees) times the spacing, a random origin."""
    sp = round(float(rng.uniform(*INPLANE_SPACING_RANGE)), 4)
    lo = max(INPLANE_SIZE_RANGE[0], int(np.ceil(MIN_FOV_MM / sp)))
    nx = int(rng.integers(lo, INPLANE_SIZE_RANGE[1] + 1))
    ny = nx
    while ny == nx:
        ny = int(rng.integers(lo, INPLANE_SIZE_RANGE[1] + 1))
    thickness = float(np.round(rng.uniform(*SLICE_THICKNESS_RANGE) * 2.0) / 2.0)
    nz = int(rng.integers(NUM_SLICES_RANGE[0], NUM_SLICES_RANGE[1] + 1))
    n_above = int(rng.integers(1, 3))
    n_below = int(rng.integers(0, min(2, nz - n_above - MIN_HEART_SLICES) + 1))
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(*ROTATION_DEG_RANGE))
    affine = np.eye(4)
    affine[:3, :3] = _rotation(axis, angle) @ np.diag([sp, sp, thickness])
    affine[:3, 3] = rng.uniform(-MAX_ORIGIN_MM, MAX_ORIGIN_MM, size=3)
    return {
        "shape": (nx, ny, nz),
        "spacing": (sp, sp, thickness),
        "affine": affine,
        "n_above": n_above,
        "n_heart": nz - n_above - n_below,
    }


def _sample_heart(rng: np.random.Generator, group: str) -> dict[str, Any]:
    """The heart shape of the group, jittered."""
    shape_g = GROUP_SHAPES[group]
    return {
        "lv_radius": shape_g.lv_radius * rng.uniform(0.9, 1.1),
        "wall": shape_g.wall * rng.uniform(0.9, 1.1),
        "lv_es": float(np.clip(shape_g.lv_es + rng.uniform(-0.04, 0.04), 0.55, 0.95)),
        "rv_width": shape_g.rv_width * rng.uniform(0.85, 1.15),
        "rv_es": float(np.clip(shape_g.rv_es + rng.uniform(-0.05, 0.05), 0.55, 0.92)),
        "rv_wall": 3.5 if group == "RV" else 2.5,
        "cavity_end": rng.uniform(0.93, 1.06),  # relative apex position where the LV cavity closes
        "rv_end": rng.uniform(0.62, 0.86),  # ... and where the RV ends (always before the last heart slice)
    }


def _sample_placement(
    rng: np.random.Generator, grid: dict[str, Any], heart: dict[str, Any]
) -> dict[str, Any]:
    """Body frame and heart position: anterior is image-up, patient right is image-left, give or take a
    rotation, turned by ``TALL_TURN_DEG`` when Y is the longer axis (the wide left-right axis of the chest
    partly along it, the RV still on the same side of the LV); the heart centre off the image centre,
    inside the field of view with a margin."""
    nx, ny, _ = grid["shape"]
    sp = grid["spacing"][0]
    body_rot = rng.uniform(-0.3, 0.3) - (np.deg2rad(TALL_TURN_DEG) if ny > nx else 0.0)
    ant = _unit(-np.pi / 2 + body_rot)
    rgt = _unit(np.pi + body_rot)
    rv_dir = ant * 0.6 + rgt * 0.8
    rv_dir = _rotate2(rv_dir / np.linalg.norm(rv_dir), rng.uniform(-0.3, 0.3))
    fov = np.array([nx * sp, ny * sp])
    extent = heart["lv_radius"] + heart["wall"] + heart["rv_width"] + 15.0
    max_off = np.clip(np.minimum(MAX_HEART_OFFSET * fov, fov / 2 - extent), 0.0, None)
    centre = rng.uniform(-max_off, max_off)
    posterior = -float(centre @ ant)
    if posterior > 0:  # the body lies behind the heart: keep most of it in the field of view
        centre = np.clip(centre + ant * 0.7 * posterior, -max_off, max_off)
    drift = _unit(rng.uniform(0, 2 * np.pi)) * rng.uniform(0.0, 8.0)
    es_shift = _unit(rng.uniform(0, 2 * np.pi)) * rng.uniform(0.0, 1.5)
    return {"ant": ant, "rgt": rgt, "rv_dir": rv_dir, "centre": centre, "drift": drift, "es_shift": es_shift}


def _sample_body(
    rng: np.random.Generator, info: dict[str, Any], heart: dict[str, Any], place: dict[str, Any]
) -> dict[str, Any]:
    """Body outline around the heart: the heart sits anterior and to the patient's left of the body
    centre; fat grows with the BMI."""
    bmi = info["Weight"] / (info["Height"] / 100.0) ** 2
    fat = float(np.clip(4.0 + 0.9 * (bmi - 18.0), 4.0, 25.0)) * rng.uniform(0.8, 1.2)
    muscle = rng.uniform(8.0, 14.0)
    cavity_shift = rng.uniform(6.0, 14.0)
    a_off = rng.uniform(15.0, 35.0)
    l_off = rng.uniform(30.0, 60.0)
    body_lat = rng.uniform(140.0, 175.0) + 0.6 * (bmi - 22.0)
    body_ap = rng.uniform(95.0, 120.0) + 0.6 * (bmi - 22.0)
    inside = a_off + heart["lv_radius"] + heart["wall"] + heart["rv_width"] + fat + muscle
    body_ap = max(body_ap, inside)  # the heart inside the chest
    return {
        "body_centre": place["centre"] - place["ant"] * a_off + place["rgt"] * l_off,
        "body_axes": (body_lat, body_ap),
        "fat": fat,
        "muscle": muscle,
        "cavity_shift": cavity_shift,
    }


def _sample_details(rng: np.random.Generator, group: str, rv_dir: np.ndarray) -> dict[str, Any]:
    """Wall texture, infarct (MINF), papillary muscles, epicardial fat, spine, aorta, liver and left dome."""
    return {
        "wall_angle": rng.uniform(0, 2 * np.pi),
        "infarct_angle": rng.uniform(0, 2 * np.pi),
        "infarct_depth": rng.uniform(0.35, 0.5) if group == "MINF" else 0.0,
        "papillary_angles": tuple(
            float(np.arctan2(-rv_dir[1], -rv_dir[0]) + s * rng.uniform(0.7, 1.1)) for s in (-1, 1)
        ),
        "fat_angle": rng.uniform(0, 2 * np.pi),
        "fat_thickness": rng.uniform(1.5, 5.0),
        "vert_radius": rng.uniform(14.0, 19.0),
        "aorta_radius": rng.uniform(10.0, 14.0),
        "liver_dome": rng.uniform(0.45, 0.8),
        "left_dome": rng.uniform(0.75, 1.1),
    }


def _rotate2(v: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


# ---------------------------------------------------------------------------------------------------------
# Drawing: signed distances (mm, negative inside) and soft (anti-aliased) painting.


def _ellipse_sd(
    x: np.ndarray, y: np.ndarray, centre: np.ndarray, a: float, b: float, direction: np.ndarray
) -> np.ndarray:
    """Radial signed distance to an ellipse with semi-axis ``a`` along ``direction`` and ``b`` across."""
    if a <= 0 or b <= 0:
        return np.full(x.shape, np.inf)
    dx, dy = x - centre[0], y - centre[1]
    u = dx * direction[0] + dy * direction[1] + 1e-9  # never exactly at the centre
    v = -dx * direction[1] + dy * direction[0]
    r = np.sqrt(u * u + v * v)
    # Distance from the centre to the outline along the ray through (u, v): a b r / sqrt(b²u² + a²v²).
    return r * (1.0 - a * b / np.sqrt((b * u) ** 2 + (a * v) ** 2))


def _disc_sd(x: np.ndarray, y: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    if radius <= 0:
        return np.full(x.shape, np.inf)
    return np.hypot(x - centre[0], y - centre[1]) - radius


def _paint(img: np.ndarray, sd: np.ndarray, value: float | np.ndarray, px: float) -> None:
    """Blend ``value`` into ``img`` where ``sd < 0``, with a one-pixel linear edge (partial volume)."""
    m = np.clip(0.5 - sd / px, 0.0, 1.0)
    img *= 1.0 - m
    img += m * value


def _wrap(angle: np.ndarray) -> np.ndarray:
    return (angle + np.pi) % (2 * np.pi) - np.pi


# ---------------------------------------------------------------------------------------------------------
# One frame.


def _grid(p: _Patient) -> tuple[np.ndarray, np.ndarray, float]:
    """In-plane millimetre coordinates ``xx``, ``yy`` (shape (X, Y)) of the voxel centres; pixel size."""
    nx, ny, _ = p.shape
    px = p.spacing[0]
    x = (np.arange(nx) - (nx - 1) / 2.0) * px
    y = (np.arange(ny) - (ny - 1) / 2.0) * px
    xx, yy = np.meshgrid(x, y, indexing="ij")
    return xx, yy, px


def _slice_position(p: _Patient, z: int) -> float:
    """Relative position of slice ``z``: 0 at the base, 1 at the apex, outside [0, 1] off the heart."""
    return (z - p.n_above) / (p.n_heart - 1)


def _render_body(p: _Patient, vessels: np.ndarray) -> np.ndarray:
    """Noise-free intensities (blood = 1) of everything but the heart; the same in both frames."""
    xx, yy, px = _grid(p)
    body = np.zeros(p.shape)
    for z in range(p.shape[2]):
        sl = body[:, :, z].copy()
        _draw_body(p, sl, xx, yy, _slice_position(p, z), vessels[:, :, z], px)
        body[:, :, z] = sl
    return body


def _render_frame(p: _Patient, es: bool, body: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free intensities (blood = 1) and labels (uint8) of the ED or ES frame, drawn over ``body``."""
    xx, yy, px = _grid(p)
    img = body.copy()
    lab = np.zeros(p.shape, dtype=np.uint8)
    for z in range(p.shape[2]):
        u = _slice_position(p, z)
        sl = img[:, :, z].copy()
        if u < 0:
            _draw_great_vessels(p, sl, xx, yy, round(-u * (p.n_heart - 1)), es, px)
        elif u <= 1:
            lab[:, :, z] = _draw_heart(p, sl, xx, yy, u, es, px)
        img[:, :, z] = sl
    return img, lab


def _draw_body(
    p: _Patient, sl: np.ndarray, xx: np.ndarray, yy: np.ndarray, u: float, vessels: np.ndarray, px: float
) -> None:
    """Chest wall, lungs, spine, descending aorta and, in lower slices, liver and stomach."""
    bc, ant, rgt = p.body_centre, p.ant, p.rgt
    lat, ap = p.body_axes
    _paint(sl, _ellipse_sd(xx, yy, bc, lat, ap, rgt), I_FAT, px)
    _paint(sl, _ellipse_sd(xx, yy, bc, lat - p.fat, ap - p.fat, rgt), I_MUSCLE, px)
    # Thoracic cavity: shifted anteriorly, so the posterior wall (spine, paraspinal muscles) is thicker.
    cav_c = bc + ant * p.cavity_shift
    cav_lat = lat - p.fat - p.muscle
    cav_ap = ap - p.fat - p.muscle - p.cavity_shift
    cav_sd = _ellipse_sd(xx, yy, cav_c, cav_lat, cav_ap, rgt)
    _paint(sl, cav_sd, I_LUNG + vessels, px)
    # Sternum in the anterior wall.
    _paint(sl, _ellipse_sd(xx, yy, bc + ant * (ap - p.fat - 0.5 * p.muscle), 12.0, 4.0, rgt), I_BONE, px)
    # Spine: vertebral body at the back of the cavity, spinal canal (bright CSF) and cord behind it.
    vert_c = cav_c - ant * (cav_ap + 0.2 * p.vert_radius)
    canal_c = vert_c - ant * (p.vert_radius + 8.0)
    heart_c = p.centre
    # Posterior mediastinum (oesophagus, connective tissue) between the heart and the spine.
    dist = max(float(np.linalg.norm(heart_c - vert_c)), 1e-6)
    med_dir = (heart_c - vert_c) / dist
    _paint(
        sl, _ellipse_sd(xx, yy, vert_c + med_dir * 0.3 * dist, 0.35 * dist, 22.0, med_dir), I_MEDIASTINUM, px
    )
    _paint(sl, _ellipse_sd(xx, yy, canal_c, 50.0, 2.0 * p.vert_radius + 8.0, rgt), I_MUSCLE, px)
    _paint(sl, _disc_sd(xx, yy, vert_c, p.vert_radius), I_BONE, px)
    _paint(sl, _disc_sd(xx, yy, canal_c, 8.0), I_CSF, px)
    _paint(sl, _disc_sd(xx, yy, canal_c, 4.5), I_CORD, px)
    aorta_c = vert_c + ant * (p.vert_radius + 0.6 * p.aorta_radius) - rgt * (0.9 * p.vert_radius)
    _paint(sl, _disc_sd(xx, yy, aorta_c, p.aorta_radius + 1.5), I_MYO, px)
    _paint(sl, _disc_sd(xx, yy, aorta_c, p.aorta_radius), 0.9 * I_BLOOD, px)
    # Liver dome on the right and stomach/spleen on the left rise into the lower slices.
    g = np.sqrt(np.clip((u - p.liver_dome) / 0.7, 0.0, 1.0))
    if g > 0:
        liver_c = bc + rgt * 0.3 * lat - ant * 0.15 * ap
        sd = np.maximum(_ellipse_sd(xx, yy, liver_c, 0.65 * lat * g, 0.8 * ap * g, rgt), cav_sd)
        _paint(sl, sd, I_LIVER, px)
    g = np.sqrt(np.clip((u - p.left_dome) / 0.6, 0.0, 1.0))
    if g > 0:
        left_c = bc - rgt * 0.4 * lat - ant * 0.1 * ap
        sd = np.maximum(_ellipse_sd(xx, yy, left_c, 0.45 * lat * g, 0.6 * ap * g, rgt), cav_sd)
        _paint(sl, sd, I_ABDOMEN, px)
        stomach_c = left_c + ant * 0.25 * ap * g
        sd = np.maximum(_ellipse_sd(xx, yy, stomach_c, 0.25 * lat * g, 0.3 * ap * g, rgt), cav_sd)
        _paint(sl, sd, I_STOMACH, px)


def _draw_great_vessels(
    p: _Patient, sl: np.ndarray, xx: np.ndarray, yy: np.ndarray, level: int, es: bool, px: float
) -> None:
    """Atria, aortic root and pulmonary trunk above the base (bright, unlabelled)."""
    ant, rgt = p.ant, p.rgt
    c = p.centre + (p.es_shift if es else 0.0)
    r0 = p.lv_radius + p.wall
    shrink = 0.8 ** (level - 1)
    atrium = (1.12 if es else 1.0) * shrink  # the atria fill while the ventricles empty
    blobs = [
        # (centre, semi-axis along rgt, semi-axis along ant)
        (c - ant * 0.75 * r0 + rgt * 0.1 * r0, 0.85 * r0 * atrium, 0.6 * r0 * atrium),  # left atrium
        (c + rgt * 1.15 * r0 - ant * 0.1 * r0, 0.55 * r0 * atrium, 0.55 * r0 * atrium),  # right atrium
        (c + ant * 0.2 * r0 + rgt * 0.2 * r0, 14.0, 14.0),  # aortic root
        (c + ant * 0.85 * r0 - rgt * (0.25 * r0 + 8.0 * (level - 1)), 13.0, 12.0),  # pulmonary trunk
    ]
    fat = np.min([_ellipse_sd(xx, yy, bc, a, b, rgt) for bc, a, b in blobs], axis=0)
    _paint(sl, fat - 4.0, I_FAT, px)
    for bc, a, b in blobs:
        _paint(sl, _ellipse_sd(xx, yy, bc, a + 2.0, b + 2.0, rgt), I_MYO, px)
    for bc, a, b in blobs:
        _paint(sl, _ellipse_sd(xx, yy, bc, a, b, rgt), 0.95 * I_BLOOD, px)


def _draw_heart(
    p: _Patient, sl: np.ndarray, xx: np.ndarray, yy: np.ndarray, u: float, es: bool, px: float
) -> np.ndarray:
    """LV cavity, myocardium and RV of the slice at relative position ``u`` (base 0, apex 1); its labels."""
    c = p.centre + p.drift * u + (p.es_shift if es else 0.0)
    dx, dy = xx - c[0], yy - c[1]
    r = np.hypot(dx, dy)
    th = np.arctan2(dy, dx)

    # LV at ED: cavity shrinks to the apex (and may close), wall thins a little.
    endo_ed = p.lv_radius * np.sqrt(np.clip(1.0 - (u / p.cavity_end) ** 2.5, 0.0, 1.0))
    t_u = p.wall * (1.0 - 0.25 * u)
    wall_mod = 1.0 + 0.1 * np.cos(th - p.wall_angle)
    if p.infarct_depth > 0:  # thinned infarct territory
        wall_mod = wall_mod * (
            1.0 - p.infarct_depth * np.exp(-0.5 * (_wrap(th - p.infarct_angle) / 0.5) ** 2)
        )
    epi_ed = endo_ed + t_u * wall_mod
    mean_epi_ed = endo_ed + t_u
    if es:  # the cavity contracts, the myocardial area (volume) is conserved, so the wall thickens
        endo = endo_ed * p.lv_es
        epi = np.sqrt(endo**2 + epi_ed**2 - endo_ed**2)
        mean_epi = float(np.sqrt(endo**2 + mean_epi_ed**2 - endo_ed**2))
    else:
        endo, epi, mean_epi = endo_ed, epi_ed, mean_epi_ed
    epi_sd = r - epi
    endo_sd = r - endo if endo > 0.25 else np.full(r.shape, np.inf)

    # RV: an ellipse pushed to the septal side, minus the LV; it shrinks faster than the LV to the apex.
    w = p.rv_width * np.sqrt(np.clip(1.0 - (u / p.rv_end) ** 2, 0.0, 1.0)) * (p.rv_es if es else 1.0)
    if w > 0.5:
        # The crescent covers ~45% of the epicardial circumference (a bit more for a dilated RV).
        shift = 0.45 * mean_epi + 0.35 * w
        rv_c = c + p.rv_dir * shift
        a = mean_epi + w - shift
        b = mean_epi + 0.4 * w
        rv_sd = _ellipse_sd(xx, yy, rv_c, a, b, p.rv_dir)
        rv_wall_sd = _ellipse_sd(xx, yy, rv_c, a + p.rv_wall, b + p.rv_wall, p.rv_dir)
    else:
        rv_sd = rv_wall_sd = np.full(r.shape, np.inf)

    # Epicardial fat of varying thickness, then RV free wall, RV blood, LV myocardium, LV blood.
    fat_t = p.fat_thickness * np.clip(0.4 + np.cos(th - p.fat_angle), 0.0, None)
    _paint(sl, np.minimum(epi_sd, rv_wall_sd) - fat_t, I_FAT, px)
    _paint(sl, rv_wall_sd, I_MYO, px)
    _paint(sl, rv_sd, 0.95 * I_BLOOD, px)
    _paint(sl, epi_sd, I_MYO, px)
    _paint(sl, endo_sd, I_BLOOD, px)
    # Papillary muscles: dark blobs against the free wall, part of the LV cavity label as in ACDC.
    if 0.1 < u < 0.8 and endo > 10.0:
        rp = float(np.clip(0.17 * endo, 2.5, 5.5))
        for ang in p.papillary_angles:
            _paint(sl, _disc_sd(xx, yy, c + _unit(ang) * (endo - 1.1 * rp), rp), I_MYO + 0.05, px)

    lab = np.zeros(r.shape, dtype=np.uint8)
    lab[(rv_sd < 0) & (epi_sd >= 0)] = LABEL_RV
    lab[epi_sd < 0] = LABEL_MYO
    lab[endo_sd < 0] = LABEL_LV
    return lab


# ---------------------------------------------------------------------------------------------------------
# One patient: both frames with texture, blur, bias field, Rician noise, int16 scaling.


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std random field, smooth in-plane over ``sigma`` pixels."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=(sigma, sigma, 0.0))
    return (f - f.mean()) / max(float(f.std()), 1e-12)


def _make_patient(index: int, seed: int) -> tuple[_Patient, dict[int, tuple[np.ndarray, np.ndarray]]]:
    """Generate patient ``index`` (1-based): parameters and ``{frame: (int16 image, uint8 labels)}``."""
    p = _draw_patient(index, seed)
    rng = np.random.default_rng([seed, index, 1])  # appearance draws, independent of the anatomy draws
    nx, ny, nz = p.shape
    texture = 1.0 + TEXTURE_STRENGTH * _smooth_field(rng, p.shape, sigma=2.0)
    impulses = (rng.random(p.shape) < 0.004) * rng.uniform(0.5, 1.0, size=p.shape)
    vessels = I_LUNG_VESSEL * ndimage.gaussian_filter(impulses, sigma=(1.0, 1.0, 0.0)) * (2 * np.pi)

    # Smooth multiplicative bias field (coil sensitivity): low-order polynomial in normalised coordinates.
    xn = np.linspace(-1, 1, nx)[:, None, None]
    yn = np.linspace(-1, 1, ny)[None, :, None]
    zn = np.linspace(-1, 1, nz)[None, None, :]
    coef = rng.normal(0.0, BIAS_STRENGTH, size=6)
    bias = np.exp(
        coef[0] * xn
        + coef[1] * yn
        + coef[2] * xn * yn
        + coef[3] * xn**2
        + coef[4] * yn**2
        + 0.3 * coef[5] * zn
    )
    blur = rng.uniform(*BLUR_SIGMA_RANGE)
    noise = rng.uniform(*NOISE_SIGMA_RANGE)
    top = rng.uniform(*INTENSITY_MAX_RANGE)

    body = _render_body(p, vessels)
    frames: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    scale = None
    for frame, es in ((p.info["ED"], False), (p.info["ES"], True)):
        clean, lab = _render_frame(p, es, body)
        clean = ndimage.gaussian_filter(clean * texture, sigma=(blur, blur, 0.0)) * bias
        real = clean + rng.normal(0.0, noise, size=clean.shape)
        imag = rng.normal(0.0, noise, size=clean.shape)
        mag = np.hypot(real, imag)  # Rician magnitude
        if scale is None:  # one scale per patient, from the ED frame
            scale = top / float(np.percentile(mag, 99.9))
        img = np.clip(np.rint(mag * scale), 0, np.iinfo(np.int16).max).astype(np.int16)
        frames[frame] = (img, lab)
    return p, frames


def _nifti(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    img = nib.Nifti1Image(data, affine)
    img.header.set_data_dtype(data.dtype)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return img


def _write_patient(p: _Patient, frames: dict[int, tuple[np.ndarray, np.ndarray]], folder: Path) -> None:
    folder.mkdir(parents=True)
    lines = [f"{key}: {value}" for key, value in p.info.items()]
    (folder / "Info.cfg").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for frame, (img, lab) in frames.items():
        nib.save(_nifti(img, p.affine), folder / f"{p.pid}_frame{frame:02d}.nii.gz")
        nib.save(_nifti(lab, p.affine), folder / f"{p.pid}_frame{frame:02d}_gt.nii.gz")


# ---------------------------------------------------------------------------------------------------------
# Public API.


def _params(patients: int, seed: int) -> dict[str, Any]:
    return {
        "generator": "acdc_wsss.data.phantom",
        "version": PHANTOM_VERSION,
        "patients": patients,
        "seed": seed,
        "classes": list(CLASS_NAMES),
        "groups": list(GROUPS),
        "description": (
            "Synthetic ACDC-like short-axis cine MRI (ED and ES frames with RV/Myo/LV labels), "
            "generated by acdc_wsss.data.phantom; not real patient data."
        ),
    }


def _check_args(patients: int, seed: int) -> None:
    if int(patients) != patients or patients < 1:
        raise ValueError(f"patients must be an integer >= 1, got {patients!r}.")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}.")


def make_phantom(
    out_dir: str | os.PathLike,
    patients: int = 10,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write a synthetic ACDC-like data set into ``out_dir`` (ACDC layout) and return ``out_dir``.

    The data are generated into a sibling temporary folder and renamed into place once complete, so
    ``out_dir`` never holds a partial phantom; with ``overwrite`` an existing ``out_dir`` is replaced only
    after the new one is complete.

    Args:
        out_dir: destination folder; gets ``training/patientXXX/...`` and ``phantom.json``.
        patients: number of patients (>= 1); five or more cover every pathology group.
        seed: random seed (>= 0). Patient ``i`` depends only on ``seed`` and ``i``.
        overwrite: replace an existing non-empty ``out_dir``.
        progress: show a progress bar over patients.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: ``patients < 1`` or ``seed < 0``.
        FileExistsError: ``out_dir`` exists, is not empty (or is a file) and ``overwrite`` is False.
    """
    _check_args(patients, seed)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a folder; choose another --out.")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir} exists and is not empty; pass --overwrite to replace it.")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=out_dir.name + ".tmp-"))
    try:
        os.chmod(tmp, 0o755)
        logger.info("Generating %d phantom patient(s) (seed %d) in %s", patients, seed, out_dir)
        for i in progress_bar(range(1, patients + 1), "phantom patients", progress):
            p, frames = _make_patient(i, seed)
            _write_patient(p, frames, tmp / "training" / p.pid)
        (tmp / PHANTOM_JSON).write_text(
            json.dumps(_params(patients, seed), indent=2) + "\n", encoding="utf-8"
        )
        _move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("Wrote %d phantom patient(s) to %s", patients, out_dir)
    return out_dir


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename the finished ``tmp`` to ``out_dir``, replacing an existing folder only at the last moment."""
    if not out_dir.exists():
        os.rename(tmp, out_dir)
        return
    old = tmp.with_name(tmp.name.replace(".tmp-", ".old-", 1))
    os.rename(out_dir, old)
    try:
        os.rename(tmp, out_dir)
    except BaseException:
        os.rename(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _read_params(out_dir: Path) -> dict[str, Any] | None:
    try:
        params = json.loads((out_dir / PHANTOM_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return params if isinstance(params, dict) else None


def ensure_phantom(
    out_dir: str | os.PathLike, patients: int = 10, seed: int = 0, *, progress: bool = True
) -> Path:
    """Return ``out_dir`` if it already holds this phantom, else (re)generate it there.

    The folder is reused when its ``phantom.json`` names the same ``patients``, ``seed`` and
    :data:`PHANTOM_VERSION` and every patient folder is present. A phantom with other parameters is
    replaced; a non-empty folder without ``phantom.json`` is never touched.

    Args:
        out_dir: phantom folder.
        patients: number of patients.
        seed: random seed.
        progress: show a progress bar if the phantom has to be generated.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.

    Raises:
        FileExistsError: ``out_dir`` is a non-empty folder that is not a phantom (no ``phantom.json``).
    """
    _check_args(patients, seed)
    out_dir = Path(out_dir)
    params = _read_params(out_dir)
    if params is not None:
        same = all(params.get(k) == v for k, v in (("patients", patients), ("seed", seed)))
        same = same and params.get("version") == PHANTOM_VERSION
        complete = all(
            (out_dir / "training" / f"patient{i:03d}" / "Info.cfg").is_file() for i in range(1, patients + 1)
        )
        if same and complete:
            logger.debug("Reusing phantom in %s", out_dir)
            return out_dir
        logger.info("Phantom in %s has other parameters (%s); regenerating it", out_dir, params)
        return make_phantom(out_dir, patients, seed, overwrite=True, progress=progress)
    if out_dir.exists() and not (out_dir / PHANTOM_JSON).exists():
        if not out_dir.is_dir() or any(out_dir.iterdir()):
            raise FileExistsError(
                f"{out_dir} exists and is not a phantom folder (no {PHANTOM_JSON}); not replacing it."
            )
    return make_phantom(out_dir, patients, seed, overwrite=True, progress=progress)


def _summary(out_dir: Path) -> str:
    pdirs = sorted((out_dir / "training").glob("patient[0-9][0-9][0-9]"))
    images = [f for d in pdirs for f in d.glob("*_frame[0-9][0-9].nii.gz")]
    slices = sum(int(nib.load(f).shape[2]) for f in images)
    return (
        f"Phantom ACDC data set in {out_dir.resolve()}: {len(pdirs)} patient{'s' * (len(pdirs) != 1)}, "
        f"{len(images)} image volumes "
        f"(ED+ES, each with a _gt label volume), {slices} short-axis slices."
    )


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m acdc_wsss.data.phantom --out DIR --patients N --seed S [--overwrite]``.

    Returns:
        0 on success, 2 on a usage error (bad arguments, existing non-empty folder without ``--overwrite``).
    """
    parser = argparse.ArgumentParser(
        prog="acdc-wsss-phantom",
        description="Generate a synthetic ACDC-like cardiac cine-MRI data set (ACDC folder layout).",
    )
    parser.add_argument(
        "--out", required=True, help="output folder (gets training/patientXXX/ and phantom.json)"
    )
    parser.add_argument("--patients", type=int, default=10, help="number of patients (default: 10)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse has printed its usage error (code 2) or the help (code 0)
        return e.code if isinstance(e.code, int) else 2
    setup_cli_logging()
    if args.patients < 1:
        print(f"error: --patients must be >= 1, got {args.patients}.", file=sys.stderr)
        return 2
    if args.seed < 0:
        print(f"error: --seed must be >= 0, got {args.seed}.", file=sys.stderr)
        return 2
    try:
        out = make_phantom(
            args.out, args.patients, args.seed, overwrite=args.overwrite, progress=not args.no_progress
        )
    except (FileExistsError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(_summary(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
