"""Shared fixtures: the real data in ../shared/data (CI has it) and a small synthetic phantom.

``make test`` runs the suite in 2 pytest-xdist workers: each gives torch its share of the CPU cores, and
the commands it starts inherit that share through ``OMP_NUM_THREADS``. Session fixtures are made once per
worker (``chain_run`` in both: about 100 s of one core each on a 2-core CPU).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _share_the_cores() -> None:
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        import torch

        from acdc_wsss.utils import usable_cores

        threads = max(1, usable_cores() // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


_share_the_cores()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-digest",
        action="store_true",
        help="rewrite tests/fixtures/phantom_chain_digest.json from this run (outputs changed on purpose)",
    )


ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ACDC_WSSS_SHARED_DATA", ROOT.parent / "shared" / "data"))
ACDC_DIR = SHARED_DATA / "acdc"
VOC_DIR = SHARED_DATA / "voc"


@pytest.fixture(scope="session")
def acdc_dir() -> Path:
    """The 80 real ACDC training patients (read-only); skipped with a reason where ../shared is absent."""
    if not (ACDC_DIR / "training").is_dir():
        pytest.skip(f"real ACDC data not found at {ACDC_DIR} (set ACDC_WSSS_SHARED_DATA)")
    return ACDC_DIR


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 5-patient synthetic ACDC-layout phantom (one patient per pathology group), made once per session."""
    from acdc_wsss.data.phantom import make_phantom

    return make_phantom(tmp_path_factory.mktemp("phantom") / "acdc", patients=5, seed=7, progress=False)


@pytest.fixture(scope="session")
def real_items(acdc_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Datalist items (absolute paths) of all 160 real volumes, through a written datalist."""
    from acdc_wsss.data.acdc import make_datalist, read_datalist, read_patients, write_datalist

    path = tmp_path_factory.mktemp("datalist") / "datalist.json"
    write_datalist(make_datalist(read_patients(acdc_dir), acdc_dir), path)
    return read_datalist(path, "training")


@pytest.fixture(scope="session")
def real_slices(real_items: list[dict]):
    """All real volumes through the preprocessing chain once (about 15 s on 2 cores)."""
    from acdc_wsss.data.slices import SliceDataset

    return SliceDataset(real_items, progress=False)


#: Stage settings small enough for a test: the chain's plumbing, not its accuracy.
TINY_L2G = {"epochs": 1, "width": 0.125, "num_views": 4}
TINY_SEG = {"epochs": 2, "width": 0.125, "batch_size": 8}
TINY_ARGS = [f"--{s}={k}={v}" for s, d in (("l2g", TINY_L2G), ("seg", TINY_SEG)) for k, v in d.items()]


@pytest.fixture(scope="session")
def tiny() -> dict[str, dict]:
    """The tiny stage settings of ``chain_run``: ``{"l2g": ..., "seg": ...}``."""
    return {"l2g": dict(TINY_L2G), "seg": dict(TINY_SEG)}


@pytest.fixture(scope="session")
def chain_run(phantom_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The demo command (every stage, the baseline, the report) on the phantom with tiny settings, run once.

    Read-only for tests: a test that writes into a run takes ``run_copy`` instead."""
    import json

    from acdc_wsss.demo import main

    out = tmp_path_factory.mktemp("chain") / "run"
    argv = ["--dataset_dir", str(phantom_dir), "--output_dir", str(out), "--no-progress", *TINY_ARGS]
    assert main(argv) == 0
    return out, json.loads((out / "summary.json").read_text())


@pytest.fixture
def run_copy(chain_run: tuple[Path, dict], tmp_path: Path) -> Path:
    """A copy of the finished ``chain_run`` folder (file times kept), free to change."""
    import shutil

    dst = tmp_path / "run"
    shutil.copytree(chain_run[0], dst)
    return dst
