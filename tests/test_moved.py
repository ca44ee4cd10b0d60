"""Old import paths of moved modules and names keep working, with a DeprecationWarning (CHANGELOG 0.2.0)."""

from __future__ import annotations

import importlib

import pytest

#: (old module, name, new module)
MOVED = [
    ("acdc_wsss.cam", "multiscale_cam", "acdc_wsss.cam_maps"),
    ("acdc_wsss.cam", "CAM_SCALES", "acdc_wsss.cam_maps"),
    ("acdc_wsss.l2g.train", "load_l2g", "acdc_wsss.l2g.model"),
    ("acdc_wsss.l2g.train", "evaluate_l2g", "acdc_wsss.l2g.evaluate"),
    ("acdc_wsss.seg.train", "load_seg", "acdc_wsss.seg.model"),
    ("acdc_wsss.seg.train", "read_targets", "acdc_wsss.seg.data"),
    ("acdc_wsss.seg.infer", "evaluate_seg", "acdc_wsss.seg.evaluate"),
    ("acdc_wsss.pseudo.priors", "priors_labels", "acdc_wsss.pseudo.rules"),
    ("acdc_wsss.pseudo.priors", "IGNORE", "acdc_wsss.labels"),
    ("acdc_wsss.pseudo.evaluate", "labels_constant", "acdc_wsss.pseudo.rules"),
    ("acdc_wsss.pseudo.evaluate", "DEFAULT_ROWS", "acdc_wsss.pseudo.rows"),
    ("acdc_wsss.pseudo.infer", "load_cams", "acdc_wsss.pseudo.store"),
    ("acdc_wsss.pseudo", "figure_panels", "acdc_wsss.figures"),
    ("acdc_wsss.pseudo.figures", "figure_panels", "acdc_wsss.figures"),
]


@pytest.mark.parametrize(("old", "name", "new"), MOVED)
def test_old_import_path_warns_and_gives_the_same_object(old: str, name: str, new: str) -> None:
    with pytest.deprecated_call(match=f"{new}.{name}"):
        value = getattr(importlib.import_module(old), name)
    assert value is getattr(importlib.import_module(new), name)


def test_unknown_names_are_still_attribute_errors() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        importlib.import_module("acdc_wsss.cam").nothing  # noqa: B018
