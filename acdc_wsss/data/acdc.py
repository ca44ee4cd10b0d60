"""Reader for the ACDC folder layout, MONAI-style datalists and patient-level splits.

The official release (MICCAI 2017 ACDC) looks like::

    DATASET_DIR/training/patient001/Info.cfg
    DATASET_DIR/training/patient001/patient001_frame01.nii.gz      # ED frame (3D, X x Y x slices)
    DATASET_DIR/training/patient001/patient001_frame01_gt.nii.gz   # its labels: 0 bg, 1 RV, 2 Myo, 3 LV
    DATASET_DIR/training/patient001/patient001_frame12.nii.gz      # ES frame
    DATASET_DIR/training/patient001/patient001_frame12_gt.nii.gz
    DATASET_DIR/training/patient001/patient001_4d.nii.gz           # optional cine
    DATASET_DIR/testing/patient101/...                             # same layout, gt optional

The Decathlon-style layout (flat folders, masks named as their images) is read into the same patients::

    DATASET_DIR/imagesTr/patient001_frame01.nii.gz    # a training image (patients of subset "training")
    DATASET_DIR/imagesTr/patient001_frame12.nii.gz
    DATASET_DIR/imagesTr/patient001_Info.cfg          # optional: ED, ES, Group... as in the ACDC layout
    DATASET_DIR/imagesTr/patient001_4d.nii.gz         # optional cine
    DATASET_DIR/labelsTr/patient001_frame01.nii.gz    # its mask, same file name as the image
    DATASET_DIR/imagesTs/patient101_frame01.nii.gz    # optional: subset "testing", no masks

A patient's Info.cfg is looked for in one place only: ``patientXXX_Info.cfg`` beside its images. Without it
the patient must have exactly two frames (the earlier is ED, the later ES) and its group is ``"unknown"``.

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
    "IMAGE_DIRS",
    "INFO_KEYS",
    "LABEL_DIR",
    "PATH_KEYS",
    "PHASES",
    "SUBSETS",
    "USER_ERRORS",
    "DatasetError",
    "Frame",
    "Patient",
    "decathlon_layout",
    "find_decathlon_patients",
    "find_patient_dirs",
    "make_datalist",
    "parse_info_cfg",
    "read_datalist",
    "read_decathlon_patient",
    "read_patient",
    "read_patients",
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

#: Folders of the Decathlon-style layout that hold images, with the subset their patients go to.
IMAGE_DIRS: dict[str, str] = {"imagesTr": "training", "imagesTs": "testing"}
#: Folder of the Decathlon-style layout that holds the training masks, each named as its image.
LABEL_DIR = "labelsTr"

_PATIENT_RE = re.compile(r"^patient\d{3}$")
#: File names of the Decathlon-style layout, by kind; group 1 is the patient id.
_DECATHLON_NAMES: dict[str, re.Pattern[str]] = {
    "frame": re.compile(r"^(patient\d{3})_frame(\d{2})\.nii\.gz$"),
    "cine": re.compile(r"^(patient\d{3})_4d\.nii\.gz$"),
    "info": re.compile(r"^(patient\d{3})_Info\.cfg$"),
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
    """One patient, with its parsed Info.cfg (empty where it has none) and its ED/ES frames.

    ``folder`` is the patient's folder in the ACDC layout, the folder of its images (``imagesTr/`` or
    ``imagesTs/``) in the Decathlon-style one.
    """

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
            "with Info.cfg and patientXXX_frameYY.nii.gz files, or "
            f"{root}/imagesTr/patientXXX_frameYY.nii.gz (Decathlon-style layout)."
        )
    return found


def decathlon_layout(dataset_dir: str | os.PathLike) -> bool:
    """True when ``dataset_dir`` is in the Decathlon-style layout: it holds ``imagesTr/`` or ``imagesTs/``.

    Raises:
        DatasetError: the folder holds both layouts (``imagesTr/`` beside ``training/`` or patient folders);
            which one to read would be a guess.
    """
    root = Path(dataset_dir)
    flat = [root / d for d in IMAGE_DIRS if (root / d).is_dir()]
    if not flat:
        return False
    acdc = [root / s for s in SUBSETS if (root / s).is_dir()]
    acdc += [p for p in sorted(root.iterdir()) if p.is_dir() and _PATIENT_RE.match(p.name)]
    if acdc:
        raise DatasetError(
            f"{root}: holds both {flat[0].name}/ (Decathlon-style layout) and {acdc[0].name}/ (ACDC layout); "
            "keep one layout per dataset folder."
        )
    return True


#: How each kind of file of the Decathlon-style layout is spelled, for messages.
_DECATHLON_SPELLING = {
    "frame": "patientXXX_frameYY.nii.gz",
    "cine": "patientXXX_4d.nii.gz",
    "info": "patientXXX_Info.cfg",
}


def _decathlon_files(
    folder: Path, kinds: Sequence[str], strays: list[tuple[Path, str, str | None]]
) -> list[tuple[str, str, Path]]:
    """``(kind, patient id, path)`` of the files of one Decathlon-style folder named as one of ``kinds``; a
    NIfTI or .cfg file named otherwise goes to ``strays``, other files (hidden ones, notes) are ignored."""
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        kind = next((k for k in kinds if _DECATHLON_NAMES[k].match(path.name)), None)
        if kind is not None:
            out.append((kind, path.name.split("_", 1)[0], path))
        elif path.name.endswith((".nii.gz", ".nii", ".cfg")):
            pid = path.name[:10] if _PATIENT_RE.match(path.name[:10]) else None
            expected = ", ".join(_DECATHLON_SPELLING[k] for k in kinds)
            strays.append((path, f"unexpected name; {folder.name}/ holds only {expected} files.", pid))
    return out


def find_decathlon_patients(
    dataset_dir: str | os.PathLike,
) -> tuple[list[tuple[str, str]], list[tuple[Path, str, str | None]]]:
    """List the patients of a Decathlon-style folder, and the files that belong to none.

    Returns:
        ``(subset, patient id)`` of every patient with a ``patientXXX_frameYY.nii.gz`` image in
        ``imagesTr/`` (subset ``"training"``) or ``imagesTs/`` (``"testing"``); and ``(file, what is wrong,
        patient id or None)`` for every misnamed NIfTI or .cfg file, every mask in ``labelsTr/`` without its
        image in ``imagesTr/``, and every Info.cfg or cine of a patient without images.
    """
    root = Path(dataset_dir)
    found: list[tuple[str, str]] = []
    strays: list[tuple[Path, str, str | None]] = []
    for name, subset in IMAGE_DIRS.items():
        files = _decathlon_files(root / name, ("frame", "cine", "info"), strays)
        with_frames = sorted({pid for kind, pid, _ in files if kind == "frame"})
        found += [(subset, pid) for pid in with_frames]
        strays += [
            (path, f"no {pid}_frameYY.nii.gz image beside it.", pid)
            for _, pid, path in files
            if pid not in with_frames
        ]
    images = root / "imagesTr"
    for _, pid, path in _decathlon_files(root / LABEL_DIR, ("frame",), strays):
        if not (images / path.name).is_file():
            strays.append((path, f"mask without its image {images / path.name}.", pid))
    return found, strays


def read_decathlon_patient(dataset_dir: str | os.PathLike, pid: str, subset: str = "training") -> Patient:
    """Read one patient of a Decathlon-style folder: its ED/ES frames, masks, cine and optional Info.cfg.

    ED and ES are the frames that ``patientXXX_Info.cfg`` beside the images names; without that file the
    patient must have exactly two frames, the earlier ED and the later ES (and its group is ``"unknown"``).
    A training patient's masks are the ``labelsTr/`` files named as its images. Only the existence of files
    is checked here, not their contents.

    Raises:
        DatasetError: Info.cfg is bad or names a frame that is not there; or, without Info.cfg, the patient
            has other than two frames. The message names the file(s).
    """
    if subset not in IMAGE_DIRS.values():
        raise ValueError(f"subset must be one of {sorted(IMAGE_DIRS.values())}, got {subset!r}.")
    root = Path(dataset_dir)
    folder = root / next(d for d, s in IMAGE_DIRS.items() if s == subset)
    frames = {
        int(m[2]): p
        for p in sorted(folder.glob(f"{pid}_frame*.nii.gz"))
        if (m := _DECATHLON_NAMES["frame"].match(p.name))
    }
    cfg = folder / f"{pid}_Info.cfg"
    info: dict[str, Any] = {}
    if cfg.is_file():
        info = parse_info_cfg(cfg)
        index = {phase: int(info[phase]) for phase in PHASES}
        for phase, idx in index.items():
            if idx not in frames:
                image = folder / f"{pid}_frame{idx:02d}.nii.gz"
                raise DatasetError(f"{image}: missing; {cfg.name} names frame {idx} as {phase}.")
    elif len(frames) == len(PHASES):
        index = dict(zip(PHASES, sorted(frames), strict=True))
    else:
        names = ", ".join(p.name for p in frames.values()) or "none"
        raise DatasetError(
            f"{cfg}: missing, and {pid} has {len(frames)} frame(s) in {folder} ({names}); without it exactly "
            f"two are needed (the earlier is ED, the later ES). Add {cfg.name} naming ED and ES, or keep "
            "only those two frames."
        )
    labels = root / LABEL_DIR if subset == "training" else None
    out = []
    for phase, idx in index.items():
        label = labels / frames[idx].name if labels is not None else None
        out.append(Frame(phase, idx, frames[idx], label if label is not None and label.is_file() else None))
    cine = folder / f"{pid}_4d.nii.gz"
    return Patient(pid, subset, folder, info, tuple(out), cine if cine.is_file() else None)


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
    """Read every patient of a dataset folder in the ACDC or the Decathlon-style layout (no content check;
    see :func:`check.validated_patients`).

    Raises:
        DatasetError: no patient, a patient that cannot be read, or (Decathlon-style layout) a misnamed file
            or a mask without its image; the message names the file.
    """
    root = Path(dataset_dir)
    if not decathlon_layout(root):
        return [read_patient(folder, subset) for subset, folder in find_patient_dirs(root)]
    found, strays = find_decathlon_patients(root)
    if strays:
        path, message, _ = strays[0]
        more = f" (and {len(strays) - 1} more file(s): python -m acdc_wsss.data.check lists them)"
        raise DatasetError(f"{path}: {message}" + (more if len(strays) > 1 else ""))
    if not found:
        raise DatasetError(f"{root}: no patientXXX_frameYY.nii.gz image in imagesTr/ or imagesTs/.")
    return [read_decathlon_patient(root, pid, subset) for subset, pid in found]


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
