"""Stage 1 training: learning, baseline switch, resume equality, refusals (acdc_wsss.l2g.train)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from ignite.engine import Events

from acdc_wsss.l2g import L2GConfig, evaluate_l2g, load_l2g, run_l2g
from acdc_wsss.l2g.evaluate import DEFAULT_BG_SCORE, DEFAULT_BG_THRESHOLD
from tests.commands import run_command

TINY = {
    "phantom_patients": 5,
    "width": 0.125,
    "num_views": 4,
    "batch_size": 8,
    "progress": False,
    "splits": {"training": 0.6, "validation": 0.4},
}


@pytest.fixture(scope="module")
def tiny_phantom(tmp_path_factory: pytest.TempPathFactory) -> str:
    from acdc_wsss.data.phantom import make_phantom

    return str(make_phantom(tmp_path_factory.mktemp("ph") / "acdc", patients=5, seed=0, progress=False))


def _cfg(tmp_path: Path, phantom: str, **kw) -> L2GConfig:
    return L2GConfig(**{**TINY, "dataset_dir": phantom, "output_dir": str(tmp_path / "run"), **kw})


def test_l2g_learns_and_writes_its_outputs(tmp_path: Path, tiny_phantom: str) -> None:
    stage = run_l2g(_cfg(tmp_path, tiny_phantom, epochs=4))
    metrics = json.loads((stage / "metrics.json").read_text())["epochs"]
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4]
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    assert {"attention", "cls_local", "cls_global", "bg_local"} <= set(metrics[0])
    assert metrics[-1]["val"]["map"] > metrics[-1]["val"]["prior_map"]
    manifest = json.loads((stage / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["classes"] == ["RV", "Myo", "LV"]
    assert manifest["seed"] == 0 and manifest["config"]["l2g"] is True
    assert set(manifest["splits"]["training"]).isdisjoint(manifest["splits"]["validation"])
    ckpt = torch.load(stage / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "trainer"} <= set(ckpt) and ckpt["epoch"] == 4
    assert (stage / "best.pt").is_file() and (tmp_path / "run" / "datalist.json").is_file()
    assert any(k.startswith("local_net.") for k in ckpt["model"])


def test_baseline_is_global_only_with_classification_loss(tmp_path: Path, tiny_phantom: str) -> None:
    stage = run_l2g(_cfg(tmp_path, tiny_phantom, epochs=1, l2g=False))
    row = json.loads((stage / "metrics.json").read_text())["epochs"][0]
    assert set(row) >= {"loss", "cls_global"} and "attention" not in row and "cls_local" not in row
    assert row["loss"] == pytest.approx(row["cls_global"])
    ckpt = torch.load(stage / "last.pt", weights_only=True)
    assert not any(k.startswith("local_net.") for k in ckpt["model"])
    (stage / "evaluation_validation.json").write_text("{}")  # an output of the old run
    run_l2g(_cfg(tmp_path, tiny_phantom, epochs=1, l2g=False, overwrite=True))
    assert not (stage / "evaluation_validation.json").exists() and (stage / "last.pt").is_file()


def test_killed_mid_epoch_and_resumed_equals_uninterrupted(tmp_path: Path, tiny_phantom: str) -> None:
    straight = run_l2g(_cfg(tmp_path / "a", tiny_phantom, epochs=2))

    def kill_in_epoch_2(trainer) -> None:
        @trainer.on(Events.ITERATION_COMPLETED)
        def _kill(engine) -> None:
            if engine.state.epoch == 2 and engine.state.iteration % engine.state.epoch_length == 2:
                raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        run_l2g(_cfg(tmp_path / "b", tiny_phantom, epochs=2), handlers=(kill_in_epoch_2,))
    interrupted = tmp_path / "b" / "run" / "l2g"
    assert torch.load(interrupted / "last.pt", weights_only=True)["epoch"] == 1
    with pytest.raises(FileExistsError, match="--resume True"):
        run_l2g(_cfg(tmp_path / "b", tiny_phantom, epochs=2))
    resumed = run_l2g(_cfg(tmp_path / "b", tiny_phantom, epochs=2, resume=True))
    a = torch.load(straight / "last.pt", weights_only=True)["model"]
    b = torch.load(resumed / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    history = json.loads((resumed / "metrics.json").read_text())["epochs"]
    assert [h["epoch"] for h in history] == [1, 2]
    # best.pt and its score survive the resume: epoch 1 is the best one here, and the resumed epoch 2,
    # worse, must not replace it (before 0.2.0 the resumed run's best score restarted at -inf)
    best_a, best_b = (torch.load(r / "best.pt", weights_only=True) for r in (straight, resumed))
    assert best_a["epoch"] == 1, "the test needs a run whose best epoch is not its last"
    assert best_b["epoch"] == best_a["epoch"] and best_b["metrics"] == best_a["metrics"]
    for k in best_a["model"]:
        torch.testing.assert_close(best_a["model"][k], best_b["model"][k], rtol=1e-5, atol=1e-6, msg=k)
    with pytest.raises(ValueError, match="other settings"):
        run_l2g(_cfg(tmp_path / "b", tiny_phantom, epochs=3, resume=True, lr=0.5))


def test_two_runs_with_one_seed_are_identical_and_record_it_the_second_on_the_first_ones_cache(
    tmp_path: Path, tiny_phantom: str
) -> None:
    # preprocessing draws random numbers; seeded before it, a rerun reading the cache trained other weights
    first = run_l2g(_cfg(tmp_path / "a", tiny_phantom, epochs=1, seed=3))  # preprocesses into its cache
    cache = first.parent / "cache"
    assert any(cache.rglob("*.pt")), "the test needs the first run to fill its cache"
    shutil.copytree(cache, tmp_path / "b" / "run" / "cache")
    runs = [first, run_l2g(_cfg(tmp_path / "b", tiny_phantom, epochs=1, seed=3))]  # reads every volume
    manifests = [json.loads((r / "manifest.json").read_text()) for r in runs]
    assert manifests[0]["seed"] == manifests[1]["seed"] == 3

    def metrics(m: dict) -> list:
        return [{k: v for k, v in h.items() if k != "epoch_s"} for h in m["history"]]

    assert metrics(manifests[0]) == metrics(manifests[1])  # exactly, not approximately
    assert manifests[0]["final_validation"] == manifests[1]["final_validation"]
    a, b = (torch.load(r / "last.pt", weights_only=True)["model"] for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = run_l2g(_cfg(tmp_path / "c", tiny_phantom, epochs=1, seed=4))
    c = torch.load(other / "last.pt", weights_only=True)["model"]
    assert not all(torch.equal(a[k], c[k]) for k in a)  # the seed does change the run


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"epochs": "three"}, "epochs must be int"),
        ({"l2g": "false"}, "l2g must be bool"),
        ({"lr": -1.0}, "lr must be > 0"),
        ({"optimizer": "lbfgs"}, "optimizer must be"),
        ({"dataset_dir": 3}, "dataset_dir must be str or NoneType"),
    ],
)
def test_config_refuses_bad_overrides(override: dict, message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        L2GConfig(**override)


def test_evaluate_and_refusals_of_missing_or_foreign_stage1(tmp_path: Path, tiny_phantom: str) -> None:
    cfg = _cfg(tmp_path, tiny_phantom, epochs=1)
    with pytest.raises(FileNotFoundError, match=r"bundles/l2g_acdc/train\.json"):
        evaluate_l2g(cfg)
    stage = run_l2g(cfg)
    result = evaluate_l2g(cfg, split="validation", checkpoint="last")
    assert result["split"] == "validation" and 0 <= result["map"] <= 1 and "cam_dice" in result
    assert json.loads((stage / "evaluation_validation.json").read_text())["slices"] == result["slices"]
    # another split is scored at the settings validation chose, never at its own best
    train = evaluate_l2g(cfg, split="training", checkpoint="last")
    assert train["selected_on"] == "validation" and result["selected_on"] == "validation"
    assert (train["cam_bg_score"], train["bg_channel_threshold"]) == (
        result["cam_bg_score"],
        result["bg_channel_threshold"],
    )
    assert train["cam_dice_mean"] == pytest.approx(train["cam_dice_sweep"][str(train["cam_bg_score"])])
    datalist = json.loads((tmp_path / "run" / "datalist.json").read_text())
    (tmp_path / "run" / "datalist.json").write_text(json.dumps({**datalist, "validation": []}))
    fixed = evaluate_l2g(cfg, split="training", checkpoint="last")
    assert fixed["selected_on"] == "fixed default (no validation split)"
    assert (fixed["cam_bg_score"], fixed["bg_channel_threshold"]) == (DEFAULT_BG_SCORE, DEFAULT_BG_THRESHOLD)
    (tmp_path / "run" / "datalist.json").write_text(json.dumps(datalist))
    # another architecture's checkpoint
    manifest = json.loads((stage / "manifest.json").read_text())
    manifest["config"]["width"] = 0.25
    (stage / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="does not fit the architecture"):
        load_l2g(tmp_path / "run", "last")
    manifest["status"] = "running"
    (stage / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="unfinished"):
        load_l2g(tmp_path / "run", "last")
    manifest["stage"] = "seg"
    (stage / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="belongs to stage 'seg'"):
        load_l2g(tmp_path / "run", "last")


def test_train_bench_prints_both_methods(tiny_phantom: str) -> None:
    root = Path(__file__).resolve().parents[2]
    args = ["--data", tiny_phantom, "--width", "0.125", "--num_views", "4", "--model_batches", "2"]
    run = run_command([sys.executable, str(root / "bench" / "train.py"), *args], check=True)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["baseline"]["slices_per_s"] > 0 and result["l2g"]["slices_per_s"] > 0
    assert result["l2g_overhead"] > 0  # the local network and its views cost time
    assert result["peak_rss_mb"] > 0
