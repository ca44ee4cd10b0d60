"""Stage 3's confidence-weighted loss, the self-training relabel step and the ensemble, by hand."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from acdc_wsss.data.slices import volume_key
from acdc_wsss.labels import IGNORE
from acdc_wsss.layout import RunLayout
from acdc_wsss.report import write_report
from acdc_wsss.seg import (
    SegConfig,
    SegEnsemble,
    SegNet,
    load_seg,
    network_def,
    predict,
    run_seg,
    with_checkpoint,
)
from acdc_wsss.seg.model import network_slices, slice_input, volume_slices
from acdc_wsss.seg.rounds import labels_dice, relabel, relabel_volume
from acdc_wsss.seg.train import SegLoss


def test_weighted_cross_entropy_by_hand() -> None:
    logits = torch.zeros(1, 2, 1, 3)
    logits[0, 1, 0, 0] = math.log(3.0)  # p(1) = 3/4 at pixel 0; 1/2 elsewhere
    target = torch.tensor([[[1, 0, IGNORE]]])
    weight = torch.tensor([[[1.0, 0.5, 1.0]]])
    loss = SegLoss()({"logits": logits}, target, weight)
    want = (1.0 * -math.log(0.75) + 0.5 * -math.log(0.5)) / 1.5  # the ignored pixel counts nowhere
    assert abs(loss.item() - want) < 1e-6
    unweighted = SegLoss()({"logits": logits}, target)
    assert abs(unweighted.item() - (-math.log(0.75) - math.log(0.5)) / 2) < 1e-6
    zero_weight = SegLoss()({"logits": logits}, target, torch.tensor([[[0.0, 1.0, 1.0]]]))
    assert abs(zero_weight.item() + math.log(0.5)) < 1e-6


def test_label_smoothing_and_bootstrapping_by_hand() -> None:
    logits = torch.zeros(1, 2, 1, 2)
    logits[0, 0, 0, 0] = 2.0  # p(0) = e^2 / (e^2 + 1) at pixel 0
    target = torch.tensor([[[0, IGNORE]]])
    p0 = math.exp(2) / (math.exp(2) + 1)
    smooth = SegLoss(label_smoothing=0.2)({"logits": logits}, target)
    assert abs(smooth.item() + 0.9 * math.log(p0) + 0.1 * math.log(1 - p0)) < 1e-6  # 0.2 spread on 2 classes
    boot = SegLoss(bootstrap=0.8)({"logits": logits}, target)
    own = p0 * math.log(p0) + (1 - p0) * math.log(1 - p0)
    assert abs(boot.item() + 0.8 * math.log(p0) + 0.2 * own) < 1e-6
    # a confident prediction against the label costs less with bootstrapping than with the label alone
    sure, label = torch.tensor([0.0, 6.0]).view(1, 2, 1, 1), torch.zeros(1, 1, 1, dtype=torch.long)
    assert (
        SegLoss(bootstrap=0.8)({"logits": sure}, label).item()
        < 0.85 * SegLoss()({"logits": sure}, label).item()
    )


def test_dice_ce_adds_a_dice_term_that_falls_as_the_prediction_fits() -> None:
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, 1:3, 1:3] = 1
    good = torch.stack([(target == 0).float(), (target == 1).float()], 1) * 10
    bad = good.flip(1)
    loss = SegLoss(dice=True)
    assert loss({"logits": good}, target).item() < 0.01
    assert loss({"logits": bad}, target).item() > loss({"logits": good}, target).item() + 1.0
    assert loss({"logits": good}, target).item() >= SegLoss()({"logits": good}, target).item()


def test_relabel_fuses_gates_by_tags_and_scores_confidence() -> None:
    s, k, h, w = 2, 4, 8, 8
    probs = np.full((s, k, h, w), 0.1, np.float32)
    probs[:, 0] = 0.7  # the network says background everywhere ...
    probs[:, 3, 2:6, 2:6] = 0.8  # ... but LV in the middle
    probs[:, 0, 2:6, 2:6] = 0.0
    probs /= probs.sum(1, keepdims=True)
    stage2 = np.zeros((h, w, s), np.uint8)
    stage2[2:6, 2:6, :] = 3
    stage2[0, 0, :] = 1  # a stray RV pixel of the rules
    tags = np.array([[0, 0, 1], [0, 0, 0]], np.float32)  # slice 1 holds no LV
    labels, conf = relabel_volume(probs, stage2, tags, fuse=0.7)
    assert labels.shape == (h, w, s) and conf.shape == (h, w, s)
    assert (labels[2:6, 2:6, 0] == 3).all() and labels[..., 1].max() == 0 and labels[0, 0, 0] == 0
    assert conf[3, 3, 0] > 0.9 and 0 < conf[0, 0, 0] < conf[7, 7, 0]  # the disputed pixel is less sure
    tags_lv = np.array([[0, 0, 1], [0, 0, 1]], np.float32)
    probs_none = probs.copy()
    probs_none[1, 3] = 0  # the network finds no LV on slice 1 although the tags say it is there
    probs_none[1] /= probs_none[1].sum(0, keepdims=True)
    _, conf = relabel_volume(probs_none, np.zeros_like(stage2), tags_lv, fuse=0.0)
    assert conf[..., 1].max() == 0


def test_relabel_of_chosen_items_mixes_each_es_frame_with_its_ed_frame(
    chain_run: tuple[Path, dict], tmp_path: Path
) -> None:
    run, _ = chain_run
    layout = RunLayout(run)
    patient = layout.split("training")[0]["patient"]
    items = [it for it in layout.split("training") if it["patient"] == patient][::-1]  # ES first: sorted
    assert sorted(it["phase"] for it in items) == ["ED", "ES"]
    _, model = load_seg(run, "last")

    def labels(temporal: float | None) -> dict[str, np.ndarray]:
        dest = relabel(
            run, model, tmp_path / str(temporal), fuse=0.4, progress=False, items=items, temporal=temporal
        )
        assert json.loads((dest / "manifest.json").read_text())["temporal"] == temporal
        assert sorted(p.name for p in dest.glob("*.npz")) == sorted(f"{volume_key(it)}.npz" for it in items)
        return {it["phase"]: np.load(dest / f"{volume_key(it)}.npz")["labels"] for it in items}

    alone, unmixed, mixed = labels(None), labels(0.0), labels(0.9)
    for phase in ("ED", "ES"):  # an ED frame's weight of 0 leaves each frame its own fused labels
        assert np.array_equal(alone[phase], unmixed[phase])
    assert np.array_equal(mixed["ED"], alone["ED"])  # the ED frame is never mixed
    assert (mixed["ES"] != alone["ES"]).any()  # the ES frame takes its ED frame's carried labels


def test_self_training_round_relabels_trains_again_and_tables(run_copy: Path, tiny: dict) -> None:
    run = RunLayout(run_copy)
    shutil.rmtree(run.seg.path)
    cfg = SegConfig(output_dir=str(run_copy), rounds=1, progress=False, **tiny["seg"])
    assert run_seg(cfg) == run.seg.path
    first, labels = run.seg_round(0), run.seg_round(1).pseudo
    assert first.best.is_file() and not run.seg_round(1).best.is_file()  # the last round trains in seg/
    assert json.loads(run.seg.manifest.read_text())["config"]["pseudo_dir"] == str(labels)
    stage2 = RunLayout(run_copy).cam.pseudo
    trained = {f"{volume_key(it)}.npz" for it in run.split("training") + run.split("validation")}
    assert {p.name for p in labels.glob("*.npz")} == trained  # the volumes the next network trains on
    for path in sorted(stage2.glob("*.npz")):
        if not (labels / path.name).is_file():
            continue
        with np.load(path) as a, np.load(labels / path.name) as b:
            assert b["labels"].shape == a["labels"].shape and b["confidence"].dtype == np.float16
            assert set(np.unique(b["labels"])) <= {0, 1, 2, 3}
    table = json.loads(run.rounds.read_text())["rounds"]
    assert [row["round"] for row in table] == [0, 1] and table[0]["labels"] == "stage 2"
    assert table[0]["training_labels"] == labels_dice(run_copy)  # round 0 learns from stage 2's labels
    assert all(0 <= row["training_labels"]["mean"] <= 1 and "validation_dice" in row for row in table)
    assert not any(row["validation_held_out"] for row in table)  # they trained on the validation patients
    report = write_report(run_copy).read_text()
    assert "## Stage-3 rounds" in report and "| 1 | network of round 0 | " in report
    assert (
        "(trained on their pseudo labels)" in report and "pseudo labels too: `train_on_validation`" in report
    )
    stamp = first.best.stat().st_mtime_ns
    run_seg(SegConfig(output_dir=str(run_copy), rounds=1, progress=False, **tiny["seg"]))  # all done: kept
    assert first.best.stat().st_mtime_ns == stamp


def test_volume_slices_stack_neighbours_as_channels() -> None:
    image = torch.arange(3.0)[None, None, None, :].expand(2, 1, 1, 3)  # (C=2, H, W, S=3): slice z holds z
    x = volume_slices(image, context=1)
    assert x.shape == (3, 6, 1, 1)
    want = [[0, 0, 0, 0, 1, 1], [0, 0, 1, 1, 2, 2], [1, 1, 2, 2, 2, 2]]  # z-1, z, z+1; ends repeated
    assert x[:, :, 0, 0].tolist() == want
    assert torch.equal(volume_slices(image), image.permute(3, 0, 1, 2))
    assert torch.equal(slice_input(image, 2, context=1), x[2])  # a training sample is its slice's input


def test_the_motion_map_follows_the_image_channels() -> None:
    image = torch.arange(3.0)[None, None, None, :].expand(1, 1, 1, 3)  # slice z holds z
    motion = 10 + image  # slice z's motion map holds 10 + z
    x = volume_slices(image, context=1, motion=motion)
    assert x[:, :, 0, 0].tolist() == [[0, 0, 1, 10, 10, 11], [0, 1, 2, 10, 11, 12], [1, 2, 2, 11, 12, 12]]
    assert torch.equal(slice_input(image, 1, 1, motion), x[1])
    net = SegNet(4, 2, SegConfig(width=0.125, motion_input=True))
    assert torch.equal(network_slices(net, image, motion), volume_slices(image, 0, motion))
    with pytest.raises(ValueError, match="motion map"):
        network_slices(net, image)  # a network that reads the map refuses a volume without one
    assert torch.equal(network_slices(SegNet(4, 1, SegConfig(width=0.125)), image, motion), x[:, 1:2])


def test_the_motion_map_moves_with_the_image_and_drops_out() -> None:
    from acdc_wsss.seg.data import PseudoLabelSlices, augmentation

    img = torch.rand(1, 32, 32, 4)

    class Volumes:  # what the training slices read of a SliceDataset
        def __init__(self) -> None:
            self.volumes = [{"image": img, "motion": img.clone().half()}]
            self.index = [(0, z) for z in range(4)]

        def __len__(self) -> int:
            return 4

    targets = [np.zeros((32, 32, 4), np.uint8)]
    keep = SegConfig(motion_input=True, motion_dropout=0.0, aug_intensity=0.0, aug_gamma=0.0)
    aug = augmentation(keep)
    aug.set_random_state(0)
    ds = PseudoLabelSlices(Volumes(), targets, aug, motion=True)  # type: ignore[arg-type]
    samples = [ds[i % 4]["image"] for i in range(12)]
    assert all(s.shape == (2, 32, 32) for s in samples)
    assert any(not torch.equal(s[0], img[0, ..., i % 4]) for i, s in enumerate(samples))  # moved
    assert all(torch.allclose(s[0], s[1], atol=2e-3) for s in samples)  # ...and the map with it
    drop = augmentation(SegConfig(motion_input=True, motion_dropout=0.5, aug_intensity=0.0, aug_gamma=0.0))
    drop.set_random_state(0)
    ds = PseudoLabelSlices(Volumes(), targets, drop, motion=True)  # type: ignore[arg-type]
    zeroed = [bool((ds[i % 4]["image"][1] == 0).all()) for i in range(40)]
    assert 8 <= sum(zeroed) <= 32  # about half the slices lose their map


def test_the_elastic_and_bias_field_augmentations_keep_the_target_with_the_image() -> None:
    from acdc_wsss.seg.data import augmentation

    def steps(cfg: SegConfig) -> list[str]:
        return [type(t).__name__ for t in augmentation(cfg).transforms]

    assert not {"Rand2DElasticd", "RandBiasFieldd"} & set(steps(SegConfig()))  # off by default
    quiet = dict(aug_scale=0.0, aug_rotate=0.0, aug_flip=False, aug_intensity=0.0, aug_gamma=0.0)
    image = 1 + torch.linspace(0, 1, 48)[None, :, None].expand(1, 48, 48).clone()  # a ramp from 1 to 2
    target = (image > 1.5).float()  # label 1 on the ramp's bright half

    def sample(aug: Callable) -> tuple[np.ndarray, np.ndarray]:
        d = aug({"image": image.clone(), "target": target.clone(), "weight": torch.ones(1, 48, 48)})
        return np.asarray(d["image"]), np.asarray(d["target"])

    elastic = augmentation(SegConfig(aug_elastic=4.0, **quiet))
    elastic.set_random_state(0)
    moved = 0
    for _ in range(30):
        img, tgt = sample(elastic)
        assert set(np.unique(tgt)) <= {0.0, 1.0}  # nearest: labels stay labels
        assert ((img > 1.5) == (tgt == 1)).mean() > 0.97  # the boundary moved with the image
        moved += not np.array_equal(tgt, target.numpy())
    assert 4 <= moved <= 18  # about a third of the slices
    bias = augmentation(SegConfig(aug_bias=0.5, **quiet))
    bias.set_random_state(0)
    shaded = 0
    for _ in range(20):
        img, tgt = sample(bias)
        assert np.array_equal(tgt, target.numpy())  # intensity only
        ratio = img / image.numpy()
        shaded += ratio.std() > 1e-3  # a field that varies over the slice, not a constant gain
    assert 4 <= shaded <= 16  # about half the slices


def test_a_2_5d_network_with_the_motion_map_trains_and_segments(run_copy: Path, tiny: dict) -> None:
    run = RunLayout(run_copy)
    shutil.rmtree(run.seg.path)
    both = {"context_slices": 1, "motion_input": True}
    run_seg(SegConfig(output_dir=str(run_copy), progress=False, **both, **tiny["seg"]))
    manifest, model = load_seg(run_copy)
    assert manifest["in_channels"] == 6 and model.context == 1 and model.motion  # (image + map) x 3 slices
    (row,) = json.loads(run.rounds.read_text())["rounds"]  # no self-training: a one-line table
    assert (
        row["round"] == 0 and row["labels"] == "stage 2" and row["training_labels"] == labels_dice(run_copy)
    )
    where = predict(run_copy, split="testing", progress=False)
    masks = sorted(where.glob("*_seg.nii.gz"))
    assert masks and len(masks) == len(run.split("testing"))
    frame = run.split("testing")[0]["image"]  # a single file: no partner, so an empty map
    single = predict(run_copy, images=[frame], progress=False)
    assert len(json.loads((single / "manifest.json").read_text())["files"]) == 1


def test_an_ensemble_trains_each_network_and_answers_their_mean(run_copy: Path, tiny: dict) -> None:
    run = RunLayout(run_copy)
    shutil.rmtree(run.seg.path)
    cfg = SegConfig(output_dir=str(run_copy), ensemble=2, progress=False, **tiny["seg"])
    assert run_seg(cfg) == run.seg.path
    member = run.seg_member(1)
    assert member.complete and run.seg.complete
    seeds = [json.loads(p.read_text())["seed"] for p in (run.seg.manifest, member.manifest)]
    assert seeds == [0, 1]  # the second network differs by its seed alone
    manifest, model = load_seg(run_copy)
    assert isinstance(model, SegEnsemble) and len(model.members) == 2
    a, b = (torch.load(p, weights_only=True)["model"] for p in (run.seg.last, member.last))
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(3, manifest["in_channels"], 64, 64)
    with torch.no_grad():
        each = [torch.softmax(m(x)["logits"], 1) for m in model.members]
        got = torch.softmax(model(x)["logits"], 1)
        bundle = with_checkpoint(network_def(run_copy), run_copy)  # the bundle's network: the same mean
        via_bundle = torch.softmax(bundle(x), 1)
    assert torch.allclose(got, (each[0] + each[1]) / 2, atol=1e-6)
    assert isinstance(bundle, SegEnsemble) and torch.allclose(via_bundle, got, atol=1e-6)
    where = predict(run_copy, split="testing", progress=False)
    assert len(sorted(where.glob("*_seg.nii.gz"))) == len(run.split("testing"))
    stamp = member.last.stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="holds a run"):  # refused before any network trains again
        run_seg(cfg)
    assert member.last.stat().st_mtime_ns == stamp
    shutil.rmtree(run.seg.path)  # seg/ lost, its member kept: only seg/ trains again
    run_seg(cfg)
    assert member.last.stat().st_mtime_ns == stamp and run.seg.complete
    shutil.rmtree(run.seg.path)  # a member finished with other settings is refused, not kept
    with pytest.raises(ValueError, match="trained with other settings"):
        run_seg(dataclasses.replace(cfg, lr=cfg.lr / 2))
    assert member.last.stat().st_mtime_ns == stamp
    run_seg(cfg)
    shutil.rmtree(member.path)  # a member lost: loading names the command that makes it
    with pytest.raises(FileNotFoundError, match=r"monai\.bundle run"):
        load_seg(run_copy)


def test_a_moving_average_of_the_weights_is_the_network_it_saves(run_copy: Path, tiny: dict) -> None:
    run = RunLayout(run_copy)
    shutil.rmtree(run.seg.path)
    run_seg(SegConfig(output_dir=str(run_copy), ema=0.9, progress=False, **tiny["seg"]))
    saved = torch.load(run.seg.last, weights_only=True)
    averaged, raw = saved["model"], saved["training_model"]
    steps = saved["trainer"]["iteration"]
    assert int(saved["averaging"]["n_averaged"]) == steps > 1  # updated once per step
    assert all(torch.equal(averaged[k], saved["averaging"][f"module.{k}"]) for k in averaged)
    assert any(not torch.equal(averaged[k], raw[k]) for k in raw)  # the average lags the raw weights
    _, model = load_seg(run_copy)  # inference and validation use the average
    assert all(torch.equal(v, averaged[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="ema must be in"):
        SegConfig(ema=1.0)
