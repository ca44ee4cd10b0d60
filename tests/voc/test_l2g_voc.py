"""The stage-1 bundle on the 17 real VOC images through the VOC override: one short epoch, small inputs."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from acdc_wsss.layout import RunLayout
from acdc_wsss.pseudo.store import KeptLabels
from tests.commands import run_command
from tests.conftest import VOC_DIR

ROOT = Path(__file__).resolve().parents[2]


def test_l2g_bundle_runs_on_voc_with_the_override(tmp_path: Path) -> None:
    if not (VOC_DIR / "VOC2012" / "JPEGImages").is_dir():
        pytest.skip(f"real VOC images not found at {VOC_DIR}")
    configs = "['bundles/l2g_acdc/train.json','voc_adapter/configs/l2g_train.json']"
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        configs,
        "--dataset_dir",
        str(VOC_DIR),
    ]
    cmd += ["--output_dir", str(tmp_path / "run"), "--image_size", "64", "--epochs", "1", "--width", "0.125"]
    cmd += ["--num_views", "4", "--progress", "False"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = run_command(cmd, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stderr.count("no Sal/ saliency maps") == 1  # said once, and the run goes on
    manifest = json.loads((tmp_path / "run" / "l2g" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["in_channels"] == 3
    assert len(manifest["classes"]) == 20 and manifest["preprocess"]["image_size"] == 64
    datalist = json.loads((tmp_path / "run" / "datalist.json").read_text())
    assert manifest["splits"]["training"] == [it["id"] for it in datalist["training"]]
    assert len(manifest["splits"]["training"]) == 10 and len(manifest["splits"]["validation"]) == 5
    held = manifest["splits"]["holdout"]  # 15 % of the 12 train images, never trained on
    assert len(held) == 2 and not set(held) & set(manifest["splits"]["training"])
    val = json.loads((tmp_path / "run" / "l2g" / "metrics.json").read_text())["epochs"][0]["val"]
    assert 0 < val["map"] <= 1 and val["prior_map"] < val["map"]  # better than the constant classifier


def test_two_voc_runs_with_one_seed_draw_the_same_crops_and_end_equal(tmp_path: Path) -> None:
    """VOC's random training crops and flips derive from the run's seed and the epoch, as the data order."""
    if not (VOC_DIR / "VOC2012" / "JPEGImages").is_dir():
        pytest.skip(f"real VOC images not found at {VOC_DIR}")
    import torch

    import voc_adapter  # noqa: F401  (registers the voc data set)
    from acdc_wsss.l2g import run_l2g

    def run(name: str, seed: int, workers: int = 0) -> dict[str, torch.Tensor]:
        cfg = {"dataset": "voc", "dataset_dir": str(VOC_DIR), "output_dir": str(tmp_path / name)}
        cfg |= {"seed": seed, "num_workers": workers, "image_size": 48, "epochs": 2, "width": 0.125}
        cfg |= {"num_views": 4, "progress": False}
        return torch.load(run_l2g(cfg) / "last.pt", weights_only=True)["model"]

    a, b, c = run("a", 3), run("b", 3), run("c", 4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)  # the seed does change the run
    d, e = run("d", 3, workers=2), run("e", 3, workers=2)  # with DataLoader workers too
    assert all(torch.equal(d[k], e[k]) for k in d)


def test_unknown_dataset_is_refused_with_the_adapter_hint(tmp_path: Path) -> None:
    from acdc_wsss.data.registry import DATASETS, get_dataset

    saved = DATASETS.pop("voc", None)
    try:
        with pytest.raises(ValueError, match="import voc_adapter"):
            get_dataset("voc")
    finally:
        if saved is not None:
            DATASETS["voc"] = saved


def test_whole_voc_command_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    if not (VOC_DIR / "VOC2012" / "JPEGImages").is_dir():
        pytest.skip(f"real VOC images not found at {VOC_DIR}")
    from voc_adapter.__main__ import main

    out = tmp_path / "run"
    args = [
        "run",
        "--voc-root",
        str(VOC_DIR),
        "--output_dir",
        str(out),
        "--image_size",
        "64",
        "--epochs",
        "1",
    ]
    args += ["--seg_epochs", "1", "--width", "0.125", "--cam_scales", "0.5", "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "+ PCM revision, dense CRF on the photo (RGB)" in printed and "**mIoU**" in printed
    pseudo = json.loads((out / "cam" / "pseudo" / "manifest.json").read_text())
    assert (
        pseudo["row"] == "pcm_crf" and len(pseudo["volumes"]) == 17 and not (out / "cam" / "nifti").exists()
    )
    key = pseudo["volumes"][0]
    target = np.array(Image.open(out / "cam" / "pseudo" / f"{key}_target.png"))
    with Image.open(VOC_DIR / "VOC2012" / "JPEGImages" / f"{key}.jpg") as im:
        assert target.shape == (im.size[1], im.size[0])
    assert set(np.unique(target).tolist()) <= set(range(21)) | {255}
    # the export read the labels the evaluation kept at the chosen CRF setting; the other settings' are gone
    kept = KeptLabels(out, "pcm_crf", pseudo["value"])
    assert [p.name for p in kept.folder.parent.iterdir()] == [kept.folder.name]
    scored = sorted(p.stem for p in kept.folder.glob("*.npz"))
    assert len(scored) >= 5
    for name in scored[:3]:
        with np.load(RunLayout(out).cam.pseudo_labels(name)) as z:
            assert np.array_equal(z["labels"], kept.get(name))
    table = json.loads((out / "cam" / "evaluation_validation.json").read_text())
    assert (
        table["selected_on"] == "holdout" and table["split"] == "validation"
    )  # CRF setting not chosen on val
    result = json.loads((out / "seg" / "evaluation_validation.json").read_text())
    assert result["images"] == 5 and len(result["iou"]) == 21 and 0 <= result["miou"] <= 1
    assert result["seed"] == pseudo["seed"] == 0  # recorded in every manifest and evaluation
    assert len(list((out / "predictions").glob("*.png"))) == 5
    assert main(["run", "--voc-root", str(VOC_DIR), "--stages", "magic"]) == 2


def test_miou_by_hand(tmp_path: Path) -> None:
    from voc_adapter.segment import evaluate_voc

    ref = np.zeros((4, 4), np.uint8)
    ref[:2, :2] = 15  # 4 person pixels
    ref[3, 3] = 255  # void: not scored
    pred = np.zeros((4, 4), np.uint8)
    pred[:2, :1] = 15  # 2 of them found
    pred[3, 3] = 15  # on void: ignored
    Image.fromarray(ref).save(tmp_path / "mask.png")
    (tmp_path / "predictions").mkdir()
    Image.fromarray(pred).save(tmp_path / "predictions" / "x.png")
    datalist = {"validation": [{"id": "x", "label": str(tmp_path / "mask.png")}]}
    (tmp_path / "datalist.json").write_text(json.dumps(datalist))
    result = evaluate_voc(tmp_path, "validation")
    # person: I 2, union 4 -> 0.5; background: 11 true pixels all found, 2 missed person pixels predicted
    # background too -> I 11, union 13; other classes absent (nan, left out of the mean)
    assert result["iou"]["person"] == pytest.approx(0.5)
    assert result["iou"]["background"] == pytest.approx(11 / 13)
    assert result["miou"] == pytest.approx((0.5 + 11 / 13) / 2)


def test_photos_never_train_on_their_reported_split(tmp_path: Path) -> None:
    from monai.bundle import ConfigParser

    from acdc_wsss.seg import SegConfig
    from voc_adapter.dataset import voc_seg_data

    with pytest.raises(ValueError, match="train_on_validation must be False on photos"):
        voc_seg_data(tmp_path, {}, SegConfig(network="deeplab"))  # the ACDC default is refused first
    parser = ConfigParser()
    parser.read_config(
        [
            ROOT / "bundles" / "deeplab_acdc" / "train.json",
            ROOT / "voc_adapter" / "configs" / "deeplab_train.json",
        ]
    )
    assert parser.get_parsed_content("train_on_validation") is False  # the VOC override turns it off
    assert ConfigParser.load_config_file(ROOT / "bundles" / "deeplab_acdc" / "train.json")[
        "train_on_validation"
    ]
