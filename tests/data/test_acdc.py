"""Reader, datalists and splits (acdc_wsss.data.acdc)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from monai.data import load_decathlon_datalist

from acdc_wsss.data.acdc import (
    ACDC_GROUPS,
    DatasetError,
    Frame,
    Patient,
    find_patient_dirs,
    make_datalist,
    parse_info_cfg,
    read_datalist,
    read_patients,
    split_patients,
    write_datalist,
)


def _fake_patients(n_per_group: int, groups=ACDC_GROUPS, subset: str = "training") -> list[Patient]:
    out = []
    for g_i, g in enumerate(groups):
        for k in range(n_per_group):
            pid = f"patient{g_i * n_per_group + k + 1:03d}"
            out.append(Patient(pid, subset, Path(pid), {"Group": g}, ()))
    return out


def test_parse_info_cfg_types(tmp_path: Path) -> None:
    cfg = tmp_path / "Info.cfg"
    cfg.write_text("ED: 1\nES: 12\nGroup: DCM\nHeight: 184.0\nNbFrame: 30\nWeight: 95.0\nExtra: x\n")
    info = parse_info_cfg(cfg)
    assert info == {
        "ED": 1,
        "ES": 12,
        "Group": "DCM",
        "Height": 184.0,
        "NbFrame": 30,
        "Weight": 95.0,
        "Extra": "x",
    }
    assert isinstance(info["ED"], int) and isinstance(info["Height"], float)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("ES: 12\nGroup: DCM\nHeight: 1\nNbFrame: 30\nWeight: 9\n", "missing key(s) ED"),
        ("ED: one\nES: 12\nGroup: DCM\nHeight: 1\nNbFrame: 30\nWeight: 9\n", "ED must be int"),
        ("ED: 1.5\nES: 12\nGroup: DCM\nHeight: 1\nNbFrame: 30\nWeight: 9\n", "integer frame number"),
        ("ED 1\n", "line 1 is not 'Key: value'"),
    ],
)
def test_parse_info_cfg_errors_name_the_file(tmp_path: Path, text: str, fragment: str) -> None:
    cfg = tmp_path / "Info.cfg"
    cfg.write_text(text)
    with pytest.raises(DatasetError) as e:
        parse_info_cfg(cfg)
    assert str(cfg) in str(e.value) and fragment in str(e.value)


def test_missing_folder_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        find_patient_dirs(tmp_path / "nope")
    with pytest.raises(DatasetError, match="no patient folders"):
        find_patient_dirs(tmp_path)


def test_reader_on_real_acdc(acdc_dir: Path) -> None:
    patients = read_patients(acdc_dir)
    assert len(patients) == 80
    assert Counter(p.group for p in patients) == {g: 16 for g in ACDC_GROUPS}
    p1 = next(p for p in patients if p.id == "patient001")
    assert (p1.frame("ED").index, p1.frame("ES").index) == (1, 12)
    assert p1.info["NbFrame"] == 30 and p1.info["Height"] == 184.0
    assert p1.frame("ES").label == acdc_dir / "training/patient001/patient001_frame12_gt.nii.gz"
    assert all(p.has_labels and p.cine is None and p.subset == "training" for p in patients)


def test_reader_on_phantom(phantom_dir: Path) -> None:
    patients = read_patients(phantom_dir)
    assert [p.id for p in patients] == [f"patient{i:03d}" for i in range(1, 6)]
    assert {p.group for p in patients} == set(ACDC_GROUPS)
    for p in patients:
        assert [f.phase for f in p.frames] == ["ED", "ES"]
        assert all(f.image.is_file() and f.label is not None and f.label.is_file() for f in p.frames)


def test_testing_subset_without_gt(tmp_path: Path) -> None:
    folder = tmp_path / "testing" / "patient101"
    folder.mkdir(parents=True)
    (folder / "Info.cfg").write_text("ED: 1\nES: 9\nGroup: NOR\nHeight: 170\nNbFrame: 20\nWeight: 70\n")
    for f in (1, 9):
        (folder / f"patient101_frame{f:02d}.nii.gz").write_bytes(b"")
    (folder / "patient101_4d.nii.gz").write_bytes(b"")
    (p,) = read_patients(tmp_path)
    assert p.subset == "testing" and not p.has_labels and p.cine == folder / "patient101_4d.nii.gz"
    dl = make_datalist([p], tmp_path)
    ed = dl["training"][0]
    assert "label" not in ed and ed["pair"] == "testing/patient101/patient101_frame09.nii.gz"
    assert ed["cine"] == "testing/patient101/patient101_4d.nii.gz"


def test_split_stratified_disjoint_seeded() -> None:
    patients = _fake_patients(16)
    s = split_patients(patients, {"training": 0.8, "testing": 0.2}, seed=3)
    assert (len(s["training"]), len(s["testing"])) == (64, 16)
    assert not set(s["training"]) & set(s["testing"])
    assert sorted(s["training"] + s["testing"]) == sorted(p.id for p in patients)
    group = {p.id: p.group for p in patients}
    per_group = Counter(group[i] for i in s["testing"])
    assert set(per_group) == set(ACDC_GROUPS) and all(3 <= n <= 4 for n in per_group.values())
    assert split_patients(patients, {"training": 0.8, "testing": 0.2}, seed=3) == s
    assert split_patients(patients, {"training": 0.8, "testing": 0.2}, seed=4) != s


def test_split_three_ways_and_official_testing_patients() -> None:
    train = _fake_patients(4)
    official = [Patient("patient101", "testing", Path("x"), {"Group": "NOR"}, ())]
    s = split_patients(train + official, seed=0)
    assert [len(s[k]) for k in ("training", "validation", "testing")] == [12, 4, 5]
    assert "patient101" in s["testing"]
    assert len(set(s["training"]) | set(s["validation"]) | set(s["testing"])) == 21
    with pytest.raises(ValueError, match="sum to 1"):
        split_patients(train, {"training": 0.5, "testing": 0.2})


def test_datalist_round_trip_and_monai_reader(acdc_dir: Path, tmp_path: Path) -> None:
    patients = read_patients(acdc_dir)[:10]
    splits = split_patients(patients, {"training": 0.6, "validation": 0.2, "testing": 0.2}, seed=0)
    dl = make_datalist(patients, acdc_dir, splits)
    assert dl["classes"] == ["RV", "Myo", "LV"]
    assert sum(len(dl[k]) for k in splits) == 20  # two frames per patient
    path = write_datalist(dl, tmp_path / "out" / "datalist.json")
    assert json.loads(path.read_text())["base_dir"] == str(acdc_dir.resolve())
    ours = read_datalist(path, "validation")
    monai_items = load_decathlon_datalist(path, data_list_key="validation", base_dir=acdc_dir.resolve())
    assert [i["image"] for i in ours] == [i["image"] for i in monai_items]
    assert [i["label"] for i in ours] == [i["label"] for i in monai_items]
    assert all(Path(i["image"]).is_file() and Path(i["pair"]).is_file() for i in ours)
    ed = next(i for i in ours if i["phase"] == "ED")
    es = next(i for i in ours if i["phase"] == "ES" and i["patient"] == ed["patient"])
    assert ed["pair"] == es["image"] and es["pair"] == ed["image"]
    with pytest.raises(DatasetError, match="no split 'nope'"):
        read_datalist(path, "nope")


def test_datalist_refuses_patient_in_two_splits() -> None:
    p = Patient("patient001", "training", Path("/d/training/patient001"), {"Group": "NOR"}, ())
    frames = (Frame("ED", 1, Path("/d/training/patient001/patient001_frame01.nii.gz"), None),)
    p = Patient(p.id, p.subset, p.folder, p.info, frames)
    with pytest.raises(DatasetError, match="in both splits"):
        make_datalist([p], "/d", {"training": ["patient001"], "testing": ["patient001"]})
    with pytest.raises(DatasetError, match="not among the patients"):
        make_datalist([p], "/d", {"training": ["patient002"]})


def test_symlinked_dataset_gives_plain_paths(phantom_dir: Path, tmp_path: Path) -> None:
    import shutil

    real = tmp_path / "store" / "acdc"
    shutil.copytree(phantom_dir, real)
    outside = tmp_path / "elsewhere" / "patient005"  # a patient folder that is itself a symlink
    shutil.move(real / "training" / "patient005", outside)
    (real / "training" / "patient005").symlink_to(outside)
    link = tmp_path / "links" / "a" / "b" / "acdc"
    link.parent.mkdir(parents=True)
    link.symlink_to(real)
    datalist = make_datalist(read_patients(link), link)
    assert datalist["base_dir"] == str(real.resolve())
    stored = [it[k] for it in datalist["training"] for k in ("image", "label", "pair") if k in it]
    inside = [p for p in stored if not p.startswith("patient005") and "patient005" not in p]
    assert inside and all(p.startswith("training/patient00") and ".." not in p for p in inside)
    assert {p for p in stored if "patient005" in p} == {
        str(f.resolve()) for f in outside.glob("*.nii.gz") if "_4d" not in f.name
    }
    path = write_datalist(datalist, tmp_path / "datalist.json")
    for it in read_datalist(path, "training"):
        assert ".." not in it["image"] and Path(it["image"]).is_file() and Path(it["image"]).is_absolute()
