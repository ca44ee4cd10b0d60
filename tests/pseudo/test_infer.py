"""Stage 2 CAM inference and pseudo-label evaluation on a tiny phantom (acdc_wsss.pseudo)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from acdc_wsss.data.acdc import read_datalist
from acdc_wsss.figures import figure_panels
from acdc_wsss.l2g import run_l2g
from acdc_wsss.layout import RunLayout
from acdc_wsss.pseudo import CamConfig, evaluate_pseudo, export_pseudo, load_cams, run_cam
from acdc_wsss.pseudo.evaluate import FIXED_DEFAULT, chosen_setting, patient_groups
from acdc_wsss.pseudo.rows import ROWS
from acdc_wsss.pseudo.rules import labels_constant, labels_learned
from acdc_wsss.pseudo.store import KeptLabels, inference_volumes, read_cam_manifest
from tests.commands import run_command


@pytest.fixture(scope="module")
def stage1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from acdc_wsss.data.phantom import make_phantom

    root = tmp_path_factory.mktemp("s2")
    phantom = make_phantom(root / "acdc", patients=5, seed=0, progress=False)
    out = root / "run"
    run_l2g(
        {
            "dataset_dir": str(phantom),
            "output_dir": str(out),
            "epochs": 1,
            "width": 0.125,
            "num_views": 4,
            "progress": False,
            "splits": {"training": 0.6, "validation": 0.4},
        }
    )
    return out


def test_cams_stored_as_float16_per_volume(stage1: Path) -> None:
    stage = run_cam(CamConfig(output_dir=str(stage1), scales=[1.0], flip=False, progress=False))
    manifest = json.loads((stage / "manifest.json").read_text())
    assert manifest["status"] == "complete" and len(manifest["volumes"]) == 10
    key = manifest["volumes"][0]
    with np.load(stage / "cams" / f"{key}.npz") as z:
        assert z["scores"].dtype == np.float16 and z["bg_prob"].dtype == np.float16
        scores, tags = z["scores"].astype(np.float32), z["tags"]
    assert scores.shape[:3] == (3, 128, 128) and scores.shape[3] == tags.shape[0]
    assert 0 <= scores.min() and scores.max() <= 1.001
    absent = tags.T == 0  # (C, S): untagged classes carry no score
    assert np.abs(scores.transpose(0, 3, 1, 2)[absent]).max(initial=0) == 0
    assert load_cams(stage1, key)["bg_prob"].shape == scores.shape[1:]
    stamp = (stage / "cams" / f"{key}.npz").stat().st_mtime_ns
    run_cam(CamConfig(output_dir=str(stage1), scales=[1.0], flip=False, progress=False))  # up to date: kept
    assert (stage / "cams" / f"{key}.npz").stat().st_mtime_ns == stamp
    ckpt = stage1 / "l2g" / "best.pt"
    os.utime(ckpt, ns=(ckpt.stat().st_atime_ns, ckpt.stat().st_mtime_ns + 10**9))  # stage 1 retrained
    run_cam(CamConfig(output_dir=str(stage1), scales=[1.0], flip=False, progress=False))  # stale: redone
    assert (stage / "cams" / f"{key}.npz").stat().st_mtime_ns != stamp


def test_pseudo_label_evaluation_tables_and_the_kept_labels(stage1: Path) -> None:
    run_cam(CamConfig(output_dir=str(stage1), scales=[1.0], flip=False, progress=False, overwrite=True))
    stale = RunLayout(stage1).cam.kept_labels / "0123456789abcdef" / "scan_es-default"  # another fingerprint
    stale.mkdir(parents=True)
    # the validation patients one at a time, with no selection split: every row at its default setting
    alone = evaluate_pseudo(
        stage1, "validation", select_split=None, baseline_run=stage1, progress=False, workers=1
    )
    assert not stale.parent.exists()  # the evaluation removed them
    assert f"chosen on {FIXED_DEFAULT}" in (stage1 / "cam" / "evaluation_validation.md").read_text()
    # its own baseline; the validation patients scored side by side (one process per core) for the selection
    result = evaluate_pseudo(stage1, "training", baseline_run=stage1, progress=False)
    rows = [
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
    ]
    assert [r["row"] for r in result["rows"]] == rows and result["selected_on"] == "validation"
    by = {r["row"]: r for r in result["rows"]}
    for r in result["rows"]:
        assert set(r["dice"]) == {"RV", "Myo", "LV"} and 0 <= r["mean_dice"] <= 1
        # the setting is the best on the validation patients, and the score is the training one at it
        assert r["sweep_selection"][str(r["setting"])] == max(r["sweep_selection"].values())
        assert r["mean_dice"] == pytest.approx(r["sweep"][str(r["setting"])])
        assert len(r["per_volume"]) == result["volumes"]
        assert all(len(d) == 3 and all(0 <= x <= 1 for x in d) for d in r["per_volume"].values())
    assert by["baseline"]["sweep"] == pytest.approx(by["pcm"]["sweep"])  # same CAMs, same rule
    md = (stage1 / "cam" / "evaluation_training.md").read_text()
    assert "| + dense CRF (full refinement) |" in md and "chosen on validation" in md
    assert chosen_setting(stage1, "anatomy_crf") == by["anatomy_crf"]["setting"]
    assert alone["selected_on"] == FIXED_DEFAULT and (result["volumes"], alone["volumes"]) == (6, 4)
    for one, both in zip(alone["rows"], result["rows"], strict=True):
        assert one["setting"] == ROWS[one["row"]][2][0] and one["sweep_selection"] is None
        # the validation patients scored side by side for the selection give the same scores as one at a
        # time, at every setting (the sums are integers)
        assert one["sweep"] == both["sweep_selection"]
    items = [{"patient": "a"}, {"patient": "a"}, {"patient": "b"}, {}, {}, {"patient": "a"}]
    assert patient_groups(items) == [[0, 1], [2], [3], [4], [5]]  # runs of one patient, in order
    with pytest.raises(ValueError, match="no split 'testing'"):
        evaluate_pseudo(stage1, "testing", progress=False)
    with pytest.raises(ValueError, match=r"unknown pseudo-label rows \['scan_x'\]"):
        evaluate_pseudo(stage1, "training", progress=False, rows=["cam", "scan_x"])
    _the_export_reads_the_kept_labels(stage1)


def _the_export_reads_the_kept_labels(stage1: Path) -> None:
    """The export row's labels the evaluation kept are the ones the export would make, and it reads them
    under their own fingerprint only."""
    kept = KeptLabels(stage1, "scan_es", "default")
    keys = sorted(p.stem for p in kept.folder.glob("*.npz"))
    assert len(keys) == 10  # training and validation volumes
    export_pseudo(stage1, row="scan_es", value="default", progress=False)
    exported = _pseudo(stage1)
    assert sorted(exported) == keys
    # the export reads them: a changed one is exported as it is kept
    labels = kept.get(keys[0])
    kept.put(keys[0], np.where(labels == 1, 0, labels))
    export_pseudo(stage1, row="scan_es", value="default", progress=False)
    with np.load(RunLayout(stage1).cam.pseudo_labels(keys[0])) as z:
        assert (labels == 1).any() and not (z["labels"] == 1).any()
    # under another fingerprint (another stage 1, other rules' code) they are not read: the export makes
    # every volume's labels again, and they equal the kept ones
    other = kept.folder.parents[1] / "0123456789abcdef"
    shutil.move(kept.folder.parent, other)
    export_pseudo(stage1, row="scan_es", value="default", progress=False)
    assert _pseudo(stage1) == exported
    shutil.rmtree(other)


def test_missing_stage1_is_refused_with_the_command(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"monai\.bundle run"):
        run_cam(CamConfig(output_dir=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match=r"infer\.json"):
        evaluate_pseudo(tmp_path)


def test_label_rules_hand_made() -> None:
    scores = np.zeros((2, 1, 3, 1), np.float32)
    scores[0, 0] = [[0.9], [0.2], [0.0]]
    scores[1, 0] = [[0.1], [0.6], [0.0]]
    bg = np.array([[[0.1], [0.95], [0.2]]], np.float32)  # (H=1, W=3, S=1)
    assert labels_constant(scores, bg, 0.5)[0, :, 0].tolist() == [1, 2, 0]
    assert labels_constant(scores, bg, 0.7)[0, :, 0].tolist() == [1, 0, 0]
    # learned: background where P(bg) >= 0.8, or no class scores at all
    assert labels_learned(scores, bg, 0.8)[0, :, 0].tolist() == [1, 0, 0]


def test_export_2d_and_nifti_on_the_source_grid(stage1: Path) -> None:
    run_cam(CamConfig(output_dir=str(stage1), scales=[1.0], flip=False, progress=False, overwrite=True))
    stage = export_pseudo(stage1, row="priors", value="default", progress=False)
    listed = [
        it for split in ("training", "validation") for it in read_datalist(stage1 / "datalist.json", split)
    ]
    items = {f"{it['patient']}_frame{int(it['frame']):02d}": it for it in listed}
    nifti = sorted((stage / "nifti").glob("*_pseudo.nii.gz"))
    assert len(nifti) == len(json.loads((stage / "pseudo" / "manifest.json").read_text())["volumes"])
    keys = [p.name.removesuffix("_pseudo.nii.gz") for p in nifti]
    for path in nifti[:4]:
        key = path.name.removesuffix("_pseudo.nii.gz")
        src = nib.load(items[key]["image"])
        mask = nib.load(path)
        assert mask.shape == src.shape and np.allclose(mask.affine, src.affine, atol=1e-5)  # oblique phantom
        assert mask.get_data_dtype() == np.uint8 and set(np.unique(np.asarray(mask.dataobj))) <= {0, 1, 2, 3}
        with np.load(stage / "pseudo" / f"{key}.npz") as z:
            assert z["labels"].shape[:2] == (128, 128) and z["labels"].shape[2] == src.shape[2]
    # the NIfTI labels are carried back as the stage-3 masks are: one-hot channels linearly, not nearest
    key = nifti[0].name.removesuffix("_pseudo.nii.gz")
    ds = inference_volumes(read_cam_manifest(stage1), [items[key]], stage1, False)
    with np.load(stage / "pseudo" / f"{key}.npz") as z:
        labels = torch.as_tensor(z["labels"][None])
    written = np.asarray(nib.load(nifti[0]).dataobj)
    linear, nearest = (ds.labels_to_original(0, labels, lin)[0].numpy() for lin in (True, False))
    assert np.array_equal(written, linear) and not np.array_equal(written, nearest)
    assert (written == nearest).mean() > 0.97  # the two differ at the boundaries only
    ignored = 0
    for key in keys:
        with np.load(stage / "pseudo" / f"{key}.npz") as z:
            labels, target = z["labels"], z["target"]
        kept = target != 255
        assert (target[kept] == labels[kept]).all()  # the target only adds ignore, never changes a label
        ignored += int((~kept).sum())
    assert ignored > 0
    with pytest.raises(ValueError, match="unknown pseudo-label row"):
        export_pseudo(stage1, row="magic", progress=False)


def test_cam_bench_prints_one_json_line(stage1: Path) -> None:
    data = json.loads((stage1 / "l2g" / "manifest.json").read_text())["dataset_dir"]
    bench = Path(__file__).resolve().parents[2] / "bench" / "cam.py"
    run = run_command(
        [sys.executable, str(bench), "--data", data, "--run", str(stage1), "--volumes", "2"], check=True
    )
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["volumes"] == 2 and result["cam_slices_per_s"] > 0 and result["crf_slices_per_s"] > 0


def test_figure_panels_png(stage1: Path, tmp_path: Path) -> None:
    run_cam(CamConfig(output_dir=str(stage1), scales=[1.0], flip=False, progress=False))
    export_pseudo(stage1, row="priors", value="default", progress=False)
    png = figure_panels(stage1, stage1, tmp_path / "panels.png", slices=2)  # the run as its own baseline
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def _pseudo(run: Path) -> dict[str, dict[str, bytes]]:
    """Every exported volume's labels and confidence, as bytes."""
    out = {}
    for path in sorted((run / "cam" / "pseudo").glob("*.npz")):
        with np.load(path) as z:
            out[path.stem] = {k: z[k].tobytes() + str(z[k].dtype).encode() for k in ("labels", "confidence")}
    return out


def test_pseudo_labels_read_tags_never_mask_pixels(stage1: Path, tmp_path: Path) -> None:
    """Leakage: a training patient's mask pixels changed, its slice tags kept: byte-identical output."""
    from acdc_wsss.pseudo.store import read_cam_manifest

    run_cam(CamConfig(output_dir=str(stage1), scales=[1.0], flip=False, progress=False))
    root = tmp_path / "copy"  # the run and the phantom side by side, as in stage1's folder
    # no cache and no stored septal side: the copy makes both again from its own files
    shutil.copytree(stage1.parent, root, ignore=shutil.ignore_patterns("cache", "septal.json", "kept_labels"))
    datalist = json.loads((root / "run" / "datalist.json").read_text())
    datalist["base_dir"] = str(root / "acdc")  # the copy reads the copied phantom
    (root / "run" / "datalist.json").write_text(json.dumps(datalist))
    item = read_datalist(root / "run" / "datalist.json", "training")[0]
    assert item["label"].startswith(str(root))
    img = nib.load(item["label"])
    mask = np.asarray(img.dataobj).astype(np.uint8)
    inner = np.zeros(mask.shape, bool)
    for z in range(mask.shape[2]):  # the inner ring of the wall becomes cavity; every class stays present
        inner[..., z] = ndi.binary_dilation(mask[..., z] == 3) & (mask[..., z] == 2)
    changed = np.where(inner, 3, mask).astype(np.uint8)
    assert inner.sum() > 100
    nib.save(nib.Nifti1Image(changed, img.affine, img.header), item["label"])
    export_pseudo(stage1, progress=False)
    export_pseudo(root / "run", progress=False)
    # the copy really read the changed mask, with the same tags
    manifest = read_cam_manifest(stage1)
    ds = [
        RunLayout(r).slices(manifest, [it]) for r, it in ((stage1, _item(stage1, item)), (root / "run", item))
    ]
    assert not np.array_equal(ds[0].volumes[0]["label"].numpy(), ds[1].volumes[0]["label"].numpy())
    assert np.array_equal(ds[0].volumes[0]["tags"].numpy(), ds[1].volumes[0]["tags"].numpy())
    assert _pseudo(stage1) == _pseudo(root / "run")


def _item(run: Path, like: dict) -> dict:
    return next(
        it
        for it in read_datalist(run / "datalist.json", "training")
        if it["image"].endswith(Path(like["image"]).name)
    )


def test_the_shared_septal_side_is_stored_once_and_remade_with_stage_1(stage1: Path) -> None:
    from acdc_wsss.pseudo.rows import run_septal
    from acdc_wsss.pseudo.rules.rv import septal_prior
    from acdc_wsss.pseudo.rules.scan import scan_septal_direction
    from acdc_wsss.pseudo.store import read_cam_manifest

    run_cam(CamConfig(output_dir=str(stage1), scales=[1.0], flip=False, progress=False))
    layout = RunLayout(stage1)
    layout.cam.septal.unlink(missing_ok=True)
    direction = run_septal(stage1)
    record = json.loads(layout.cam.septal.read_text())
    # each training ED frame's own direction (images, motion, tags), their circular mean when they agree
    eds = [it for it in read_datalist(stage1 / "datalist.json", "training") if it["phase"] == "ED"]
    ds = layout.slices(read_cam_manifest(stage1), eds)
    own = [
        scan_septal_direction(v["image"][0].numpy(), v["motion"][0].float().numpy(), v["tags"].numpy())
        for v in ds.volumes
    ]
    own = [d for d in own if d is not None]
    assert record["volumes"] == len(own) > 0 and 0.0 <= record["agreement"] <= 1.0
    assert direction == record["direction"] == septal_prior(own, record["min_agreement"])
    # stored: read back while stage 1 is the same, made again when it changed
    layout.cam.septal.write_text(json.dumps({**record, "direction": 1.25}))
    assert run_septal(stage1) == 1.25
    layout.cam.septal.write_text(json.dumps({**record, "direction": 1.25, "stage1_fingerprint": "old"}))
    assert run_septal(stage1) == direction
    # the exported labels say which side they were made with
    export_pseudo(stage1, row="scan_es", progress=False)
    assert json.loads(layout.cam.pseudo_manifest.read_text())["septal"] == direction


def test_confidence_is_higher_where_pseudo_labels_are_right(stage1: Path) -> None:
    from acdc_wsss.pseudo.store import read_cam_manifest

    run_cam(CamConfig(output_dir=str(stage1), scales=[1.0], flip=False, progress=False))
    export_pseudo(stage1, row="scan", value="default", progress=False)
    ds = RunLayout(stage1).slices(read_cam_manifest(stage1), "training")
    right, wrong = [], []
    for it, vol in zip(ds.items, ds.volumes, strict=True):
        with np.load(stage1 / "cam" / "pseudo" / f"{it['patient']}_frame{int(it['frame']):02d}.npz") as z:
            labels, conf = z["labels"], z["confidence"].astype(np.float32)
        assert conf.shape == labels.shape and conf.min() >= 0 and conf.max() <= 1
        ref = vol["label"][0].numpy()
        heart = (labels > 0) | (ref > 0)  # the heart region, where the labels can be wrong
        right.append(conf[heart & (labels == ref)])
        wrong.append(conf[heart & (labels != ref)])
    right_mean, wrong_mean = np.concatenate(right).mean(), np.concatenate(wrong).mean()
    assert right_mean > wrong_mean + 0.1, (right_mean, wrong_mean)
