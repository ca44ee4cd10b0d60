"""Integrity check of an ACDC dataset folder (ACDC or Decathlon-style layout), run before any stage does work.

``python -m acdc_wsss.data.check DATASET_DIR`` lists every problem at once, each naming its file, and exits
non-zero when anything is wrong. Stages call :func:`validated_patients`, which raises
:class:`DatasetCheckError` with the same list (or, with ``skip_bad=True``, leaves the bad patients out with a
logged warning).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from acdc_wsss.data.acdc import (
    ACDC_LABELS,
    IMAGE_DIRS,
    LABEL_DIR,
    PHASES,
    DatasetError,
    Patient,
    decathlon_layout,
    find_decathlon_patients,
    find_patient_dirs,
    make_datalist,
    parse_info_cfg,
    read_decathlon_patient,
    read_patient,
    split_patients,
    write_datalist,
)
from acdc_wsss.utils import progress_bar, setup_cli_logging

__all__ = ["CheckReport", "DatasetCheckError", "Problem", "check_dataset", "main", "validated_patients"]

logger = logging.getLogger(__name__)

#: Affines of an image and its mask may differ by header rounding, not more.
_AFFINE_ATOL = 1e-3


@dataclass(frozen=True)
class Problem:
    """One fault in a dataset: the file it concerns, what is wrong, and the patient (None: whole folder)."""

    path: Path
    message: str
    patient: str | None = None

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class CheckReport:
    """Result of :func:`check_dataset`."""

    dataset_dir: Path
    patients: list[Patient] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    volumes: int = 0
    slices: int = 0

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    @property
    def bad_patients(self) -> set[str]:
        """Ids of the patients with at least one problem."""
        return {p.patient for p in self.problems if p.patient is not None}

    def summary(self) -> str:
        """One paragraph: counts of patients, volumes, slices and groups, then the problems."""
        subsets = Counter(p.subset for p in self.patients)
        groups = Counter(p.group for p in self.patients)
        lines = [
            f"{self.dataset_dir}: {len(self.patients)} patients "
            f"({', '.join(f'{n} {s}' for s, n in sorted(subsets.items())) or 'none'}), "
            f"{self.volumes} volumes, {self.slices:,} slices",
            "groups: " + (", ".join(f"{g} {n}" for g, n in sorted(groups.items())) or "none"),
        ]
        lines += [f"  warning: {w}" for w in self.warnings]
        if self.ok:
            lines.append("no problem found")
        else:
            lines.append(
                f"{len(self.problems)} problem(s) in {len(self.bad_patients)} patient(s)"
                + (" and the folder itself" if any(p.patient is None for p in self.problems) else "")
                + ":"
            )
            lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """The report as plain JSON-able data."""
        return {
            "dataset_dir": str(self.dataset_dir),
            "patients": len(self.patients),
            "volumes": self.volumes,
            "slices": self.slices,
            "groups": dict(Counter(p.group for p in self.patients)),
            "problems": [
                {"path": str(p.path), "patient": p.patient, "message": p.message} for p in self.problems
            ],
            "warnings": [
                {"path": str(p.path), "patient": p.patient, "message": p.message} for p in self.warnings
            ],
        }


class DatasetCheckError(DatasetError):
    """The dataset check found problems; ``report`` holds them all."""

    def __init__(self, report: CheckReport, hint: str = "") -> None:
        self.report = report
        msg = f"dataset check failed for {report.dataset_dir}:\n" + "\n".join(
            f"  - {p}" for p in report.problems
        )
        super().__init__(msg + (f"\n{hint}" if hint else ""))


def _load(path: Path, deep: bool, problems: list[Problem], pid: str) -> tuple[Any, np.ndarray | None] | None:
    """Load a NIfTI header (and with ``deep`` its voxels); record a problem and return None if unreadable."""
    try:
        img = nib.load(path)
        data = np.asanyarray(img.dataobj) if deep else None
    except Exception as e:  # nibabel raises many types for a corrupt or truncated file
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        problems.append(Problem(path, f"unreadable or truncated NIfTI ({reason}).", pid))
        return None
    return img, data


def _check_intensities(path: Path, data: np.ndarray, report: CheckReport, pid: str) -> None:
    """Refuse non-finite voxels (NaN, inf) with their count; warn about a constant image."""
    finite = np.isfinite(data)
    n_bad = int(data.size - np.count_nonzero(finite))
    if n_bad:
        report.problems.append(
            Problem(
                path,
                f"{n_bad:,} of {data.size:,} voxels are not finite (NaN or inf); training on them gives a "
                "NaN loss. Re-export the image.",
                pid,
            )
        )
    elif data.size and float(data.max()) == float(data.min()):
        report.warnings.append(
            Problem(path, f"constant image (every voxel {float(data.flat[0]):g}); it carries nothing.", pid)
        )


def _check_frame_pair(
    image_path: Path, label_path: Path | None, deep: bool, report: CheckReport, pid: str
) -> tuple[tuple[int, ...], np.ndarray] | None:
    """Check one frame and its mask; return (shape, affine) of the image when it is readable and 3D."""
    problems = report.problems
    loaded = _load(image_path, deep, problems, pid)
    if loaded is None:
        return None
    img, data = loaded
    if data is not None:
        _check_intensities(image_path, data, report, pid)
    if len(img.shape) != 3:
        problems.append(
            Problem(
                image_path, f"has {len(img.shape)} dimensions {tuple(img.shape)}; expected a 3D frame.", pid
            )
        )
        return None
    if label_path is None:
        return tuple(img.shape), img.affine
    loaded = _load(label_path, deep, problems, pid)
    if loaded is None:
        return tuple(img.shape), img.affine
    gt, gt_data = loaded
    if tuple(gt.shape) != tuple(img.shape):
        problems.append(
            Problem(label_path, f"shape {tuple(gt.shape)} differs from its image's {tuple(img.shape)}.", pid)
        )
    elif not np.allclose(gt.affine, img.affine, atol=_AFFINE_ATOL):
        problems.append(
            Problem(
                label_path,
                "affine differs from its image's (max difference "
                f"{np.abs(gt.affine - img.affine).max():.4g}); mask and image must share one voxel grid.",
                pid,
            )
        )
    if gt_data is not None:
        values = np.unique(gt_data)
        bad = [v for v in values.tolist() if v not in ACDC_LABELS]
        if bad:
            shown = ", ".join(f"{v:g}" for v in bad[:8]) + (" ..." if len(bad) > 8 else "")
            problems.append(
                Problem(
                    label_path, f"label values {shown} outside {{{', '.join(map(str, ACDC_LABELS))}}}.", pid
                )
            )
    return tuple(img.shape), img.affine


def _check_frame_numbers(info: dict[str, Any], cfg: Path, report: CheckReport, pid: str) -> None:
    """Refuse an ED or ES frame number outside 1..NbFrame of the Info.cfg ``cfg``."""
    n_frames = info["NbFrame"]
    for phase in PHASES:
        if not 1 <= info[phase] <= n_frames:
            report.problems.append(
                Problem(cfg, f"{phase}: {info[phase]} is outside 1..NbFrame ({n_frames}).", pid)
            )


def _check_volumes(
    frames: list[tuple[str, Path, Path | None]],
    cine: Path | None,
    folder: Path,
    deep: bool,
    report: CheckReport,
    pid: str,
) -> None:
    """Check one patient's ``(phase, image, mask)`` frames that exist, their common grid and the cine;
    count the volumes and slices."""
    problems = report.problems
    grids: dict[str, tuple[tuple[int, ...], np.ndarray]] = {}
    for phase, image, label in frames:
        grid = _check_frame_pair(image, label, deep, report, pid)
        if grid is not None:
            grids[phase] = grid
            report.volumes += 1
            report.slices += grid[0][2]
    if len(grids) == len(PHASES):
        (s0, a0), (s1, a1) = grids.values()
        if s0 != s1 or not np.allclose(a0, a1, atol=_AFFINE_ATOL):
            problems.append(
                Problem(
                    folder, f"ED and ES frames lie on different grids ({s0} vs {s1}); expected one scan.", pid
                )
            )
    if cine is None:
        return
    loaded = _load(cine, False, problems, pid)
    if loaded is not None:
        shape = tuple(loaded[0].shape)
        ref = next(iter(grids.values()))[0] if grids else None
        if len(shape) != 4:
            problems.append(
                Problem(cine, f"has {len(shape)} dimensions {shape}; expected 4D (X, Y, Z, t).", pid)
            )
        elif ref is not None and shape[:3] != ref:
            problems.append(Problem(cine, f"grid {shape[:3]} differs from the frames' {ref}.", pid))


def _check_patient(
    folder: Path, subset: str, deep: bool, report: CheckReport, require_masks: bool = True
) -> None:
    """Check one patient folder of the ACDC layout, appending its problems and counts to ``report``."""
    pid = folder.name
    problems = report.problems
    if not any(folder.iterdir()):
        problems.append(Problem(folder, "empty folder; expected Info.cfg and the ED/ES frames.", pid))
        return
    try:
        info = parse_info_cfg(folder / "Info.cfg")
    except DatasetError as e:
        problems.append(Problem(folder / "Info.cfg", str(e).split(": ", 1)[-1], pid))
        return
    _check_frame_numbers(info, folder / "Info.cfg", report, pid)
    frames: list[tuple[str, Path, Path | None]] = []
    for phase in PHASES:
        idx = info[phase]
        image = folder / f"{pid}_frame{idx:02d}.nii.gz"
        label: Path | None = folder / f"{pid}_frame{idx:02d}_gt.nii.gz"
        if not image.is_file():
            problems.append(Problem(image, f"missing; Info.cfg names frame {idx} as {phase}.", pid))
            continue
        if not label.is_file():
            if subset == "training" and require_masks:
                problems.append(Problem(label, f"missing ground truth for the {phase} frame.", pid))
            label = None
        frames.append((phase, image, label))
    cine = folder / f"{pid}_4d.nii.gz"
    _check_volumes(frames, cine if cine.is_file() else None, folder, deep, report, pid)
    try:
        report.patients.append(read_patient(folder, subset))
    except DatasetError:
        pass  # already reported above


def _check_decathlon_patient(
    root: Path, subset: str, pid: str, deep: bool, report: CheckReport, require_masks: bool = True
) -> None:
    """Check one patient of the Decathlon-style layout, appending its problems and counts to ``report``."""
    try:
        patient = read_decathlon_patient(root, pid, subset)
    except DatasetError as e:
        path, _, message = str(e).partition(": ")
        report.problems.append(Problem(Path(path), message, pid))
        return
    cfg = patient.folder / f"{pid}_Info.cfg"
    if patient.info:
        _check_frame_numbers(dict(patient.info), cfg, report, pid)
    used = {f.image for f in patient.frames}
    for image in sorted(patient.folder.glob(f"{pid}_frame[0-9][0-9].nii.gz")):
        if image not in used:
            report.warnings.append(
                Problem(image, f"not used: {cfg.name} names other frames as ED and ES.", pid)
            )
    if subset == "training" and require_masks:
        report.problems += [
            Problem(root / LABEL_DIR / f.image.name, f"missing ground truth for the {f.phase} frame.", pid)
            for f in patient.frames
            if f.label is None
        ]
    frames = [(f.phase, f.image, f.label) for f in patient.frames]
    _check_volumes(frames, patient.cine, patient.folder, deep, report, pid)
    report.patients.append(patient)


def _check_decathlon(
    root: Path, deep: bool, report: CheckReport, require_masks: bool, progress: bool
) -> None:
    """Check a folder in the Decathlon-style layout: misnamed or stray files, then every patient."""
    found, strays = find_decathlon_patients(root)
    report.problems += [Problem(path, message, pid) for path, message, pid in strays]
    if not found:
        report.problems.append(Problem(root, "no patientXXX_frameYY.nii.gz image in imagesTr/ or imagesTs/."))
    seen: dict[str, str] = {}
    for subset, pid in progress_bar(found, desc="checking patients", enabled=progress):
        if pid in seen:
            folder = next(d for d, s in IMAGE_DIRS.items() if s == subset)
            report.problems.append(
                Problem(root / folder, f"patient id {pid} also used in {seen[pid]}/.", pid)
            )
            continue
        seen[pid] = next(d for d, s in IMAGE_DIRS.items() if s == subset)
        _check_decathlon_patient(root, subset, pid, deep, report, require_masks)


def check_dataset(
    dataset_dir: str | os.PathLike, deep: bool = True, progress: bool = True, require_masks: bool = True
) -> CheckReport:
    """Check an ACDC folder and return every problem found, each naming its file.

    Checks: the folder exists and holds patients; each patient has a readable Info.cfg with all of
    ``ED, ES, Group, Height, NbFrame, Weight``; the frames it names exist (and their ``_gt`` in
    ``training/``); every NIfTI reads to the end (with ``deep``) and is 3D; image and mask share shape and
    affine; label values lie in {0, 1, 2, 3} and every image voxel is finite (with ``deep``; a constant
    image is a warning); ED and ES share one grid; an optional
    ``_4d`` cine is 4D on the same grid; no patient id appears twice.

    A folder in the Decathlon-style layout (``imagesTr/``, ``labelsTr/``, ``imagesTs/``; see
    :mod:`acdc_wsss.data.acdc`) gets the same checks, with an optional ``patientXXX_Info.cfg`` beside the
    images; in addition every NIfTI or .cfg file must be named as the layout says, every mask in
    ``labelsTr/`` must have its image, and a patient without Info.cfg must have exactly two frames. A frame
    that Info.cfg leaves out is a warning.

    Args:
        dataset_dir: the dataset folder (with ``training/`` and/or ``testing/``, or ``imagesTr/`` and/or
            ``imagesTs/``).
        deep: read every voxel (catches truncated files and bad label values); ``False`` reads headers.
        progress: show a progress bar on a terminal.
        require_masks: ``training/`` patients (or a bare folder of patients) must have their ``_gt`` masks,
            ``imagesTr/`` patients theirs in ``labelsTr/``; False for inference, where masks are optional
            everywhere.
    """
    root = Path(dataset_dir)
    report = CheckReport(dataset_dir=root)
    try:
        if decathlon_layout(root):
            _check_decathlon(root, deep, report, require_masks, progress)
            return report
        dirs = find_patient_dirs(root)
    except DatasetError as e:
        report.problems.append(Problem(root, str(e).split(": ", 1)[-1]))
        return report
    seen: dict[str, Path] = {}
    for subset, folder in progress_bar(dirs, desc="checking patients", enabled=progress):
        if folder.name in seen:
            report.problems.append(
                Problem(folder, f"patient id also used by {seen[folder.name]}.", folder.name)
            )
            continue
        seen[folder.name] = folder
        _check_patient(folder, subset, deep, report, require_masks)
    return report


def validated_patients(
    dataset_dir: str | os.PathLike,
    skip_bad: bool = False,
    deep: bool = True,
    progress: bool = True,
    require_masks: bool = True,
) -> list[Patient]:
    """Check a dataset and return its patients, refusing (or skipping) bad ones before any work is done.

    Args:
        dataset_dir: the ACDC folder.
        skip_bad: leave patients with problems out, logging a warning for each, instead of failing.
        deep: see :func:`check_dataset`.
        progress: show a progress bar on a terminal.
        require_masks: see :func:`check_dataset`.

    Raises:
        DatasetCheckError: any problem (without ``skip_bad``), a problem with the folder itself, or no
            patient left after skipping.
    """
    report = check_dataset(dataset_dir, deep=deep, progress=progress, require_masks=require_masks)
    for w in report.warnings:
        logger.warning("%s", w)
    if report.ok:
        return report.patients
    folder_level = [p for p in report.problems if p.patient is None]
    if folder_level or not skip_bad:
        hint = "" if folder_level else "Fix these files, or pass skip_bad=True to leave those patients out."
        raise DatasetCheckError(report, hint)
    bad = report.bad_patients
    for pid in sorted(bad):
        msgs = "; ".join(str(p) for p in report.problems if p.patient == pid)
        logger.warning("skipping %s: %s", pid, msgs)
    good = [p for p in report.patients if p.id not in bad]
    if not good:
        raise DatasetCheckError(report, "Every patient has a problem; nothing is left to use.")
    logger.warning("skipped %d bad patient(s); %d remain.", len(bad), len(good))
    return good


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m acdc_wsss.data.check DATASET_DIR [--skip-bad] [--datalist FILE]``."""
    parser = argparse.ArgumentParser(
        prog="python -m acdc_wsss.data.check",
        description="Check an ACDC dataset folder and list every problem, each with its file.",
    )
    parser.add_argument(
        "dataset_dir",
        help="ACDC folder with training/ and/or testing/ patient folders, or imagesTr/ and/or imagesTs/",
    )
    parser.add_argument(
        "--skip-bad",
        "--skip_bad",
        dest="skip_bad",
        action="store_true",
        help="leave bad patients out, exit 0",
    )
    parser.add_argument(
        "--quick", action="store_true", help="read headers only (no truncation or label check)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--datalist", metavar="FILE", help="also write a split datalist JSON of the good patients"
    )
    parser.add_argument("--val", type=float, default=0.2, help="validation fraction of the patients (0.2)")
    parser.add_argument("--test", type=float, default=0.2, help="test fraction of the patients (0.2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the stratified split (0)")
    args = parser.parse_args(argv)
    setup_cli_logging()
    report = check_dataset(args.dataset_dir, deep=not args.quick)
    print(json.dumps(report.to_json(), indent=2) if args.json else report.summary())
    folder_level = any(p.patient is None for p in report.problems)
    if report.problems and (folder_level or not args.skip_bad):
        return 1
    if args.datalist:
        good = [p for p in report.patients if p.id not in report.bad_patients]
        if Path(args.datalist).resolve().is_relative_to(Path(args.dataset_dir).resolve()):
            print(
                f"error: --datalist {args.datalist} lies inside the dataset folder; write it elsewhere.",
                file=sys.stderr,
            )
            return 2
        fractions = {"training": 1 - args.val - args.test, "validation": args.val, "testing": args.test}
        try:
            splits = split_patients(good, fractions, seed=args.seed)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        path = write_datalist(make_datalist(good, args.dataset_dir, splits), args.datalist)
        sizes = ", ".join(f"{k} {len(v)}" for k, v in splits.items())
        print(f"datalist written to {path} (patients: {sizes})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
