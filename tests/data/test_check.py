"""Integrity check (acdc_wsss.data.check): a clean real data set, and every planted problem listed at once."""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from acdc_wsss.data.check import DatasetCheckError, check_dataset, main, validated_patients
from tests.commands import run_command


def test_real_acdc_is_clean(acdc_dir: Path) -> None:
    report = check_dataset(acdc_dir, progress=False)
    assert report.ok, report.summary()
    assert (len(report.patients), report.volumes) == (80, 160)
    assert 1500 <= report.slices <= 1600
    assert "80 patients" in report.summary() and "no problem found" in report.summary()


def _frame(folder: Path, n: int, gt: bool = False) -> Path:
    return folder / f"{folder.name}_frame{n:02d}{'_gt' if gt else ''}.nii.gz"


def _save(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(data, affine), path)


@pytest.fixture
def corrupted(acdc_dir: Path, tmp_path: Path) -> tuple[Path, dict[str, tuple[Path, str]]]:
    """A copy of 11 real patients with one planted problem in each of the first 10."""
    root = tmp_path / "acdc"
    src = sorted((acdc_dir / "training").iterdir())[:11]
    for s in src:
        shutil.copytree(s, root / "training" / s.name)
    p = [root / "training" / s.name for s in src]
    info = {
        d.name: dict(line.split(": ") for line in (d / "Info.cfg").read_text().split("\n") if line) for d in p
    }
    ed = {d.name: int(info[d.name]["ED"]) for d in p}
    es = {d.name: int(info[d.name]["ES"]) for d in p}
    planted: dict[str, tuple[Path, str]] = {}

    def plant(d: Path, path: Path, fragment: str) -> None:
        planted[d.name] = (path, fragment)

    # 0: missing ES frame
    _frame(p[0], es[p[0].name]).unlink()
    plant(p[0], _frame(p[0], es[p[0].name]), "missing; Info.cfg names frame")
    # 1: missing ED ground truth
    _frame(p[1], ed[p[1].name], gt=True).unlink()
    plant(p[1], _frame(p[1], ed[p[1].name], gt=True), "missing ground truth")
    # 2: truncated .nii.gz
    f = _frame(p[2], ed[p[2].name])
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    plant(p[2], f, "unreadable or truncated")
    # 3: gt of the wrong shape
    f = _frame(p[3], ed[p[3].name], gt=True)
    g = nib.load(f)
    _save(f, np.asarray(g.dataobj)[:-5], g.affine)
    plant(p[3], f, "differs from its image's")
    # 4: gt with another affine
    f = _frame(p[4], es[p[4].name], gt=True)
    g = nib.load(f)
    aff = g.affine.copy()
    aff[0, 3] += 12.0
    _save(f, np.asarray(g.dataobj), aff)
    plant(p[4], f, "affine differs")
    # 5: a 4D image where a 3D frame is expected
    f = _frame(p[5], ed[p[5].name])
    g = nib.load(f)
    _save(f, np.stack([np.asarray(g.dataobj)] * 2, axis=-1), g.affine)
    plant(p[5], f, "has 4 dimensions")
    # 6: label value 7
    f = _frame(p[6], ed[p[6].name], gt=True)
    g = nib.load(f)
    arr = np.asarray(g.dataobj).copy()
    arr[0, 0, 0] = 7
    _save(f, arr, g.affine)
    plant(p[6], f, "label values 7 outside {0, 1, 2, 3}")
    # 7: Info.cfg without ED
    cfg = p[7] / "Info.cfg"
    cfg.write_text("\n".join(line for line in cfg.read_text().split("\n") if not line.startswith("ED")))
    plant(p[7], cfg, "missing key(s) ED")
    # 8: Info.cfg naming a frame that is not there
    cfg = p[8] / "Info.cfg"
    cfg.write_text(cfg.read_text().replace(f"ES: {es[p[8].name]}", "ES: 5"))
    plant(p[8], _frame(p[8], 5), "missing; Info.cfg names frame 5 as ES")
    # 9: empty folder
    shutil.rmtree(p[9])
    p[9].mkdir()
    plant(p[9], p[9], "empty folder")
    return root, planted


def test_every_planted_problem_is_listed(corrupted) -> None:
    root, planted = corrupted
    report = check_dataset(root, progress=False)
    assert not report.ok
    assert report.bad_patients == set(planted)
    for pid, (path, fragment) in planted.items():
        mine = [p for p in report.problems if p.patient == pid]
        assert any(p.path == path and fragment in p.message for p in mine), (pid, fragment, mine)
    summary = report.summary()
    for path, _ in planted.values():
        assert str(path) in summary


def test_cli_exit_status_and_skip_bad(corrupted, acdc_dir: Path, capsys, tmp_path: Path) -> None:
    root, planted = corrupted
    assert main([str(root)]) == 1
    out = capsys.readouterr().out
    assert f"problem(s) in {len(planted)} patient(s)" in out
    assert all(str(path) in out for path, _ in planted.values())
    assert main([str(root), "--skip-bad", "--datalist", str(tmp_path / "dl.json")]) == 0
    assert (tmp_path / "dl.json").is_file()
    assert main([str(acdc_dir), "--quick"]) == 0
    assert main([str(root / "training" / "missing")]) == 1
    # never write into the user's dataset folder
    assert main([str(acdc_dir), "--quick", "--datalist", str(acdc_dir / "dl.json")]) == 2
    assert not (acdc_dir / "dl.json").exists()


def test_validated_patients_refuses_or_skips(corrupted, caplog) -> None:
    root, planted = corrupted
    with pytest.raises(DatasetCheckError) as e:
        validated_patients(root, progress=False)
    assert all(str(path) in str(e.value) for path, _ in planted.values())
    assert "skip_bad=True" in str(e.value)
    with caplog.at_level(logging.WARNING):
        good = validated_patients(root, skip_bad=True, progress=False)
    assert [p.id for p in good] == [sorted(root.glob("training/*"))[-1].name]
    assert sum("skipping" in r.message for r in caplog.records) == len(planted)


def test_missing_and_empty_dataset_folder(tmp_path: Path) -> None:
    for folder in (tmp_path / "absent", tmp_path):
        report = check_dataset(folder, progress=False)
        assert len(report.problems) == 1 and report.problems[0].path == folder
        with pytest.raises(DatasetCheckError):
            validated_patients(folder, skip_bad=True, progress=False)


def test_quick_mode_skips_voxels_but_catches_headers(corrupted) -> None:
    root, _ = corrupted
    quick = check_dataset(root, deep=False, progress=False)
    label7 = sorted(root.glob("training/*"))[6].name
    assert label7 not in quick.bad_patients  # label values need the voxels
    assert sorted(root.glob("training/*"))[3].name in quick.bad_patients  # shape is in the header


def test_module_command_runs_cleanly(acdc_dir: Path) -> None:
    run = run_command([sys.executable, "-m", "acdc_wsss.data.check", str(acdc_dir), "--quick"])
    assert run.returncode == 0, run.stderr
    assert "80 patients (80 training), 160 volumes" in run.stdout
    assert "RuntimeWarning" not in run.stderr and "Traceback" not in run.stderr


def test_non_finite_image_is_refused_and_constant_image_warned(phantom_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "acdc"
    shutil.copytree(phantom_dir, root)
    first, second = sorted((root / "training").iterdir())[:2]
    nan_frame = sorted(first.glob("*_frame??.nii.gz"))[0]
    img = nib.load(nan_frame)
    arr = np.asarray(img.dataobj).astype(np.float32)
    arr[0, 0, :3] = np.nan
    arr[1, 0, 0] = np.inf
    _save(nan_frame, arr, img.affine)
    flat_frame = sorted(second.glob("*_frame??.nii.gz"))[0]
    _save(flat_frame, np.zeros(nib.load(flat_frame).shape, np.float32), nib.load(flat_frame).affine)
    report = check_dataset(root, progress=False)
    assert [(p.path, p.patient) for p in report.problems] == [(nan_frame, first.name)]
    assert "4 of" in report.problems[0].message and "not finite" in report.problems[0].message
    assert [w.path for w in report.warnings] == [flat_frame] and "constant image" in report.summary()
    with pytest.raises(DatasetCheckError, match=rf"{nan_frame.name}: 4 of [\d,]+ voxels are not finite"):
        validated_patients(root, progress=False)
