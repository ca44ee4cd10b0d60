"""Shared fixtures: the real data in ../shared/data (CI has it) and a small synthetic phantom."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
