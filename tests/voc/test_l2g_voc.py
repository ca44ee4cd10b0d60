"""The stage-1 bundle on the 17 real VOC images through the VOC override: one short epoch, small inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import VOC_DIR

ROOT = Path(__file__).resolve().parents[2]


def test_l2g_bundle_runs_on_voc_with_the_override(tmp_path: Path) -> None:
    if not (VOC_DIR / "VOC2012" / "JPEGImages").is_dir():
        pytest.skip(f"real VOC images not found at {VOC_DIR}")
    configs = "['bundles/l2g_acdc/train.json','voc_adapter/configs/l2g_train.json']"
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        configs,
        "--dataset_dir",
        str(VOC_DIR),
    ]
    cmd += ["--output_dir", str(tmp_path / "run"), "--image_size", "64", "--epochs", "1", "--width", "0.125"]
    cmd += ["--num_views", "4", "--progress", "False"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stderr.count("no Sal/ saliency maps") == 1  # said once, and the run goes on
    manifest = json.loads((tmp_path / "run" / "l2g" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["in_channels"] == 3
    assert len(manifest["classes"]) == 20 and manifest["preprocess"]["image_size"] == 64
    datalist = json.loads((tmp_path / "run" / "datalist.json").read_text())
    assert manifest["splits"]["training"] == [it["id"] for it in datalist["training"]]
    assert len(manifest["splits"]["training"]) == 12 and len(manifest["splits"]["validation"]) == 5
    val = json.loads((tmp_path / "run" / "l2g" / "metrics.json").read_text())["epochs"][0]["val"]
    assert 0 < val["map"] <= 1 and val["prior_map"] < val["map"]  # better than the constant classifier


def test_unknown_dataset_is_refused_with_the_adapter_hint(tmp_path: Path) -> None:
    from acdc_wsss.data.registry import DATASETS, get_dataset

    saved = DATASETS.pop("voc", None)
    try:
        with pytest.raises(ValueError, match="import voc_adapter"):
            get_dataset("voc")
    finally:
        if saved is not None:
            DATASETS["voc"] = saved


def test_cams_pseudo_labels_and_miou_on_voc(tmp_path: Path) -> None:
    if not (VOC_DIR / "VOC2012" / "JPEGImages").is_dir():
        pytest.skip(f"real VOC images not found at {VOC_DIR}")
    from acdc_wsss.l2g import run_l2g
    from acdc_wsss.pseudo import CamConfig, evaluate_pseudo, export_pseudo, run_cam

    out = tmp_path / "run"
    small = {"image_size": 64, "epochs": 1, "width": 0.125, "num_views": 4, "progress": False}
    voc = {"dataset": "voc", "dataset_dir": str(VOC_DIR), "saliency_key": "saliency", "saliency_pool": False}
    run_l2g({**voc, **small, "output_dir": str(out)})
    run_cam(CamConfig(output_dir=str(out), scales=[0.5], flip=False, splits=["validation"], progress=False))
    result = evaluate_pseudo(out, "validation", progress=False)
    assert [r["row"] for r in result["rows"]] == ["cam", "pcm", "learned", "pcm_crf"]
    assert result["volumes"] == 5 and len(result["rows"][0]["iou"]) == 21  # background + 20 classes
    for r in result["rows"]:
        assert 0 <= r["miou"] <= 1
    stage = export_pseudo(out, progress=False)  # the photo row set's full refinement
    manifest = json.loads((stage / "pseudo" / "manifest.json").read_text())
    assert manifest["row"] == "pcm_crf" and len(manifest["volumes"]) == 5
    key = manifest["volumes"][0]
    png = np.array(Image.open(stage / "pseudo" / f"{key}.png"))
    with Image.open(VOC_DIR / "VOC2012" / "JPEGImages" / f"{key}.jpg") as im:
        assert png.shape == (im.size[1], im.size[0]) and png.max() <= 20
    assert not (stage / "nifti").exists()
