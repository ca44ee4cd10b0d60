"""The stage-1 bundle on the 17 real VOC images through the VOC override: one short epoch, small inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
