"""The bundles as model-zoo users run them: every config alone with ``--output_dir``, stage-3 inference
built from MONAI components (same masks as :func:`acdc_wsss.seg.predict`), TorchScript export and
``verify_net_in_out`` for both networks, 3D Slicer segmentations, metadata against the schema. The commands
are the README's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from acdc_wsss.data.acdc import read_datalist
from acdc_wsss.layout import RunLayout
from acdc_wsss.nifti import nrrd_affine
from acdc_wsss.safeload import load_pt
from acdc_wsss.seg import SegConfig, SegNet, load_seg, predict
from acdc_wsss.seg.model import volume_slices
from tests.commands import run_command

ROOT = Path(__file__).resolve().parents[2]
SEG = "bundles/deeplab_acdc"
L2G = "bundles/l2g_acdc"
RUN = [sys.executable, "-m", "monai.bundle", "run", "--config_file"]


def _cli(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = run_command(args, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def _masks(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(nib.load(p).dataobj) for p in sorted(folder.glob("*_seg.nii.gz"))}


def test_inference_json_alone_writes_the_masks_of_predict(run_copy: Path, tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    reference.mkdir()
    for name in ("datalist.json", "seg"):  # predict() on the same run, into another folder
        src = run_copy / name
        os.symlink(src, reference / name, target_is_directory=src.is_dir())
    predict(reference, progress=False)
    bundle = RunLayout(run_copy).predictions
    for p in bundle.path.iterdir():
        p.unlink()
    _cli([*RUN, f"{SEG}/inference.json", "--output_dir", str(run_copy), "--progress", "False"])
    got, want = _masks(bundle.path), _masks(RunLayout(reference).predictions.path)
    assert got.keys() == want.keys() and len(got) == 2 * len({n.split("_")[0] for n in got})
    for name in got:
        assert got[name].dtype == np.uint8 and np.array_equal(got[name], want[name]), name
    record = json.loads(bundle.manifest.read_text())
    assert record["files"] == sorted(got) and record["anatomy"] == 0.4 and record["temporal"] == 0.4
    assert record["source"] == "split testing"
    assert bundle.colour_table.is_file()


def test_slicer_segmentation_lies_on_the_scan_and_names_the_structures(chain_run: tuple[Path, dict]) -> None:
    out, _ = chain_run
    layout = RunLayout(out).predictions
    for item in read_datalist(out / "datalist.json", "testing"):
        name = f"{item['patient']}_frame{int(item['frame']):02d}"
        scan, mask = nib.load(item["image"]), nib.load(layout.mask(name))
        seg = sitk.ReadImage(str(layout.segmentation(name)))
        assert seg.GetSize() == scan.shape  # (X, Y, Z) voxels of the scan
        assert np.allclose(nrrd_affine(seg), scan.affine, atol=1e-4)
        assert np.array_equal(sitk.GetArrayFromImage(seg).transpose(2, 1, 0), np.asarray(mask.dataobj))
        names = [seg.GetMetaData(f"Segment{i}_Name") for i in range(3)]
        values = [seg.GetMetaData(f"Segment{i}_LabelValue") for i in range(3)]
        assert names == ["RV", "Myo", "LV"] and values == ["1", "2", "3"]
        assert seg.GetMetaData("Segmentation_MasterRepresentation") == "Binary labelmap"
        rgb = [float(v) for v in seg.GetMetaData("Segment0_Color").split()]
        assert len(rgb) == 3 and all(0 <= v <= 1 for v in rgb) and max(rgb) > 0


def test_evaluate_and_stage1_configs_run_alone(run_copy: Path) -> None:
    seg_eval = RunLayout(run_copy).seg.evaluation("testing", ".md")
    seg_eval.unlink()
    _cli([*RUN, f"{SEG}/evaluate.json", "--output_dir", str(run_copy), "--progress", "False"])
    assert seg_eval.read_text().startswith("| testing")
    l2g_eval = RunLayout(run_copy).l2g.evaluation("validation")
    _cli([*RUN, f"{L2G}/evaluate.json", "--output_dir", str(run_copy), "--progress", "False"])
    assert json.loads(l2g_eval.read_text())["split"] == "validation"
    table = RunLayout(run_copy).cam.evaluation("training", ".md")
    table.unlink()
    _cli([*RUN, f"{L2G}/infer.json", "--output_dir", str(run_copy), "--progress", "False"])
    assert table.read_text().count("\n") > 3


def test_a_config_alone_without_its_stage_names_the_command(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [*RUN, f"{SEG}/inference.json", "--output_dir", str(tmp_path / "empty")]
    out = run_command(args, env=env)
    assert out.returncode != 0
    assert "holds no trained stage 3" in out.stderr and "bundles/deeplab_acdc/train.json" in out.stderr


def _deeplab_run(run: Path) -> None:
    """Turn ``run``'s stage 3 into a DeepLab-v2 one: its manifest records the network and ``last.pt``
    holds a freshly initialised DeepLab-v2 (export needs an architecture and weights, not training)."""
    layout = RunLayout(run).seg
    manifest = json.loads(layout.manifest.read_text())
    manifest["config"] |= {"network": "deeplab", "width": 0.125}
    layout.manifest.write_text(json.dumps(manifest))
    cfg = SegConfig(**{k: v for k, v in manifest["config"].items() if k in SegConfig.__dataclass_fields__})
    torch.manual_seed(0)
    net = SegNet(len(manifest["classes"]) + 1, manifest["in_channels"], cfg)
    torch.save({"model": net.state_dict()}, layout.last)


@pytest.mark.parametrize("network", ["unet", "deeplab"])
def test_torchscript_export_gives_the_checkpoint_logits(run_copy: Path, network: str) -> None:
    if network == "deeplab":
        _deeplab_run(run_copy)
    ckpt, ts = RunLayout(run_copy).seg.last, run_copy / "model.ts"
    meta, config = f"{SEG}/metadata.json", f"{SEG}/inference.json"
    export = ["ckpt_export", "network_def", "--filepath", str(ts), "--ckpt_file", str(ckpt)]
    export += ["--key_in_ckpt", "model", "--use_trace", "True", "--input_shape", "[1, 1, 128, 128]"]
    cli = [sys.executable, "-m", "monai.bundle"]
    _cli([*cli, *export, "--meta_file", meta, "--config_file", config, "--output_dir", str(run_copy)])
    verify = ["verify_net_in_out", "network_def", "--meta_file", meta, "--config_file", config]
    checked = _cli([*cli, *verify, "--output_dir", str(run_copy)])
    assert "verified with no error" in checked.stdout + checked.stderr
    manifest, model = load_seg(run_copy, "last")
    assert manifest["config"]["network"] == network
    assert set(load_pt(ckpt)["model"]) == set(model.state_dict())
    ds = RunLayout(run_copy).slices(manifest, "testing", num_workers=0)
    x = volume_slices(ds.volumes[0]["image"])  # real preprocessed slices, (S, 1, 128, 128)
    exported = torch.jit.load(str(ts)).eval()
    with torch.no_grad():
        want, got = model(x)["logits"], exported(x)
    assert got.shape == (len(x), 4, 128, 128)
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


@pytest.mark.parametrize("bundle", [SEG, L2G])
def test_metadata_states_the_network_shapes_and_verifies(bundle: str) -> None:
    meta = json.loads((ROOT / bundle / "metadata.json").read_text())
    fmt = meta["network_data_format"]
    image = fmt["inputs"]["image"]
    assert image["num_channels"] == 1 and image["spatial_shape"] == [128, 128]
    assert fmt["outputs"]["pred"]["num_channels"] == 4
    schema = ROOT / "bundles" / "schema" / "metadata_schema.json"
    cmd = [sys.executable, "-m", "monai.bundle", "verify_metadata", "--filepath", str(schema)]
    checked = _cli([*cmd, "--meta_file", f"{bundle}/metadata.json"])
    assert "verified with no error" in checked.stdout + checked.stderr


def test_inference_json_alone_on_a_folder_and_on_single_files(
    run_copy: Path, phantom_dir: Path, tmp_path: Path
) -> None:
    patient = next(p for p in sorted((phantom_dir / "training").iterdir()) if p.is_dir())
    frames = sorted(patient.glob("*_frame??.nii.gz"))
    maskless = tmp_path / "seed" / "imagesTs"  # the imagesTs layout, no masks, no Info.cfg
    maskless.mkdir(parents=True)
    for frame in frames:
        shutil.copy(frame, maskless / frame.name)
    args = [*RUN, f"{SEG}/inference.json", "--output_dir", str(run_copy), "--progress", "False"]
    _cli([*args, "--infer_dataset_dir", str(maskless.parent)])
    record = json.loads(RunLayout(run_copy).predictions.manifest.read_text())
    assert record["source"] == "dataset_dir" and record["files"] == [
        f.name.replace(".nii", "_seg.nii") for f in frames
    ]
    _cli([*args, "--infer_images", f"['{frames[0]}']", "--infer_nrrd", "False"])
    mask = nib.load(RunLayout(run_copy).predictions.mask(frames[0].name.removesuffix(".nii.gz")))
    assert mask.shape == nib.load(frames[0]).shape
    record = json.loads(RunLayout(run_copy).predictions.manifest.read_text())
    assert record["source"] == "images" and len(record["files"]) == 1
