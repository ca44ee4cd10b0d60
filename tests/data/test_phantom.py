"""Tests of the synthetic ACDC-like phantom (acdc_wsss.data.phantom)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

import acdc_wsss.data.phantom as phantom
from acdc_wsss.data.phantom import CLASS_NAMES, GROUPS, PHANTOM_VERSION, ensure_phantom, main, make_phantom

INFO_KEYS = ("ED", "ES", "Group", "Height", "NbFrame", "Weight")
LABELS = {name: i + 1 for i, name in enumerate(CLASS_NAMES)}
N_PATIENTS = len(GROUPS)


def _info(folder: Path) -> dict[str, str]:
    lines = (folder / "Info.cfg").read_text(encoding="utf-8").splitlines()
    pairs = [line.split(":", 1) for line in lines if line.strip()]
    return {k.strip(): v.strip() for k, v in pairs}


def _frames(folder: Path) -> dict[str, tuple[Path, Path]]:
    """``{"ED": (image, gt), "ES": (image, gt)}`` of a patient folder, from its Info.cfg."""
    info = _info(folder)
    out = {}
    for phase in ("ED", "ES"):
        stem = folder / f"{folder.name}_frame{int(info[phase]):02d}"
        out[phase] = (stem.with_name(stem.name + ".nii.gz"), stem.with_name(stem.name + "_gt.nii.gz"))
    return out


def _load(path: Path) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Image]:
    img = nib.load(str(path))
    return np.asanyarray(img.dataobj), img.affine, img


def _patients(root: Path) -> list[Path]:
    return sorted((root / "training").glob("patient*"))


def _heart_slices(gt: np.ndarray) -> list[int]:
    return [z for z in range(gt.shape[2]) if gt[:, :, z].any()]


def _no_tmp_siblings(out: Path) -> bool:
    return not [p for p in out.parent.iterdir() if p.name.startswith(out.name + ".")]


@pytest.fixture(scope="module")
def phantom5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_phantom(
        tmp_path_factory.mktemp("ph") / "phantom", patients=N_PATIENTS, seed=0, progress=False
    )


def test_layout(phantom5: Path) -> None:
    folders = _patients(phantom5)
    assert [f.name for f in folders] == [f"patient{i:03d}" for i in range(1, N_PATIENTS + 1)]
    groups = set()
    for folder in folders:
        info = _info(folder)
        assert tuple(info) == INFO_KEYS
        assert int(info["ED"]) == 1
        assert 8 <= int(info["ES"]) <= 15
        assert 20 <= int(info["NbFrame"]) <= 30
        assert 150.0 <= float(info["Height"]) <= 195.0
        assert 50.0 <= float(info["Weight"]) <= 110.0
        groups.add(info["Group"])
        for image, gt in _frames(folder).values():
            assert image.is_file() and gt.is_file()
        assert len(list(folder.glob("*.nii.gz"))) == 4
    assert groups == set(GROUPS)
    params = json.loads((phantom5 / "phantom.json").read_text(encoding="utf-8"))
    assert (params["patients"], params["seed"], params["version"]) == (N_PATIENTS, 0, PHANTOM_VERSION)
    assert params["description"]
    assert _no_tmp_siblings(phantom5)


def test_volumes_geometry_and_types(phantom5: Path) -> None:
    for folder in _patients(phantom5):
        affines = []
        shape = None
        for image_path, gt_path in _frames(folder).values():
            image, a_img, img = _load(image_path)
            gt, a_gt, _ = _load(gt_path)
            assert image.dtype == np.int16 and img.get_data_dtype() == np.int16
            assert gt.dtype == np.uint8
            assert image.ndim == 3 and image.shape == gt.shape
            assert shape is None or image.shape == shape
            shape = image.shape
            assert set(np.unique(gt).tolist()) == set(range(len(CLASS_NAMES) + 1))  # every class present
            assert image.min() >= 0 and 200 <= image.max() <= 4000
            affines += [a_img, a_gt]
            spacing = np.linalg.norm(a_img[:3, :3], axis=0)
            np.testing.assert_allclose(spacing, img.header.get_zooms()[:3], rtol=1e-5)
            assert spacing[0] == pytest.approx(spacing[1], rel=1e-5)
            assert 1.2 <= spacing[0] <= 1.9 and 5.0 <= spacing[2] <= 10.0
            assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1
        assert all(np.array_equal(a, affines[0]) for a in affines)
        off_diagonal = affines[0][:3, :3] - np.diag(np.diag(affines[0][:3, :3]))
        assert np.abs(off_diagonal).max() > 1e-2  # oblique
        nx, ny, nz = shape
        assert 150 <= nx <= 260 and 150 <= ny <= 260 and nx != ny and 8 <= nz <= 12


def test_anatomy_phases_and_extent(phantom5: Path) -> None:
    for folder in _patients(phantom5):
        frames = {phase: (_load(i)[0], _load(g)[0]) for phase, (i, g) in _frames(folder).items()}
        gt_ed, gt_es = frames["ED"][1], frames["ES"][1]
        assert (gt_es == LABELS["LV"]).sum() < (gt_ed == LABELS["LV"]).sum(), folder.name
        for gt in (gt_ed, gt_es):
            zs = _heart_slices(gt)
            assert zs == list(range(zs[0], zs[-1] + 1))  # contiguous
            assert zs[0] > 0 or zs[-1] < gt.shape[2] - 1  # a label-free slice above or below the heart
            rv_area = [(gt[:, :, z] == LABELS["RV"]).sum() for z in zs]
            assert rv_area[0] > 0 and rv_area[-1] < rv_area[0]
            assert rv_area[-1] == 0  # no RV in the most apical heart slice
        # The heart stays in place between ED and ES (the pipeline locates it from |ED - ES|).
        spacing = np.linalg.norm(_load(_frames(folder)["ED"][1])[1][:3, :3], axis=0)[0]
        c_ed = np.array(ndimage.center_of_mass(gt_ed == LABELS["LV"]))
        c_es = np.array(ndimage.center_of_mass(gt_es == LABELS["LV"]))
        assert np.linalg.norm((c_ed - c_es)[:2]) * spacing < 5.0
        diff = np.abs(frames["ED"][0].astype(np.float32) - frames["ES"][0])
        heart = ndimage.binary_dilation((gt_ed > 0) | (gt_es > 0), iterations=3)
        assert diff[heart].mean() > 2 * diff[~heart].mean()


def test_myo_surrounds_lv_and_rv_touches_myo(phantom5: Path) -> None:
    for folder in _patients(phantom5):
        for _, gt_path in _frames(folder).values():
            gt = _load(gt_path)[0]
            zs = _heart_slices(gt)
            sl = gt[:, :, zs[len(zs) // 3]]
            lv, myo, rv = (sl == LABELS[c] for c in ("LV", "Myo", "RV"))
            assert lv.any() and myo.any() and rv.any()
            ring = ndimage.binary_dilation(lv) & ~(lv | myo)
            assert ring.sum() <= 2, folder.name
            assert (ndimage.binary_dilation(rv) & myo).sum() > 5
            assert not (ndimage.binary_dilation(rv) & lv).any()


def test_rv_lies_on_the_same_side_of_the_lv_in_every_patient(tmp_path: Path) -> None:
    """As in the real scans: the RV's direction from the LV on the voxel grid varies (the body turns with
    the image's shape), but always within a half-plane, so a run can learn the side its patients share."""
    root = make_phantom(tmp_path / "ph", patients=12, seed=3, progress=False)
    angles, tall = [], []
    for folder in _patients(root):
        gt = _load(sorted(folder.glob("*_frame01_gt.nii.gz"))[0])[0]
        d = np.argwhere(gt == LABELS["RV"]).mean(0) - np.argwhere(gt == LABELS["LV"]).mean(0)
        angles.append(np.arctan2(d[0], d[1]))
        tall.append(gt.shape[1] > gt.shape[0])
    assert any(tall) and not all(tall)  # both shapes drawn, so both body turns are seen
    mean = np.angle(np.mean(np.exp(1j * np.array(angles))))
    off = np.degrees(np.abs(np.angle(np.exp(1j * (np.array(angles) - mean)))))
    assert off.max() < 90.0, off


def test_appearance_is_mri_like(phantom5: Path) -> None:
    for folder in _patients(phantom5):
        image_path, gt_path = _frames(folder)["ED"]
        image, gt = _load(image_path)[0].astype(np.float64), _load(gt_path)[0]
        mean = {c: image[gt == LABELS[c]].mean() for c in CLASS_NAMES}
        assert mean["LV"] > 2 * mean["Myo"] and mean["RV"] > 2 * mean["Myo"]  # bright blood, dark muscle
        assert np.percentile(image, 5) < 0.15 * mean["LV"]  # air and lungs are dark
        assert image[gt == 0].std() > 0.1 * mean["LV"]  # there is anatomy around the heart
        assert np.unique(image[gt == 0][:5000]).size > 20  # noisy, not piecewise constant


def test_determinism_and_patient_independence(tmp_path: Path) -> None:
    two = make_phantom(tmp_path / "two", patients=2, seed=0, progress=False)
    three = make_phantom(tmp_path / "three", patients=3, seed=0, progress=False)
    other = make_phantom(tmp_path / "other", patients=1, seed=1, progress=False)
    for folder in _patients(two):
        same = three / "training" / folder.name
        assert _info(folder) == _info(same)
        for (i2, g2), (i3, g3) in zip(_frames(folder).values(), _frames(same).values(), strict=True):
            for a, b in ((i2, i3), (g2, g3)):
                da, aa, _ = _load(a)
                db, ab, _ = _load(b)
                assert np.array_equal(da, db) and np.array_equal(aa, ab)
    img0 = _load(_frames(two / "training" / "patient001")["ED"][0])[0]
    img1 = _load(_frames(other / "training" / "patient001")["ED"][0])[0]
    assert img0.shape != img1.shape or not np.array_equal(img0, img1)


def test_existing_folder_and_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "ph"
    out.mkdir()
    keep = out / "keep.txt"
    keep.write_text("mine", encoding="utf-8")
    with pytest.raises(FileExistsError, match="overwrite") as err:
        make_phantom(out, patients=1, progress=False)
    assert str(out) in str(err.value)
    assert keep.read_text(encoding="utf-8") == "mine" and sorted(out.iterdir()) == [keep]
    assert _no_tmp_siblings(out)
    make_phantom(out, patients=1, overwrite=True, progress=False)
    assert not keep.exists() and (out / "phantom.json").is_file()
    assert [p.name for p in _patients(out)] == ["patient001"]
    assert _no_tmp_siblings(out)


def test_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(phantom, "_write_patient", boom)
    out = tmp_path / "ph"
    with pytest.raises(RuntimeError):
        make_phantom(out, patients=1, progress=False)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert main(["--out", str(out), "--patients", "1", "--seed", "3", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert str(out.resolve()) in printed and "1 patient," in printed
    assert len(_frames(_patients(out)[0])) == 2
    assert json.loads((out / "phantom.json").read_text(encoding="utf-8"))["seed"] == 3

    assert main(["--out", str(out), "--patients", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert main(["--out", str(tmp_path / "x"), "--patients", "0"]) == 2
    assert capsys.readouterr().err.startswith("error:")
    assert not (tmp_path / "x").exists()


def test_ensure_phantom(tmp_path: Path) -> None:
    out = tmp_path / "ph"
    assert ensure_phantom(out, patients=1, seed=0, progress=False) == out
    probe = _frames(out / "training" / "patient001")["ED"][0]
    stat = probe.stat()
    ensure_phantom(out, patients=1, seed=0, progress=False)  # same parameters: reused
    assert probe.stat().st_mtime_ns == stat.st_mtime_ns and probe.stat().st_ino == stat.st_ino

    ensure_phantom(out, patients=2, seed=0, progress=False)  # other parameters: regenerated
    assert json.loads((out / "phantom.json").read_text(encoding="utf-8"))["patients"] == 2
    assert len(_patients(out)) == 2
    assert probe.stat().st_ino != stat.st_ino or probe.stat().st_mtime_ns != stat.st_mtime_ns
    assert _no_tmp_siblings(out)

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.txt").write_text("x", encoding="utf-8")
    with pytest.raises(FileExistsError):
        ensure_phantom(foreign, patients=1, progress=False)
    assert (foreign / "data.txt").read_text(encoding="utf-8") == "x"
