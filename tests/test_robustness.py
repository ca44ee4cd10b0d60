"""Bad input through the public commands: a short, clear error before any work, and nothing lost.

Each case runs a command a user runs (``python -m acdc_wsss run``, ``python -m monai.bundle run``) against
a copy of a finished run and asserts three things: the exit status says failure, stderr is one ``error:``
line naming what is wrong and where (no traceback), and every file already in the run folder (and the
dataset) is byte-for-byte what it was.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from acdc_wsss.chain import main, run_chain
from tests.commands import run_command, start_command
from tests.conftest import TINY_ARGS

ROOT = Path(__file__).resolve().parents[1]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the SHA-1 of its bytes."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def assert_short_error(err: str, *words: str) -> None:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines and lines[0].startswith("error:"), err[-2000:]
    assert "Traceback" not in err and len(lines) <= 6, err[-2000:]
    for word in words:
        assert word in err, (word, err)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    rc = main(argv)
    return rc, capsys.readouterr().err


@pytest.fixture
def data(phantom_dir: Path, tmp_path: Path) -> Path:
    """A copy of the phantom data set, free to damage."""
    dst = tmp_path / "data"
    shutil.copytree(phantom_dir, dst)
    return dst


def _truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 3])


def _gt_wrong_shape(path: Path) -> None:
    img = nib.load(path)
    arr = np.asarray(img.dataobj)[:-4]
    nib.save(nib.Nifti1Image(arr, img.affine), path)


def _label_7(path: Path) -> None:
    img = nib.load(path)
    arr = np.asarray(img.dataobj).copy()
    arr[tuple(s // 2 for s in arr.shape)] = 7
    nib.save(nib.Nifti1Image(arr, img.affine, img.header), path)


def _nan_voxels(path: Path) -> None:
    img = nib.load(path)
    arr = np.asarray(img.dataobj).astype(np.float32)
    arr[:2, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(arr, img.affine), path)


def _no_ed(path: Path) -> None:
    path.write_text("".join(line for line in path.open() if not line.startswith("ED:")))


@pytest.mark.parametrize(
    ("fault", "target", "words"),
    [
        (_truncate, "patient002_frame01.nii.gz", ["patient002_frame01.nii.gz"]),
        (_gt_wrong_shape, "patient002_frame01_gt.nii.gz", ["patient002_frame01_gt.nii.gz", "shape"]),
        (_label_7, "patient003_frame01_gt.nii.gz", ["patient003_frame01_gt.nii.gz", "7"]),
        (_no_ed, "Info.cfg", ["Info.cfg", "ED"]),
        (_nan_voxels, "patient002_frame01.nii.gz", ["patient002_frame01.nii.gz", "2 of", "not finite"]),
    ],
    ids=["corrupt-nifti", "gt-wrong-shape", "label-7", "info-without-ed", "nan-voxels"],
)
def test_damaged_dataset_is_refused_before_work(
    fault, target: str, words: list[str], data: Path, run_copy: Path, capsys: pytest.CaptureFixture
) -> None:
    patient = "patient001" if target == "Info.cfg" else target[:10]
    fault(data / "training" / patient / target)
    before, data_before = snapshot(run_copy), snapshot(data)
    argv = ["run", "--dataset_dir", str(data), "--output_dir", str(run_copy), "--no-progress"]
    rc, err = run_cli(argv, capsys)
    assert rc == 2
    assert_short_error(err, *words)
    assert snapshot(run_copy) == before and snapshot(data) == data_before


@pytest.mark.parametrize("kind", ["missing", "empty"])
def test_missing_or_empty_dataset_folder(kind: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / kind
    if kind == "empty":
        folder.mkdir()
    rc, err = run_cli(["run", "--dataset_dir", str(folder), "--output_dir", str(tmp_path / "out")], capsys)
    assert rc == 2
    assert_short_error(err, str(folder))
    assert not any((tmp_path / "out").rglob("*.pt"))  # no work started


def test_output_inside_the_dataset_is_refused(data: Path, capsys: pytest.CaptureFixture) -> None:
    before = snapshot(data)
    rc, err = run_cli(["run", "--dataset_dir", str(data), "--output_dir", str(data / "run")], capsys)
    assert rc == 2
    assert_short_error(err, "inside the dataset")
    assert snapshot(data) == before and not (data / "run").exists()


def _read_only(folder: Path) -> bool:
    """Make ``folder`` unwritable (chmod; as root, the immutable attribute); False if neither works."""
    folder.chmod(0o555)
    probe = folder / "probe"
    try:
        probe.touch()
    except OSError:
        return True
    probe.unlink()
    return subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0


def test_read_only_output_folder(phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    if not _read_only(locked):
        pytest.skip("cannot make a read-only folder on this machine")
    try:
        argv = ["run", "--dataset_dir", str(phantom_dir), "--output_dir", str(locked / "run")]
        rc, err = run_cli(argv, capsys)
    finally:
        subprocess.run(["chattr", "-i", str(locked)], capture_output=True)
        locked.chmod(0o755)
    assert rc == 2
    assert_short_error(err, "cannot write", str(locked / "run"), "writable --output_dir")
    assert not (locked / "run").exists()


def test_full_disk_during_a_write_loses_nothing(
    run_copy: Path, phantom_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """The disk fills while stage 2 rewrites its pseudo labels: the error names the file, the labels already
    there are intact (writes go to a temporary name first) and no partial file is left behind."""
    (run_copy / "cam" / "pseudo" / "manifest.json").unlink()  # the export must run again
    before = snapshot(run_copy)
    real = np.lib.format.write_array

    def full_disk(fp, *args, **kwargs):
        fp.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # a write's error names no file

    monkeypatch.setattr(np.lib.format, "write_array", full_disk)
    argv = ["run", "--dataset_dir", str(phantom_dir), "--output_dir", str(run_copy), "--no-progress"]
    argv += TINY_ARGS  # the run's own settings, so its finished stages are kept
    rc, err = run_cli(argv, capsys)
    monkeypatch.setattr(np.lib.format, "write_array", real)
    assert rc == 2
    assert_short_error(err, "cannot write", "No space left on device", "cam/pseudo", "Nothing finished")
    assert snapshot(run_copy) == before  # no partial file, every earlier output unchanged


def _bundle(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", *args]
    return run_command(cmd, env=env)


def _bundle_error(run: subprocess.CompletedProcess, *words: str) -> None:
    assert run.returncode != 0
    err = run.stderr[run.stderr.find("error:") :]
    assert_short_error(err, *words)
    assert "Traceback" not in run.stderr


def test_bundle_override_of_the_wrong_type(run_copy: Path) -> None:
    before = snapshot(run_copy)
    run = _bundle(["bundles/l2g_acdc/train.json", "--output_dir", str(run_copy), "--epochs", "three"])
    _bundle_error(run, "epochs must be int", "'three'")
    assert snapshot(run_copy) == before


@pytest.mark.parametrize("state", ["unfinished", "untrained"])
def test_bundle_stage2_on_a_stage1_folder_without_a_finished_run(state: str, run_copy: Path) -> None:
    manifest = run_copy / "l2g" / "manifest.json"
    if state == "unfinished":  # killed during training: checkpoints there, manifest says running
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "status": "running"}))
    else:  # never trained: the folder holds no stage-1 output at all
        shutil.rmtree(run_copy / "l2g")
    before = snapshot(run_copy)
    configs = "['bundles/l2g_acdc/train.json','bundles/l2g_acdc/infer.json']"
    run = _bundle([configs, "--output_dir", str(run_copy)])
    words = ["unfinished stage 1", "--resume True"] if state == "unfinished" else ["no trained stage 1"]
    _bundle_error(run, *words, "bundles/l2g_acdc/train.json")
    assert snapshot(run_copy) == before


def test_bundle_inference_with_a_checkpoint_of_another_architecture(run_copy: Path) -> None:
    shutil.copy(run_copy / "l2g" / "last.pt", run_copy / "seg" / "last.pt")  # an L2G classifier's weights
    before = snapshot(run_copy)
    configs = "['bundles/deeplab_acdc/train.json','bundles/deeplab_acdc/inference.json']"
    run = _bundle([configs, "--output_dir", str(run_copy)])
    _bundle_error(run, "seg/last.pt", "does not fit the architecture")
    assert snapshot(run_copy) == before


def test_bundle_inference_with_a_checkpoint_carrying_code(run_copy: Path, tmp_path: Path) -> None:
    """A ``seg/last.pt`` that someone handed over, carrying a pickled call that writes a file when loaded
    the trusting way: refused by name, and the call never runs."""
    marker = tmp_path / "ran.txt"
    ckpt = torch.load(run_copy / "seg" / "last.pt", weights_only=True)
    ckpt["note"] = _WritesOnLoad(marker)
    torch.save(ckpt, run_copy / "seg" / "last.pt")
    before = snapshot(run_copy)
    configs = "['bundles/deeplab_acdc/train.json','bundles/deeplab_acdc/inference.json']"
    run = _bundle([configs, "--output_dir", str(run_copy)])
    _bundle_error(run, "seg/last.pt", "refused to load", "pickled Python objects")
    assert not marker.exists() and snapshot(run_copy) == before


class _WritesOnLoad:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.write_text, (self.marker, "code from a .pt ran"))


def test_killed_training_resumes_to_the_same_weights_and_metrics(
    chain_run: tuple[Path, dict], run_copy: Path, phantom_dir: Path, tiny: dict
) -> None:
    """A real SIGKILL in the middle of stage 3's second epoch, then the same command again: it resumes from
    the last checkpoint and ends with the weights and test metrics of the uninterrupted run (which also
    shows two runs with one seed agree on CPU)."""
    finished, summary = chain_run
    for name in ("seg", "predictions", "summary.json"):
        path = run_copy / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    settings = {"l2g": {**tiny["l2g"], "split_seed": 0}, "seg": tiny["seg"]}
    code = (
        "from acdc_wsss.chain import run_chain; "
        f"run_chain({str(phantom_dir)!r}, {str(run_copy)!r}, progress=False, baseline=True, "
        f"l2g={settings['l2g']!r}, seg={settings['seg']!r})"
    )
    threads = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # the threads of chain_run
    proc = start_command([sys.executable, "-c", code], env=threads)
    last = run_copy / "seg" / "last.pt"
    deadline = time.monotonic() + 300
    while not last.exists() and proc.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.kill()  # SIGKILL
    proc.join()
    assert torch.load(last, weights_only=True)["epoch"] == 1  # killed during epoch 2
    assert json.loads((run_copy / "seg" / "manifest.json").read_text())["status"] == "running"
    again = run_chain(str(phantom_dir), str(run_copy), progress=False, baseline=True, **settings)
    assert again["steps"]["stage 3: segmentation network"] == "ran"
    a = torch.load(finished / "seg" / "last.pt", weights_only=True)["model"]
    b = torch.load(last, weights_only=True)["model"]
    assert a.keys() == b.keys()
    diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert diff == 0, diff
    assert again["test"] == pytest.approx(summary["test"], rel=0, abs=0, nan_ok=True)
    assert again["seed"] == 0
    for manifest in ("l2g", "baseline/l2g", "cam", "cam/pseudo", "seg", "predictions"):
        assert json.loads((run_copy / manifest / "manifest.json").read_text())["seed"] == 0, manifest
