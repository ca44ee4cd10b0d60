"""Reader for the ACDC folder layout, MONAI-style datalists and patient-level splits.

The official release (MICCAI 2017 ACDC) looks like::

    DATASET_DIR/training/patient001/Info.cfg
    DATASET_DIR/training/patient001/patient001_frame01.nii.gz      # ED frame (3D, X x Y x slices)
    DATASET_DIR/training/patient001/patient001_frame01_gt.nii.gz   # its labels: 0 bg, 1 RV, 2 Myo, 3 LV
    DATASET_DIR/training/patient001/patient001_frame12.nii.gz      # ES frame
    DATASET_DIR/training/patient001/patient001_frame12_gt.nii.gz
    DATASET_DIR/training/patient001/patient001_4d.nii.gz           # optional cine
    DATASET_DIR/testing/patient101/...                             # same layout, gt optional

This module only reads the layout. Whether the files are sound is the job of
:mod:`acdc_wsss.data.check`, which every stage runs first.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from acdc_wsss.errors import USER_ERRORS, DatasetError
from acdc_wsss.utils import write_json

__all__ = [
    "ACDC_CLASSES",
    "ACDC_GROUPS",
    "ACDC_LABELS",
    "INFO_KEYS",
    "PATH_KEYS",
    "PHASES",
    "SUBSETS",
    "USER_ERRORS",
    "DatasetError",
    "Frame",
    "Patient",
    "find_patient_dirs",
    "find_seed_patients",
    "is_seed_layout",
    "make_datalist",
    "parse_info_cfg",
    "read_datalist",
    "read_patient",
    "read_patients",
    "read_seed_patient",
    "seed_info_cfg",
    "split_patients",
    "write_datalist",
]

#: Foreground class names in label order (label value = index + 1; 0 is background).
ACDC_CLASSES: tuple[str, ...] = ("RV", "Myo", "LV")
#: Valid label values in a ground-truth mask.
ACDC_LABELS: tuple[int, ...] = tuple(range(len(ACDC_CLASSES) + 1))
#: The five pathology groups of the ACDC training set.
ACDC_GROUPS: tuple[str, ...] = ("DCM", "HCM", "MINF", "NOR", "RV")
#: Keys every Info.cfg must hold, with their types.
INFO_KEYS: dict[str, type] = {
    "ED": int,
    "ES": int,
    "Group": str,
    "Height": float,
    "NbFrame": int,
    "Weight": float,
}
#: The two annotated cardiac phases.
PHASES: tuple[str, ...] = ("ED", "ES")
#: Sub-folders of an ACDC release that hold patients.
SUBSETS: tuple[str, ...] = ("training", "testing")
#: Datalist keys whose values are file paths (relative to the dataset folder in a written datalist).
PATH_KEYS: tuple[str, ...] = ("image", "label", "pair", "cine")

_PATIENT_RE = re.compile(r"^patient\d{3}$")
_FRAME_FILE_RE = re.compile(r"^(patient\d{3})_frame(\d{2})\.nii\.gz$")

#: The Decathlon-style layout: image folder -> (subset, label folder).
SEED_FOLDERS: dict[str, tuple[str, str]] = {
    "imagesTr": ("training", "labelsTr"),
    "imagesTs": ("testing", "labelsTs"),
}


@dataclass(frozen=True)
class Frame:
    """One annotated cardiac phase of a patient.

    Attributes:
        phase: ``"ED"`` or ``"ES"``.
        index: frame number in the cine (the ``YY`` of ``patientXXX_frameYY``).
        image: path of the 3D image.
        label: path of the ground-truth mask, ``None`` where the release has none.
    """

    phase: str
    index: int
    image: Path
    label: Path | None


@dataclass(frozen=True)
class Patient:
    """One patient folder, with its parsed Info.cfg and its ED/ES frames."""

    id: str
    subset: str
    folder: Path
    info: Mapping[str, Any]
    frames: tuple[Frame, ...]
    cine: Path | None = None

    @property
    def group(self) -> str:
        """Pathology group from Info.cfg (``"unknown"`` where the file has none)."""
        return str(self.info.get("Group", "unknown"))

    @property
    def has_labels(self) -> bool:
        """True when every frame has a ground-truth mask."""
        return all(f.label is not None for f in self.frames)

    def frame(self, phase: str) -> Frame:
        """Return the frame of ``phase`` (``"ED"`` or ``"ES"``)."""
        for f in self.frames:
            if f.phase == phase:
                return f
        raise KeyError(f"{self.id} has no {phase!r} frame; it has {[f.phase for f in self.frames]}.")


def parse_info_cfg(path: str | os.PathLike) -> dict[str, Any]:
    """Parse an ACDC ``Info.cfg`` into typed values.

    Args:
        path: the Info.cfg file.

    Returns:
        ``{"ED": int, "ES": int, "Group": str, "Height": float, "NbFrame": int, "Weight": float}`` plus
        any extra keys as strings.

    Raises:
        DatasetError: the file is missing or unreadable, a line is not ``Key: value``, a required key is
            missing, or a value has the wrong type. The message names the file.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise DatasetError(f"{path}: cannot read Info.cfg ({e.strerror or e}).") from e
    raw: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep or not key.strip():
            raise DatasetError(f"{path}: line {n} is not 'Key: value': {line.strip()!r}.")
        raw[key.strip()] = value.strip()
    missing = [k for k in INFO_KEYS if k not in raw]
    if missing:
        raise DatasetError(f"{path}: missing key(s) {', '.join(missing)}; expected {', '.join(INFO_KEYS)}.")
    info: dict[str, Any] = dict(raw)
    for key, kind in INFO_KEYS.items():
        try:
            info[key] = int(float(raw[key])) if kind is int else kind(raw[key])
        except ValueError as e:
            raise DatasetError(f"{path}: {key} must be {kind.__name__}, got {raw[key]!r}.") from e
        if kind is int and float(raw[key]) != int(float(raw[key])):
            raise DatasetError(f"{path}: {key} must be an integer frame number, got {raw[key]!r}.")
    return info


def find_patient_dirs(dataset_dir: str | os.PathLike) -> list[tuple[str, Path]]:
    """List ``(subset, folder)`` for every ``patientXXX`` folder of an ACDC release.

    Looks in ``training/`` and ``testing/``; a folder that holds patient folders directly is read as a
    single ``training`` subset, so a bare folder of patients works too.

    Raises:
        DatasetError: the folder does not exist, is not a folder, or holds no patient folder.
    """
    root = Path(dataset_dir)
    if not root.exists():
        raise DatasetError(f"{root}: dataset folder does not exist.")
    if not root.is_dir():
        raise DatasetError(f"{root}: is a file; expected an ACDC folder with training/ and/or testing/.")
    found: list[tuple[str, Path]] = []
    for subset in SUBSETS:
        sub = root / subset
        if sub.is_dir():
            found += [(subset, p) for p in sorted(sub.iterdir()) if p.is_dir() and _PATIENT_RE.match(p.name)]
    if not found:
        found = [("training", p) for p in sorted(root.iterdir()) if p.is_dir() and _PATIENT_RE.match(p.name)]
    if not found:
        raise DatasetError(
            f"{root}: no patient folders found; expected {root}/training/patientXXX/ (ACDC layout) "
            "with Info.cfg and patientXXX_frameYY.nii.gz files, or imagesTr/ and labelsTr/ holding "
            "patientXXX_frameYY.nii.gz."
        )
    return found


def read_patient(folder: str | os.PathLike, subset: str = "training") -> Patient:
    """Read one patient folder: Info.cfg and the paths of its ED/ES frames, masks and cine.

    Only the existence of files is checked here, not their contents.

    Raises:
        DatasetError: Info.cfg is missing or bad, or an ED/ES image is missing.
    """
    folder = Path(folder)
    pid = folder.name
    info = parse_info_cfg(folder / "Info.cfg")
    frames = []
    for phase in PHASES:
        idx = int(info[phase])
        image = folder / f"{pid}_frame{idx:02d}.nii.gz"
        if not image.is_file():
            raise DatasetError(f"{image}: missing; Info.cfg names frame {idx} as {phase}.")
        label = folder / f"{pid}_frame{idx:02d}_gt.nii.gz"
        frames.append(Frame(phase=phase, index=idx, image=image, label=label if label.is_file() else None))
    cine = folder / f"{pid}_4d.nii.gz"
    return Patient(pid, subset, folder, info, tuple(frames), cine if cine.is_file() else None)


def read_patients(dataset_dir: str | os.PathLike) -> list[Patient]:
    """Read every patient of a dataset folder, in the ACDC or the ``imagesTr/`` layout (no content check;
    see :func:`check.validated_patients`)."""
    if is_seed_layout(dataset_dir):
        return [read_seed_patient(dataset_dir, *group) for group in find_seed_patients(dataset_dir)]
    return [read_patient(folder, subset) for subset, folder in find_patient_dirs(dataset_dir)]


def is_seed_layout(dataset_dir: str | os.PathLike) -> bool:
    """Whether a folder is in the Decathlon-style layout (``imagesTr/``, ``labelsTr/``, ``imagesTs/``)."""
    return any((Path(dataset_dir) / name).is_dir() for name in SEED_FOLDERS)


def find_seed_patients(dataset_dir: str | os.PathLike) -> list[tuple[str, str, dict[int, Path]]]:
    """``(subset, patient id, {frame number: image})`` of every patient of a folder in the ``imagesTr/``
    layout: ``imagesTr/patientXXX_frameYY.nii.gz`` (training, masks of the same name in ``labelsTr/``) and
    ``imagesTs/`` (testing, masks optional in ``labelsTs/``).

    Raises:
        DatasetError: a NIfTI file named otherwise (the file and the expected name), a mask without its
            image, or no image at all.
    """
    root = Path(dataset_dir)
    found: list[tuple[str, str, dict[int, Path]]] = []
    for images, (subset, labels) in SEED_FOLDERS.items():
        if not (root / images).is_dir():
            continue
        groups: dict[str, dict[int, Path]] = {}
        for path in sorted((root / images).iterdir()):
            m = _FRAME_FILE_RE.match(path.name)
            if m:
                groups.setdefault(m.group(1), {})[int(m.group(2))] = path
            elif path.name.endswith((".nii", ".nii.gz")):
                raise DatasetError(f"{path}: not named patientXXX_frameYY.nii.gz; rename it or move it out.")
        for label in sorted((root / labels).glob("*.nii*")) if (root / labels).is_dir() else []:
            if not (root / images / label.name).is_file():
                raise DatasetError(f"{label}: a mask without its image {root / images / label.name}.")
        found += [(subset, pid, frames) for pid, frames in sorted(groups.items())]
    if not found:
        raise DatasetError(f"{root}: no patientXXX_frameYY.nii.gz in {' or '.join(SEED_FOLDERS)}.")
    return found


def seed_info_cfg(dataset_dir: str | os.PathLike, images: Path, pid: str) -> Path | None:
    """The Info.cfg of a patient of the ``imagesTr/`` layout, where one exists: ``<images folder>/
    patientXXX_Info.cfg`` beside its frames, else ``<dataset>/patientXXX/Info.cfg``."""
    for path in (images / f"{pid}_Info.cfg", Path(dataset_dir) / pid / "Info.cfg"):
        if path.is_file():
            return path
    return None


def read_seed_patient(
    dataset_dir: str | os.PathLike, subset: str, pid: str, frames: Mapping[int, Path]
) -> Patient:
    """One patient of the ``imagesTr/`` layout. ED and ES are those its Info.cfg names
    (:func:`seed_info_cfg`); without one, the patient must have exactly two frames, and the earlier is ED
    (pathology group ``unknown``).

    Raises:
        DatasetError: a bad Info.cfg, a frame it names that is missing, or, without Info.cfg, other than
            two frames; the message names the files.
    """
    images = next(iter(frames.values())).parent
    labels = Path(dataset_dir) / dict(SEED_FOLDERS.values())[subset]
    info_path = seed_info_cfg(dataset_dir, images, pid)
    if info_path is not None:
        info = parse_info_cfg(info_path)
    elif len(frames) == 2:
        ed, es = sorted(frames)
        info = {"ED": ed, "ES": es, "Group": "unknown", "NbFrame": max(ed, es)}
    else:
        names = ", ".join(p.name for p in frames.values())
        raise DatasetError(
            f"{images}: {pid} has {len(frames)} frame(s) ({names}) and no Info.cfg; keep its ED and ES "
            f"frames only, or add {images / (pid + '_Info.cfg')} naming them."
        )
    out = []
    for phase in PHASES:
        idx = int(info[phase])
        if idx not in frames:
            raise DatasetError(
                f"{images / f'{pid}_frame{idx:02d}.nii.gz'}: missing; {info_path} names it {phase}."
            )
        label = labels / frames[idx].name
        out.append(Frame(phase, idx, frames[idx], label if label.is_file() else None))
    return Patient(pid, subset, images, info, tuple(out), None)


def split_patients(
    patients: Sequence[Patient],
    fractions: Mapping[str, float] | None = None,
    seed: int = 0,
) -> dict[str, list[str]]:
    """Split patients into named subsets, stratified by pathology group, seeded, disjoint.

    Only patients with ground truth from the ``training`` subset are split; patients of the official
    ``testing`` subset always go to ``"testing"`` (they never reach training).

    Patients are shuffled within each group, the groups are laid end to end, and positions are dealt to the
    subsets so that every prefix of the list is apportioned as closely as possible to ``fractions``. Each
    subset therefore gets its share of every group (to within one patient) and exactly its overall share
    (to within one patient).

    Args:
        patients: the patients to split.
        fractions: subset name -> fraction; must be non-negative and sum to 1. Default
            ``{"training": 0.6, "validation": 0.2, "testing": 0.2}``.
        seed: random seed of the shuffle.

    Returns:
        subset name -> sorted patient ids (every name of ``fractions`` is present, maybe empty).
    """
    fractions = dict(fractions or {"training": 0.6, "validation": 0.2, "testing": 0.2})
    if not fractions or any(f < 0 for f in fractions.values()) or abs(sum(fractions.values()) - 1) > 1e-6:
        raise ValueError(f"fractions must be non-negative and sum to 1, got {fractions}.")
    ids = [p.id for p in patients]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise DatasetError(f"patient ids appear twice (in training/ and testing/?): {', '.join(dup)}.")
    rng = np.random.default_rng(seed)
    pool = [p for p in patients if p.subset == "training"]
    by_group: dict[str, list[str]] = {}
    for p in sorted(pool, key=lambda p: p.id):
        by_group.setdefault(p.group, []).append(p.id)
    order = [pid for g in sorted(by_group) for pid in rng.permutation(by_group[g]).tolist()]
    names = list(fractions)
    out: dict[str, list[str]] = {name: [] for name in names}
    for i, pid in enumerate(order):
        deficit = [fractions[n] * (i + 1) - len(out[n]) for n in names]
        out[names[int(np.argmax(deficit))]].append(pid)
    extra = [p.id for p in patients if p.subset != "training"]
    if extra:
        out.setdefault("testing", []).extend(extra)
    return {name: sorted(v) for name, v in out.items()}


def _volume_items(patient: Patient, root: Path) -> list[dict[str, Any]]:
    """Datalist items (one per ED/ES frame) of one patient, paths relative to the resolved ``root`` (symlinks
    resolved once, here); a file whose real path lies outside ``root`` keeps its plain absolute path."""

    def rel(p: Path) -> str:
        real = p.resolve()
        return real.relative_to(root).as_posix() if real.is_relative_to(root) else str(real)

    items = []
    for frame in patient.frames:
        other = [f for f in patient.frames if f is not frame]
        item: dict[str, Any] = {
            "image": rel(frame.image),
            "patient": patient.id,
            "frame": frame.index,
            "phase": frame.phase,
            "group": patient.group,
            "subset": patient.subset,
        }
        if frame.label is not None:
            item["label"] = rel(frame.label)
        if other:
            item["pair"] = rel(other[0].image)
        if patient.cine is not None:
            item["cine"] = rel(patient.cine)
        items.append(item)
    return items


def make_datalist(
    patients: Sequence[Patient],
    dataset_dir: str | os.PathLike,
    splits: Mapping[str, Iterable[str]] | None = None,
) -> dict[str, Any]:
    """Build a MONAI-style datalist: one item per ED/ES frame, grouped by split.

    Each item holds ``image`` (and ``label``, ``pair`` = the other phase's image, ``cine`` where they exist)
    as paths relative to ``dataset_dir``, plus ``patient``, ``frame``, ``phase``, ``group`` and ``subset``.

    Args:
        patients: the patients to list.
        dataset_dir: the folder paths are made relative to (stored as ``base_dir``).
        splits: split name -> patient ids; default: everything under ``"training"``.

    Returns:
        ``{"name": "ACDC", "classes": [...], "base_dir": str, <split>: [items...], ...}``.
    """
    root = Path(dataset_dir).resolve()
    by_id = {p.id: p for p in patients}
    splits = splits if splits is not None else {"training": list(by_id)}
    out: dict[str, Any] = {"name": "ACDC", "classes": list(ACDC_CLASSES), "base_dir": str(root)}
    seen: dict[str, str] = {}
    for name, ids in splits.items():
        items = []
        for pid in ids:
            if pid not in by_id:
                raise DatasetError(f"split {name!r} names {pid}, which is not among the patients read.")
            if pid in seen:
                raise DatasetError(f"{pid} is in both splits {seen[pid]!r} and {name!r}.")
            seen[pid] = name
            items += _volume_items(by_id[pid], root)
        out[name] = items
    return out


def write_datalist(datalist: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write a datalist JSON atomically (temp file, then rename) and return its path."""
    return write_json(datalist, path)


def read_datalist(
    path: str | os.PathLike, key: str = "training", base_dir: str | os.PathLike | None = None
) -> list[dict[str, Any]]:
    """Read one split of a datalist written by :func:`write_datalist`, with absolute paths.

    Args:
        path: the datalist JSON.
        key: the split to read (``"training"``, ``"validation"``, ``"testing"``...).
        base_dir: folder the relative paths are resolved against; default: the ``base_dir`` stored in the
            file, else the JSON's own folder (as MONAI's ``load_decathlon_datalist`` does).

    Raises:
        DatasetError: the file is unreadable or not JSON, or has no such split.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: cannot read datalist ({e}).") from e
    if key not in data:
        splits = [k for k, v in data.items() if isinstance(v, list) and k != "classes"]
        raise DatasetError(f"{path}: no split {key!r}; it has {splits}.")
    root = Path(base_dir or data.get("base_dir") or path.parent)
    items = []
    for item in data[key]:
        item = dict(item)
        for k in PATH_KEYS:
            if k in item and item[k] is not None:
                item[k] = str(root / item[k])
        items.append(item)
    return items
