"""The l2g_acdc bundle through MONAI's own CLI: a short run, DDP on CPU (gloo), metadata."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.commands import rank_logs, run_command, torchrun

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "bundles" / "l2g_acdc"
SMALL = [
    "--phantom_patients",
    "5",
    "--epochs",
    "1",
    "--width",
    "0.125",
    "--num_views",
    "4",
    "--progress",
    "False",
]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return run_command(args, env=env)


def test_bundle_runs_one_epoch_on_a_tiny_phantom(tmp_path: Path) -> None:
    out, phantom = tmp_path / "run", tmp_path / "phantom"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "bundles/l2g_acdc/train.json"]
    run = _run([*cmd, "--output_dir", str(out), "--phantom_dir", str(phantom), *SMALL])
    assert run.returncode == 0, run.stderr[-3000:]
    stage = out / "l2g"
    assert (stage / "last.pt").is_file() and (stage / "best.pt").is_file()
    metrics = json.loads((stage / "metrics.json").read_text())["epochs"]
    assert len(metrics) == 1 and metrics[0]["loss"] > 0 and "map" in metrics[0]["val"]
    manifest = json.loads((stage / "manifest.json").read_text())
    assert manifest["config"]["epochs"] == 1 and manifest["config"]["width"] == 0.125
    assert (phantom / "phantom.json").is_file()


def test_ddp_two_cpu_processes_keep_identical_weights(tmp_path: Path) -> None:
    out, phantom = tmp_path / "run", tmp_path / "phantom"
    configs = "['bundles/l2g_acdc/train.json','bundles/l2g_acdc/multi_gpu_train.json']"
    cmd = [*torchrun(2, tmp_path / "ranks"), "-m", "monai.bundle", "run", "--config_file", configs]
    run = _run([*cmd, "--output_dir", str(out), "--phantom_dir", str(phantom), *SMALL, "--batch_size", "4"])
    assert run.returncode == 0, run.stderr[-3000:] + "\n" + rank_logs(tmp_path / "ranks")
    manifest = json.loads((out / "l2g" / "manifest.json").read_text())
    assert manifest["ddp"] == {"world_size": 2, "ranks_identical": True}
    assert manifest["config"]["distributed"] is True


def test_metadata_verifies_offline_against_the_shipped_schema(tmp_path: Path) -> None:
    schema = ROOT / "bundles" / "schema" / "metadata_schema.json"
    cmd = [sys.executable, "-m", "monai.bundle", "verify_metadata", "--filepath", str(schema)]
    ok = _run([*cmd, "--meta_file", str(BUNDLE / "metadata.json")])
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "verified with no error" in ok.stderr + ok.stdout
    broken = json.loads((BUNDLE / "metadata.json").read_text())
    del broken["network_data_format"]["outputs"]["pred"]["channel_def"]
    (tmp_path / "metadata.json").write_text(json.dumps(broken))
    bad = _run([*cmd, "--meta_file", str(tmp_path / "metadata.json")])
    assert bad.returncode != 0 and "channel_def" in bad.stderr + bad.stdout
