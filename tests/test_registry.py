"""The data set registry: ``acdc`` is registered like ``voc``, by the modules the stages import."""

from __future__ import annotations

import sys

import pytest

from acdc_wsss.data.registry import DATASETS, SEG_DATA, VOLUMES
from tests.commands import run_command


@pytest.mark.parametrize(
    ("module", "registry"),
    [("acdc_wsss.l2g", "DATASETS"), ("acdc_wsss.pseudo", "VOLUMES"), ("acdc_wsss.seg", "SEG_DATA")],
)
def test_importing_a_stage_registers_acdc_for_it(module: str, registry: str) -> None:
    """In a process where no project module is loaded, the stage package alone registers the acdc builder
    of its kind."""
    fresh = "import sys; assert not [m for m in sys.modules if m.startswith('acdc_wsss')]"
    code = f"{fresh}; import {module}; from acdc_wsss.data.registry import {registry} as r; print(sorted(r))"
    out = run_command([sys.executable, "-c", code], check=True).stdout
    assert "'acdc'" in out


def test_acdc_builders_are_the_stages_own() -> None:
    import acdc_wsss.l2g
    import acdc_wsss.pseudo
    import acdc_wsss.seg

    assert DATASETS["acdc"] is acdc_wsss.l2g.data.acdc_training_data
    assert VOLUMES["acdc"] is acdc_wsss.pseudo.store.acdc_volumes
    assert SEG_DATA["acdc"] is acdc_wsss.seg.data.acdc_seg_data


def test_unknown_dataset_names_the_known_ones() -> None:
    import acdc_wsss.l2g  # noqa: F401

    with pytest.raises(ValueError, match=r"no training data for dataset 'mnist'; known: \[.*'acdc'"):
        DATASETS.get_builder("mnist")
