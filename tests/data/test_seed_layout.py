"""The ``imagesTr/`` layout (Decathlon style) read like the ACDC one, on a copy of real patients."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from acdc_wsss.data.acdc import make_datalist, read_patients
from acdc_wsss.data.check import check_dataset, validated_patients
from acdc_wsss.data.slices import SliceDataset
from acdc_wsss.errors import DatasetError

IDS = ("patient001", "patient022", "patient043", "patient064")


@pytest.fixture
def seed(acdc_dir: Path, tmp_path: Path) -> Path:
    """Four real patients as imagesTr/labelsTr (copies of the shared files); patient001 and patient043
    keep their Info.cfg beside their frames, the others have none. One more patient in imagesTs, maskless."""
    root = tmp_path / "seed"
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (root / sub).mkdir(parents=True)
    for i, pid in enumerate(IDS):
        src = acdc_dir / "training" / pid
        for image in sorted(src.glob(f"{pid}_frame??.nii.gz")):
            shutil.copy(image, root / "imagesTr" / image.name)
            shutil.copy(src / image.name.replace(".nii.gz", "_gt.nii.gz"), root / "labelsTr" / image.name)
        if i % 2 == 0:
            shutil.copy(src / "Info.cfg", root / "imagesTr" / f"{pid}_Info.cfg")
    for image in sorted((acdc_dir / "training" / "patient085").glob("patient085_frame??.nii.gz")):
        shutil.copy(image, root / "imagesTs" / image.name)
    return root


def test_same_patients_frames_and_groups_as_the_acdc_layout(seed: Path, acdc_dir: Path) -> None:
    reference = {p.id: p for p in read_patients(acdc_dir)}
    patients = {p.id: p for p in validated_patients(seed, progress=False)}
    assert sorted(patients) == [*IDS, "patient085"]
    for pid in IDS:
        got, want = patients[pid], reference[pid]
        assert got.subset == "training" and got.has_labels
        assert [(f.phase, f.index) for f in got.frames] == [(f.phase, f.index) for f in want.frames]
        for f, g in zip(got.frames, want.frames, strict=True):
            assert (
                f.image.read_bytes() == g.image.read_bytes() and f.label.read_bytes() == g.label.read_bytes()
            )
        assert got.group == (want.group if pid in ("patient001", "patient043") else "unknown")
    test = patients["patient085"]
    assert test.subset == "testing" and not test.has_labels
    assert test.frame("ED").index < test.frame("ES").index  # no Info.cfg: the earlier frame is ED


def test_datalist_and_preprocessing_read_it(seed: Path) -> None:
    patients = validated_patients(seed, progress=False)
    datalist = make_datalist(patients, seed, {"training": list(IDS[:1])})
    ed, es = datalist["training"]
    assert (
        ed["image"] == "imagesTr/patient001_frame01.nii.gz"
        and ed["label"] == "labelsTr/patient001_frame01.nii.gz"
    )
    assert ed["pair"] == es["image"] and es["pair"] == ed["image"] and ed["phase"] == "ED"
    items = [{**it, **{k: str(seed / it[k]) for k in ("image", "label", "pair")}} for it in (ed, es)]
    ds = SliceDataset(items, progress=False, num_workers=0)
    ref = np.asarray(nib.load(seed / "labelsTr" / "patient001_frame01.nii.gz").dataobj)
    assert ds.volumes[0]["image"].shape[-1] == ref.shape[-1]
    assert ds.tags()[: ref.shape[-1], 2].tolist() == [
        float((ref[..., z] == 3).any()) for z in range(ref.shape[-1])
    ]


def test_integrity_check_names_a_planted_fault(seed: Path) -> None:
    bad = seed / "labelsTr" / "patient022_frame01.nii.gz"
    img = nib.load(bad)
    data = np.asarray(img.dataobj)
    nib.save(nib.Nifti1Image(data[:-4], img.affine), bad)  # a mask of another shape
    report = check_dataset(seed, progress=False)
    assert not report.ok and report.bad_patients == {"patient022"}
    assert any(p.path == bad for p in report.problems), [str(p) for p in report.problems]
    (seed / "labelsTr" / "patient043_frame01.nii.gz").unlink()
    missing = check_dataset(seed, progress=False)
    assert any("missing ground truth" in str(p) and "patient043" in str(p) for p in missing.problems)


def test_refusals_name_the_files(seed: Path, acdc_dir: Path) -> None:
    extra = acdc_dir / "training" / "patient022" / "patient022_frame01.nii.gz"
    os.symlink(extra, seed / "imagesTr" / "patient022_frame05.nii.gz")  # three frames, no Info.cfg
    report = check_dataset(seed, progress=False)
    assert report.bad_patients == {"patient022"}
    assert any("3 frame(s)" in str(p) and "Info.cfg" in str(p) for p in report.problems)
    with pytest.raises(DatasetError, match="patient022 has 3 frame"):
        read_patients(seed)
    (seed / "imagesTr" / "patient022_frame05.nii.gz").unlink()
    os.symlink(extra, seed / "imagesTr" / "scan.nii.gz")
    with pytest.raises(DatasetError, match=r"scan.nii.gz: unexpected name"):
        read_patients(seed)
    (seed / "imagesTr" / "scan.nii.gz").unlink()
    os.symlink(extra, seed / "labelsTr" / "patient099_frame01.nii.gz")
    with pytest.raises(DatasetError, match=r"patient099_frame01\.nii\.gz: mask without its image"):
        validated_patients(seed, progress=False)


def test_stage_one_builds_its_data_from_it(seed: Path, tmp_path: Path) -> None:
    from acdc_wsss.l2g import L2GConfig
    from acdc_wsss.l2g.data import prepare_data
    from acdc_wsss.layout import RunLayout

    cfg = L2GConfig(dataset_dir=str(seed), output_dir=str(tmp_path / "run"), progress=False)
    _, splits, train, _ = prepare_data(cfg)
    assert "patient085" in splits["testing"]  # imagesTs, as ACDC's testing/: never trained on
    assert {pid for ids in splits.values() for pid in ids} == {*IDS, "patient085"}
    items = RunLayout(tmp_path / "run").split("training")
    assert items and all("/imagesTr/" in it["image"] and "/labelsTr/" in it["label"] for it in items)
    assert len(train) == sum(v["image"].shape[-1] for v in train.volumes) and train.tags().sum() > 0
