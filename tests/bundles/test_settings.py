"""Every setting is written once: each field of a stage's settings dataclass is one bundle id of the same
name, mapped into the bundle's config object, with the dataclass's default; a bundle or override file
that drifts from the code fails here."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
from pathlib import Path
from typing import Any

import pytest
from monai.bundle import ConfigParser

from acdc_wsss.l2g import L2GConfig, evaluate_l2g
from acdc_wsss.pseudo import CamConfig, evaluate_pseudo, export_pseudo
from acdc_wsss.seg import SegConfig, evaluate_seg, predict

ROOT = Path(__file__).resolve().parents[2]
L2G, SEG = ROOT / "bundles" / "l2g_acdc", ROOT / "bundles" / "deeplab_acdc"
#: Ids of a training bundle that are not settings of its dataclass.
STRUCTURE = {"imports", "bundle_root", "initialize", "run", "finalize"}
#: Fields whose bundle id has another name: the chain splits and trains with one seed.
RENAMED = {"split_seed": "seed"}
#: Defaults a bundle sets differently on purpose: the bundle takes the GPU when there is one.
OWN_DEFAULT = {"device"}


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _parser(*files: Path) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    return parser


def _check_object(parser: ConfigParser, key: str, cls: type, prefix: str = "", shared: tuple = ()) -> None:
    """``parser[key]`` maps every field of ``cls`` to ``@<prefix><field>`` (fields in ``shared`` to the
    training bundle's own id), and those ids hold the dataclass defaults."""
    mapping = {k: v for k, v in parser[key].items() if k != "_target_"}
    fields = dataclasses.fields(cls)
    assert set(mapping) == {f.name for f in fields}, f"{key} maps {sorted(mapping)}"
    for f in fields:
        name = f.name if f.name in shared else prefix + RENAMED.get(f.name, f.name)
        assert mapping[f.name] == f"@{name}", (key, f.name, mapping[f.name])
        if f.name not in OWN_DEFAULT:
            assert parser.get_parsed_content(name) == _default(f), f"{name} differs from {cls.__name__}"


@pytest.mark.parametrize(
    ("bundle", "key", "cls"), [(L2G, "l2g_config", L2GConfig), (SEG, "seg_config", SegConfig)]
)
def test_training_bundle_ids_are_the_dataclass_fields_with_their_defaults(
    bundle: Path, key: str, cls: type
) -> None:
    parser = _parser(bundle / "train.json")
    _check_object(parser, key, cls)
    ids = set(json.loads((bundle / "train.json").read_text())) - STRUCTURE - {key}
    settings = {RENAMED.get(f.name, f.name) for f in dataclasses.fields(cls)}
    assert ids == settings, f"ids that are no setting: {sorted(ids - settings)}"


def test_cam_settings_of_infer_json() -> None:
    parser = _parser(L2G / "train.json", L2G / "infer.json")
    _check_object(
        parser, "cam_config", CamConfig, "cam_", shared=("output_dir", "device", "progress", "overwrite")
    )


#: (override file, function) whose keyword defaults its own ids must equal; ``eval_split`` of the stage-1
#: evaluate.json scores stage 1 and the pseudo labels on one split, so only evaluate_l2g's default counts.
CALLS = [
    (L2G / "infer.json", evaluate_pseudo),
    (L2G / "infer.json", export_pseudo),
    (L2G / "evaluate.json", evaluate_l2g),
    (SEG / "inference.json", predict),
    (SEG / "evaluate.json", evaluate_seg),
]


#: Ids a config that runs alone defines for the whole run (the same values as train.json's), not the
#: function's own defaults.
RUN_IDS = frozenset({"output_dir", "device", "progress", "overwrite"})


@pytest.mark.parametrize(("override", "fn"), CALLS, ids=[f"{o.name}:{f.__name__}" for o, f in CALLS])
def test_override_ids_hold_the_function_defaults(override: Path, fn: Any) -> None:
    own = json.loads(override.read_text())
    call = next(line for line in own["run"] if f".{fn.__name__}(" in line)
    defaults = inspect.signature(fn).parameters
    for kwarg, name in re.findall(r"(\w+)=@(\w+)", call.split(f".{fn.__name__}(", 1)[1]):
        if name in own and name not in RUN_IDS:
            default = defaults[kwarg].default
            assert own[name] == default, f"{override.name}: {name} is not {fn.__name__}'s {kwarg}={default!r}"


@pytest.mark.parametrize(
    ("bundle", "override", "key"),
    [
        (L2G, "l2g_train.json", "l2g_config"),
        (L2G, "l2g_reference.json", "l2g_config"),
        (SEG, "deeplab_train.json", "seg_config"),
    ],
)
def test_voc_overrides_set_existing_ids_to_valid_settings(bundle: Path, override: str, key: str) -> None:
    path = ROOT / "voc_adapter" / "configs" / override
    base = set(json.loads((bundle / "train.json").read_text()))
    assert set(json.loads(path.read_text())) - {"+imports"} <= base  # no misspelt id becomes a new one
    _parser(bundle / "train.json", path).get_parsed_content(key)  # the dataclass accepts every value


def test_reference_stage2_profile_sets_existing_cam_ids() -> None:
    path = ROOT / "voc_adapter" / "configs" / "l2g_reference_infer.json"
    base = set(json.loads((L2G / "train.json").read_text())) | set(
        json.loads((L2G / "infer.json").read_text())
    )
    assert set(json.loads(path.read_text())) <= base
    cam = _parser(L2G / "train.json", L2G / "infer.json", path).get_parsed_content("cam_config")
    assert (cam.resize, cam.relu) == ("bicubic", "mean")
