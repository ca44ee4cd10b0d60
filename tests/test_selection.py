"""Settings are chosen on validation only: the stage-2 table without a selection split keeps fixed defaults,
and the stage-3 anatomy weight has its sweep in bench/ (on the validation patients, writing nothing)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from acdc_wsss.pseudo.evaluate import FIXED_DEFAULT, evaluate_pseudo
from acdc_wsss.pseudo.rows import ROWS

ROOT = Path(__file__).resolve().parents[1]


def test_pseudo_table_without_selection_split_uses_fixed_defaults(run_copy: Path) -> None:
    result = evaluate_pseudo(run_copy, "training", select_split=None, progress=False)
    assert result["selected_on"] == FIXED_DEFAULT
    assert all(r["setting"] == ROWS[r["row"]][2][0] and r["sweep_selection"] is None for r in result["rows"])
    assert f"chosen on {FIXED_DEFAULT}" in (run_copy / "cam" / "evaluation_training.md").read_text()
    same = evaluate_pseudo(run_copy, "training", select_split="training", progress=False)  # not on itself
    assert same["selected_on"] == FIXED_DEFAULT


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _bench(script: str, *args: str) -> dict:
    """Run ``bench/<script>`` with ``args``; its last printed line, parsed as JSON."""
    command = [sys.executable, str(ROOT / "bench" / script), *args]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _refuses_testing(script: str, run: Path) -> bool:
    """Whether ``bench/<script>`` refuses to choose on the testing split (exit 2, with the reason)."""
    command = [sys.executable, str(ROOT / "bench" / script), "--run", str(run), "--split", "testing"]
    refused = subprocess.run(command, capture_output=True)
    return refused.returncode == 2 and b"never chosen on the testing split" in refused.stderr


def test_anatomy_sweep_chooses_on_validation_and_writes_nothing(chain_run: tuple[Path, dict]) -> None:
    run, _ = chain_run
    before = _digest(run)
    result = _bench("anatomy.py", "--run", str(run), "--values", "None,0.7", "--temporal", "None,0.4")
    assert result["selected_on"] == "validation" and result["volumes"] > 0
    pairs = {"None/None", "None/0.4", "0.7/None", "0.7/0.4"}  # anatomy weight / ED frame's weight
    assert set(result["sweep"]) == pairs and result["chosen"] in result["sweep"]
    ratios = result["volume_ratio"]
    assert set(ratios) == pairs and all(set(r) == {"RV", "Myo", "LV"} for r in ratios.values())
    assert all(v >= 0 for r in ratios.values() for v in r.values())  # volumes without a class left out
    phases = result["per_phase"]
    assert phases["None/None"]["ED"] == phases["None/0.4"]["ED"]  # the ED frames are never mixed
    assert phases["None/None"]["ES"] != phases["None/0.4"]["ES"]
    assert all(0 <= d <= 1 for d in result["sweep"].values())
    assert result["sweep"][result["chosen"]] == max(result["sweep"].values())
    assert _refuses_testing("anatomy.py", run)
    assert _digest(run) == before


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
