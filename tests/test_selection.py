"""Settings are chosen on validation only: the stage-2 table chooses on another split of the run or keeps
its fixed defaults, and the stage-3 anatomy weight has its sweep in bench/ (on the validation patients,
writing nothing)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from acdc_wsss.data.slices import volume_key
from acdc_wsss.layout import RunLayout
from acdc_wsss.pseudo.evaluate import selects
from acdc_wsss.report import write_report
from acdc_wsss.seg import SegConfig, run_seg
from acdc_wsss.seg.data import training_items
from acdc_wsss.seg.rounds import labels_dice
from tests.commands import run_command

ROOT = Path(__file__).resolve().parents[1]


def test_settings_are_chosen_on_another_split_of_the_run_only() -> None:
    splits = {"training": [], "validation": [], "testing": []}
    assert selects("validation", "training", splits)
    assert not selects("training", "training", splits)  # never tuned on the scored split itself
    assert not selects(None, "training", splits) and not selects("", "training", splits)
    assert not selects("validation", "training", {"training": [], "testing": []})  # the run has none
    # a whole evaluation without a selection split (every row at its default): tests/pseudo/test_infer.py


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _bench(script: str, *args: str) -> dict:
    """Run ``bench/<script>`` with ``args``; its last printed line, parsed as JSON."""
    command = [sys.executable, str(ROOT / "bench" / script), *args]
    done = run_command(command, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _refuses_testing(script: str, run: Path) -> bool:
    """Whether ``bench/<script>`` refuses to choose on the testing split (exit 2, with the reason)."""
    command = [sys.executable, str(ROOT / "bench" / script), "--run", str(run), "--split", "testing"]
    refused = run_command(command)
    return refused.returncode == 2 and "never chosen on the testing split" in refused.stderr


def test_validation_patients_join_training_only_by_default_and_the_anatomy_sweep_chooses_on_them(
    chain_run: tuple[Path, dict], run_copy: Path, tiny: dict
) -> None:
    command = [sys.executable, str(ROOT / "bench" / "anatomy.py"), "--run", str(chain_run[0])]
    refused = run_command(command)  # its network trained on validation (the default)
    assert refused.returncode == 1 and "trained on the validation patients" in refused.stderr
    refused = run_command([sys.executable, str(ROOT / "bench" / "inference.py"), "--run", str(chain_run[0])])
    assert refused.returncode == 2 and "trained on the validation patients" in refused.stderr
    run = run_copy
    layout = RunLayout(run)
    manifest2 = json.loads(layout.cam.manifest.read_text())
    slices = {split: len(layout.slices(manifest2, split)) for split in ("training", "validation")}
    assert slices["validation"] > 0
    assert json.loads(layout.seg.manifest.read_text())["training_slices"] == sum(slices.values())
    shutil.rmtree(run / "seg")
    run_seg(SegConfig(output_dir=str(run), train_on_validation=False, progress=False, **tiny["seg"]))
    assert json.loads(layout.seg.manifest.read_text())["training_slices"] == slices["training"]
    (row,) = json.loads(layout.rounds.read_text())["rounds"]
    assert row["validation_held_out"] and 0 <= row["validation_dice"] <= 1
    report = write_report(run).read_text()
    assert "(trained on their pseudo labels" not in report and "train_on_validation" not in report
    assert training_items(layout, {"splits": ["training"]}, True) == layout.split("training")  # none to add
    before = _digest(run)
    # the run twice, as two cross-validation folds: every volume counted twice, each run's mean the pooled one
    result = _bench(
        "anatomy.py",
        *("--run", str(run), str(run), "--values", "None,0.7", "--temporal", "None,0.4"),
        *("--crf", "None,2", "--rv_attached", "false,true", "--rv_descent", "None,10"),
    )
    volumes = len(json.loads((run / "datalist.json").read_text())["validation"])
    assert result["selected_on"] == "validation" and result["runs"] == 2 and result["volumes"] == 2 * volumes
    pairs = {"None/None", "None/0.4", "0.7/None", "0.7/0.4"}  # anatomy weight / ED frame's weight
    # / the CRF's strength / the RV's detached pieces removed / the ES RV's descent
    keys = {
        f"{pair}/{crf}/{rv}/{d}"
        for pair in pairs
        for crf in ("None", "2.0")
        for rv in ("False", "True")
        for d in ("None", "10.0")
    }
    assert set(result["sweep"]) == keys and result["chosen"] in result["sweep"]
    assert set(result["hd95"]) == set(result["hd95_per_class"]) == keys  # mm: reported, never chosen on
    assert not any(v < 0 for v in result["hd95"].values())
    ratios = result["volume_ratio"]
    assert set(ratios) == keys and all(set(r) == {"RV", "Myo", "LV"} for r in ratios.values())
    assert all(v >= 0 for r in ratios.values() for v in r.values())  # volumes without a class left out
    phases = result["per_phase"]
    # ED frames are never mixed with another frame, nor cut
    assert phases["None/None/None/False/None"]["ED"] == phases["None/0.4/None/False/None"]["ED"]
    assert phases["None/None/None/False/None"]["ES"] != phases["None/0.4/None/False/None"]["ES"]
    assert phases["0.7/0.4/2.0/True/None"]["ED"] == phases["0.7/0.4/2.0/True/10.0"]["ED"]
    for pair in pairs:  # the detached RV's removal changes the RV alone
        off, on = (result["per_class"][f"{pair}/2.0/{rv}/10.0"] for rv in ("False", "True"))
        assert off["Myo"] == on["Myo"] and off["LV"] == on["LV"]
    assert all(0 <= d <= 1 for d in result["sweep"].values())
    assert result["sweep"][result["chosen"]] == max(result["sweep"].values())
    assert all(abs(result["per_run"][str(run)][k] - v) < 1e-9 for k, v in result["sweep"].items())
    errors = result["errors"]  # the chosen setting's: every class voxel counted once, on a heart slice
    assert set(errors["confusion"]) == set(errors["by_position"]) == {"ED", "ES"}
    for phase, confusion in errors["confusion"].items():
        for k, c in enumerate(("RV", "Myo", "LV"), start=1):
            at = [errors["by_position"][phase][pos][c] for pos in ("base", "base+1", "mid", "apex-1", "apex")]
            assert sum(a["tp"] for a in at) == confusion[k][k]
            assert sum(a["tp"] + a["fn"] for a in at) == sum(confusion[k])  # the masks' voxels
            assert sum(a["tp"] + a["fp"] for a in at) == sum(row[k] for row in confusion)  # the prediction's
    assert _refuses_testing("anatomy.py", run)
    # the whole inference once per setting, scored on the scan's grid; the run read, never written
    swept = _bench("inference.py", "--run", str(run), str(run), "--option", "linear_invert=false,true")
    settings = {'{"linear_invert": false}', '{"linear_invert": true}'}
    assert set(swept["sweep"]) == set(swept["hd95"]) == settings and swept["chosen"] in settings
    assert swept["split"] == "validation" and swept["volumes"] == 2 * volumes
    assert all(0 <= d <= 1 for d in swept["sweep"].values())
    assert all(abs(swept["per_run"][str(run)][k] - v) < 1e-9 for k, v in swept["sweep"].items())
    assert _refuses_testing("inference.py", run)
    unknown = run_command(
        [sys.executable, str(ROOT / "bench" / "inference.py"), "--run", str(run), "--option", "x=1"]
    )
    assert unknown.returncode == 2 and "linear_invert" in unknown.stderr
    assert _digest(run) == before


def test_the_anatomy_sweep_counts_errors_by_slice_position_from_the_base(monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "bench"))  # bench/anatomy.py imports its neighbours
    bench = _load_bench("anatomy.py")
    ref = np.zeros((4, 4, 5), np.uint8)  # an LV tapering from the base (slice 0) to slice 3
    for z, pixels in enumerate(
        [[(0, 0), (0, 1), (1, 0), (1, 1)], [(0, 0), (0, 1), (1, 0)], [(0, 0), (0, 1)]]
    ):
        for y, x in pixels:
            ref[y, x, z] = 3
    ref[0, 0, 3] = 3
    pred = np.zeros_like(ref)
    pred[[0, 0, 1], [0, 1, 0], 0] = 3  # one LV pixel missed at the base
    pred[[0, 0, 1], [0, 1, 0], 1] = 3  # exact
    pred[0, [1, 2], 2] = 3  # shifted by a pixel: one right, one missed, one too many
    pred[3, [2, 3], 2] = 1  # an RV where the mask has none
    pred[0, 0, 4] = 3  # an LV below the mask's apex; slice 3's is missed
    assert bench.slice_positions(pred, ref) == [0, 1, 2, 3, 4]
    confusion, counts = bench.error_counts(pred, ref, 3)
    assert confusion.tolist() == [[66, 2, 0, 2], [0, 0, 0, 0], [0, 0, 0, 0], [3, 0, 0, 7]]
    lv = [[0, 1, 3], [0, 0, 3], [1, 1, 1], [0, 1, 0], [1, 0, 0]]  # fp, fn, tp: base ... apex
    assert counts[:, 2].tolist() == lv
    assert counts[:, 0].tolist() == [[0, 0, 0], [0, 0, 0], [2, 0, 0], [0, 0, 0], [0, 0, 0]]
    assert not counts[:, 1].any()
    # an apex-first stack: the base is read from the cross-sections, so the positions run the other way
    assert bench.slice_positions(pred[..., ::-1], ref[..., ::-1]) == [4, 3, 2, 1, 0]
    flipped = bench.error_counts(pred[..., ::-1], ref[..., ::-1], 3)[1]
    assert flipped[:, 2].tolist() == lv
    # slices outside the heart have no position
    assert bench.slice_positions(
        np.pad(pred, ((0, 0), (0, 0), (1, 1))), np.pad(ref, ((0, 0), (0, 0), (1, 1)))
    )[::6] == [None, None]


def test_stage3_bench_trains_on_the_training_patients_beside_the_run(
    chain_run: tuple[Path, dict], tiny: dict
) -> None:
    run, _ = chain_run
    before = _digest(run)
    sets = [f"--set={k}={v}" for k, v in tiny["seg"].items()]
    result = _bench("stage3.py", "--run", str(run), "--name", "plain", "--anatomy", "none", *sets)
    datalist = json.loads((run / "datalist.json").read_text())
    assert result["training_patients"] == len({it["patient"] for it in datalist["training"]})
    assert result["settings"]["train_on_validation"] is False and result["split"] == "validation"
    assert 0 <= result["results"]["none"]["mean"]["dice_mean"] <= 1
    variant = run.parent / f"{run.name}-stage3" / "plain"
    trained = json.loads((variant / "seg" / "manifest.json").read_text())
    manifest2 = json.loads((run / "cam" / "manifest.json").read_text())
    slices = len(RunLayout(run).slices(manifest2, "training"))
    assert trained["config"]["train_on_validation"] is False and trained["training_slices"] == slices
    cache = variant / "cache"  # its own folder: what the run had not cached is written there, not in the run
    assert cache.is_dir() and not cache.is_symlink()
    assert {p.name for p in (run / "cache").iterdir()} <= {p.name for p in cache.iterdir()}
    command = [sys.executable, str(ROOT / "bench" / "stage3.py"), "--run", str(run), "--name", "x"]
    refused = run_command([*command, "--set", "train_on_validation=true"])
    assert refused.returncode == 2 and "cannot be scored on them" in refused.stderr
    assert not (run.parent / f"{run.name}-stage3" / "x").exists()  # refused before any work
    assert _digest(run) == before


def test_crossfit_bench_relabels_each_fold_with_a_network_that_never_saw_it(
    run_copy: Path, tiny: dict
) -> None:
    run = run_copy
    sets = [f"--set={k}={v}" for k, v in tiny["seg"].items()]
    args = ["--run", str(run), "--name", "xfit", "--folds", "2", "--anatomy", "none", *sets]
    command = [sys.executable, str(ROOT / "bench" / "crossfit.py"), *args]
    refused = run_command(command)  # the phantom's 3 training patients are of 3 groups: one fold holds all
    assert refused.returncode == 1 and "fold 1 of 2 holds 3 of the 3 training patients" in refused.stderr
    assert not (run.parent / f"{run.name}-stage3").exists()  # refused before any work
    datalist = json.loads((run / "datalist.json").read_text())
    for item in datalist["training"]:
        item["group"] = "DCM"
    (run / "datalist.json").write_text(json.dumps(datalist))
    before = _digest(run)
    result = _bench("crossfit.py", *args, "--fold-set", "epochs=1")  # the folds train 1 epoch, the final 2
    datalist = json.loads((run / "datalist.json").read_text())
    training = {it["patient"] for it in datalist["training"]}
    validation = {it["patient"] for it in datalist["validation"]}
    variants = run.parent / f"{run.name}-stage3"
    relabelled: set[str] = set()
    for fold in (1, 2):
        split = json.loads((variants / f"xfit-fold{fold}" / "datalist.json").read_text())
        trained = {it["patient"] for it in split["training"]}
        held = {it["patient"] for it in split["validation"]}
        assert held and not trained & held and not (trained | held) & validation
        assert trained | held == training
        fold_manifest = variants / f"xfit-fold{fold}" / "seg" / "manifest.json"
        fold_config = json.loads(fold_manifest.read_text())["config"]
        assert fold_config["epochs"] == 1 and fold_config["width"] == tiny["seg"]["width"]
        relabelled |= held
    assert relabelled == training  # every training patient, by the network of the fold that left it out
    labels = variants / "xfit" / "crossfit"
    keys = sorted(f"{volume_key(it)}.npz" for it in datalist["training"])
    assert sorted(p.name for p in labels.glob("*.npz")) == keys
    record = json.loads((labels / "manifest.json").read_text())
    assert (record["folds"], record["fuse"], record["temporal"], len(record["volumes"])) == (
        2,
        0.4,
        0.3,
        len(keys),
    )
    config = json.loads((variants / "xfit" / "seg" / "manifest.json").read_text())["config"]
    assert config["pseudo_dir"] == str(labels) and config["train_on_validation"] is False
    assert config["epochs"] == tiny["seg"]["epochs"] == 2 and result["fold_settings"]["epochs"] == 1
    assert result["training_labels"]["stage2"] == labels_dice(run)
    assert result["training_labels"]["crossfit"] == labels_dice(run, labels)
    assert 0 <= result["results"]["none"]["mean"]["dice_mean"] <= 1
    assert _digest(run) == before


def _load_bench(script: str) -> ModuleType:
    """``bench/<script>`` loaded as a module."""
    spec = importlib.util.spec_from_file_location(f"bench_{Path(script).stem}", ROOT / "bench" / script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_fewer_patients_leaves_out_every_kth_of_each_group(tmp_path: Path) -> None:
    bench = _load_bench("stage3.py")
    names = {"DCM": ["p05", "p01", "p03"], "NOR": ["p02", "p04"]}
    training = [{"patient": p, "group": g, "frame": f} for g, ps in names.items() for p in ps for f in (1, 9)]
    run = tmp_path / "run"
    run.mkdir()
    (run / "datalist.json").write_text(json.dumps({"training": training, "validation": [{"patient": "v"}]}))
    assert bench.fewer_patients(run, tmp_path / "variant", 2) == 3
    written = json.loads((tmp_path / "variant" / "datalist.json").read_text())
    assert sorted({it["patient"] for it in written["training"]}) == ["p01", "p02", "p05"]  # p03, p04 out
    assert len(written["training"]) == 6 and written["validation"] == [{"patient": "v"}]


def test_fold_split_holds_out_every_nth_training_patient_of_each_group(tmp_path: Path) -> None:
    bench = _load_bench("stage3.py")
    names = {"DCM": ["p05", "p01", "p03", "p07"], "NOR": ["p02", "p04", "p06"]}
    training = [{"patient": p, "group": g, "frame": f} for g, ps in names.items() for p in ps for f in (1, 9)]
    run = tmp_path / "run"
    run.mkdir()
    test = [{"patient": "t"}]
    (run / "datalist.json").write_text(
        json.dumps({"training": training, "validation": [{"patient": "v"}], "testing": test})
    )
    held = {}
    for fold in (1, 2, 3):
        assert bench.fold_split(run, tmp_path / f"cv{fold}", fold, 3) == {1: 5, 2: 6, 3: 6}[fold]
        written = json.loads((tmp_path / f"cv{fold}" / "datalist.json").read_text())
        held[fold] = sorted({it["patient"] for it in written["validation"]})
        trained = {it["patient"] for it in written["training"]}
        assert "v" in trained and not trained & set(held[fold]) and written["testing"] == test
        assert len(written["validation"]) == 2 * len(held[fold])  # both frames of each held-out patient
    assert held == {1: ["p01", "p02", "p07"], 2: ["p03", "p04"], 3: ["p05", "p06"]}  # name order per group
    with pytest.raises(SystemExit, match=r"--fold must be 1\.\.3"):
        bench.fold_split(run, tmp_path / "cv4", 4, 3)


def test_split_labels_are_made_beside_the_run_and_compared_with_the_network(
    chain_run: tuple[Path, dict],
) -> None:
    run, _ = chain_run
    before = _digest(run)
    result = _bench("labels.py", "--run", str(run), "--split", "testing")
    network = json.loads((run / "seg" / "evaluation_testing.json").read_text())
    assert result["network"]["mean"]["dice_mean"] == round(network["mean"]["dice_mean"], 4)
    labels = result["labels"]["mean"]["dice_mean"]
    assert 0 < labels < 1 and set(result["labels"]["by_phase"]) == {"ED", "ES"}
    assert abs(result["network_minus_labels"] - (result["network"]["mean"]["dice_mean"] - labels)) < 2e-4
    side = run.parent / f"{run.name}-labels" / "testing"
    datalist = json.loads((run / "datalist.json").read_text())
    names = {Path(it["image"]).name.replace(".nii.gz", "_pseudo.nii.gz") for it in datalist["testing"]}
    assert {p.name for p in (side / "cam" / "nifti").glob("*.nii.gz")} == names
    assert _digest(run) == before  # the run itself is only read


def test_registration_bench_carries_the_ed_masks_better_than_as_they_lie(
    chain_run: tuple[Path, dict],
) -> None:
    run, _ = chain_run
    before = _digest(run)
    result = _bench("registration.py", "--run", str(run), "--margins", "4", "16", "--levels", "1", "2,1")
    assert result["split"] == "validation" and result["patients"] > 0
    settings = [(r["margin_px"], r["levels"]) for r in result["results"]]
    assert settings == [(4, [1]), (4, [2, 1]), (16, [1]), (16, [2, 1])]
    assert all(len(r["dice"]) == 3 and 0 <= r["mean"] <= 1 for r in result["results"])
    # the phantom's heart contracts from ED to ES: the registration must beat the masks as they lie
    assert max(r["mean"] for r in result["results"]) > result["unregistered"] + 0.02, result
    assert _refuses_testing("registration.py", run)
    assert _digest(run) == before


def test_speed_bench_makes_the_same_label_maps_both_ways_and_leaves_the_run_as_it_was(
    chain_run: tuple[Path, dict],
) -> None:
    run, _ = chain_run
    before = _digest(run)
    result = _bench("speed.py", "--run", str(run), "--cams", "2")  # exits 1 if the two label maps differ
    for part in ("stage1_validation", "stage3_validation"):
        assert set(result[part]) >= {"argmax_s", "argmax_labels_s"}
        assert min(result[part].values()) >= 0
    files = result["cam_files"]
    assert files["files"] == 2 and files["savez_compressed_bytes"] > 0
    assert abs(files["write_npz_bytes"] / files["savez_compressed_bytes"] - 1) < 0.1  # about as small
    assert _digest(run) == before
