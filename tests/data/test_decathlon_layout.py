"""The Decathlon-style layout (imagesTr/, labelsTr/, imagesTs/) read into the same patients as the ACDC
layout, on a copy of real ACDC patients (acdc_wsss.data.acdc, acdc_wsss.data.check)."""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from acdc_wsss.data.acdc import (
    DatasetError,
    make_datalist,
    read_datalist,
    read_patients,
    split_patients,
    write_datalist,
)
from acdc_wsss.data.check import DatasetCheckError, check_dataset, main, validated_patients
from acdc_wsss.data.slices import SliceDataset

#: subset -> {patient: whether its Info.cfg is copied as patientXXX_Info.cfg}. patient090 is the one real
#: patient whose ED is not frame 1 (ED 4, ES 11): without Info.cfg the earlier frame must still be ED.
TREE = {
    "training": {"patient001": True, "patient021": True, "patient041": False, "patient090": False},
    "testing": {"patient061": True, "patient081": False},
}
IMAGES = {"training": "imagesTr", "testing": "imagesTs"}


@pytest.fixture
def tree(acdc_dir: Path, tmp_path: Path) -> Path:
    """Six real patients in the Decathlon-style layout: frames copied to imagesTr/ (masks to labelsTr/ under
    the image's name) or imagesTs/ (no masks); Info.cfg copied for half of them."""
    root = tmp_path / "flat"
    for subset, patients in TREE.items():
        (root / IMAGES[subset]).mkdir(parents=True)
        for pid, with_cfg in patients.items():
            src = acdc_dir / "training" / pid
            for f in src.glob(f"{pid}_frame[0-9][0-9].nii.gz"):
                shutil.copyfile(f, root / IMAGES[subset] / f.name)
                if subset == "training":
                    (root / "labelsTr").mkdir(exist_ok=True)
                    shutil.copyfile(
                        f.with_name(f.name.replace(".nii.gz", "_gt.nii.gz")), root / "labelsTr" / f.name
                    )
            if with_cfg:
                shutil.copyfile(src / "Info.cfg", root / IMAGES[subset] / f"{pid}_Info.cfg")
    return root


def test_same_patients_frames_and_groups_as_the_acdc_layout(tree: Path, acdc_dir: Path) -> None:
    flat = {p.id: p for p in read_patients(tree)}
    acdc = {p.id: p for p in read_patients(acdc_dir)}
    assert sorted(flat) == sorted(pid for patients in TREE.values() for pid in patients)
    for subset, patients in TREE.items():
        for pid, with_cfg in patients.items():
            p, ref = flat[pid], acdc[pid]
            assert p.subset == subset
            assert [(f.phase, f.index, f.image.name) for f in p.frames] == [
                (f.phase, f.index, f.image.name) for f in ref.frames
            ]
            assert (p.group, p.info) == ((ref.group, ref.info) if with_cfg else ("unknown", {}))
            assert p.folder == tree / IMAGES[subset]
            if subset == "training":
                assert [f.label for f in p.frames] == [tree / "labelsTr" / f.image.name for f in p.frames]
            else:
                assert not any(f.label for f in p.frames) and not p.has_labels
    ed, es = flat["patient090"].frame("ED"), flat["patient090"].frame("ES")
    assert (ed.index, es.index) == (4, 11)  # no Info.cfg: the earlier frame is ED
    # the split still works with groups 'unknown'; imagesTs patients never reach training
    splits = split_patients(list(flat.values()), {"training": 0.5, "validation": 0.5})
    assert {"patient061", "patient081"} == set(splits["testing"])
    assert sorted(splits["training"] + splits["validation"]) == sorted(TREE["training"])


def test_datalist_items_point_at_the_right_files(tree: Path, acdc_dir: Path, tmp_path: Path) -> None:
    datalist = make_datalist(read_patients(tree), tree)
    items = {(it["patient"], it["phase"]): it for it in datalist["training"]}
    assert len(items) == 12
    assert items["patient090", "ED"] == {
        "image": "imagesTr/patient090_frame04.nii.gz",
        "label": "labelsTr/patient090_frame04.nii.gz",
        "pair": "imagesTr/patient090_frame11.nii.gz",
        "patient": "patient090",
        "frame": 4,
        "phase": "ED",
        "group": "unknown",
        "subset": "training",
    }
    assert items["patient061", "ES"]["image"] == "imagesTs/patient061_frame10.nii.gz"
    assert "label" not in items["patient061", "ES"] and items["patient061", "ES"]["group"] == "NOR"
    ref = {
        (it["patient"], it["phase"]): it
        for it in make_datalist(read_patients(acdc_dir), acdc_dir)["training"]
    }
    path = write_datalist(datalist, tmp_path / "datalist.json")
    for it in read_datalist(path):
        want = ref[it["patient"], it["phase"]]
        for key in ("image", "label", "pair"):
            if key in it:
                assert filecmp.cmp(it[key], Path(acdc_dir) / want[key], shallow=False), (it[key], key)


def test_integrity_check_passes_then_names_planted_faults(tree: Path, capsys) -> None:
    report = check_dataset(tree, progress=False)
    assert report.ok, report.summary()
    assert (len(report.patients), report.volumes) == (6, 12)
    assert report.to_json()["groups"] == {"DCM": 1, "HCM": 1, "NOR": 1, "unknown": 3}
    assert main([str(tree), "--quick"]) == 0
    # plant: a mask of another shape, a misnamed image, a mask without its image, a missing mask
    bad_shape = tree / "labelsTr" / "patient021_frame13.nii.gz"
    g = nib.load(bad_shape)
    nib.save(nib.Nifti1Image(np.asarray(g.dataobj)[:-5], g.affine), bad_shape)
    misnamed = tree / "imagesTr" / "patient041_frame01_0000.nii.gz"
    shutil.copyfile(tree / "imagesTr" / "patient041_frame01.nii.gz", misnamed)
    orphan = tree / "labelsTr" / "patient033_frame01.nii.gz"
    shutil.copyfile(tree / "labelsTr" / "patient001_frame01.nii.gz", orphan)
    missing = tree / "labelsTr" / "patient090_frame11.nii.gz"
    missing.unlink()
    planted = {
        "patient021": (bad_shape, "differs from its image's"),
        "patient041": (misnamed, "unexpected name; imagesTr/ holds only patientXXX_frameYY.nii.gz"),
        "patient033": (orphan, "mask without its image"),
        "patient090": (missing, "missing ground truth for the ES frame"),
    }
    report = check_dataset(tree, progress=False)
    assert report.bad_patients == set(planted)
    for pid, (path, fragment) in planted.items():
        assert any(p.path == path and fragment in p.message for p in report.problems if p.patient == pid), pid
    assert main([str(tree)]) == 1
    out = capsys.readouterr().out
    assert all(str(path) in out for path, _ in planted.values())
    # without masks required (inference) the missing mask is no fault; the others stay
    lenient = check_dataset(tree, progress=False, require_masks=False)
    assert lenient.bad_patients == set(planted) - {"patient090"}
    good = validated_patients(tree, skip_bad=True, progress=False)
    assert sorted(p.id for p in good) == ["patient001", "patient061", "patient081"]
    with pytest.raises(DatasetError, match=r"patient041_frame01_0000\.nii\.gz: unexpected name"):
        read_patients(tree)


def test_frame_count_without_info_cfg(tree: Path) -> None:
    images = tree / "imagesTr"
    cfg = images / "patient041_Info.cfg"
    third = images / "patient041_frame05.nii.gz"
    shutil.copyfile(images / "patient041_frame01.nii.gz", third)
    with pytest.raises(DatasetError) as e:
        read_patients(tree)
    msg = str(e.value)
    assert msg.startswith(f"{cfg}: missing") and "3 frame(s)" in msg
    assert all(f"patient041_frame{n:02d}.nii.gz" in msg for n in (1, 5, 11))
    report = check_dataset(tree, progress=False, deep=False)
    assert [(p.path, p.patient) for p in report.problems] == [(cfg, "patient041")]
    # with an Info.cfg naming ED and ES, the third frame is left out with a warning
    cfg.write_text("ED: 1\nES: 11\nGroup: MINF\nHeight: 170\nNbFrame: 20\nWeight: 70\n")
    report = check_dataset(tree, progress=False, deep=False)
    assert report.ok and [w.path for w in report.warnings] == [third]
    assert [f.index for f in next(p for p in report.patients if p.id == "patient041").frames] == [1, 11]
    # one frame alone, no Info.cfg
    (images / "patient090_frame11.nii.gz").unlink()
    (tree / "labelsTr" / "patient090_frame11.nii.gz").unlink()
    with pytest.raises(DatasetError, match=r"patient090_Info.cfg: missing, and patient090 has 1 frame\(s\)"):
        read_patients(tree)


def test_both_layouts_in_one_folder_are_refused(tree: Path) -> None:
    (tree / "training" / "patient002").mkdir(parents=True)
    with pytest.raises(DatasetError, match="keep one layout per dataset folder"):
        read_patients(tree)
    with pytest.raises(DatasetCheckError, match="keep one layout"):
        validated_patients(tree, progress=False)


def test_a_stage_reads_it(tree: Path) -> None:
    """What stage 1 and inference do with a dataset folder: check, split, datalist, slices; and the items of
    ``--infer_dataset_dir``."""
    from acdc_wsss.seg.infer import inference_items

    patients = validated_patients(tree, progress=False)
    datalist = make_datalist(patients, tree, split_patients(patients, {"training": 1.0}))
    item = next(it for it in datalist["training"] if it["patient"] == "patient090" and it["phase"] == "ED")
    item = {**item, **{k: str(tree / item[k]) for k in ("image", "label", "pair")}}
    ds = SliceDataset([item], progress=False)
    gt = np.asarray(nib.load(tree / "labelsTr" / "patient090_frame04.nii.gz").dataobj)
    assert len(ds) == gt.shape[-1]
    hand = [[(gt[..., z] == c).any() for c in (1, 2, 3)] for z in range(gt.shape[-1])]
    np.testing.assert_array_equal(ds.tags().numpy(), np.array(hand, np.float32))
    infer = inference_items(tree, None, dataset_dir=str(tree))
    assert len(infer) == 12 and all(Path(it["image"]).is_file() for it in infer)
    assert {it["subset"] for it in infer if "label" not in it} == {"testing"}
