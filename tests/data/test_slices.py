"""2D slice dataset: tags, caching, tag CSV, putting slices back into volumes (acdc_wsss.data.slices)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from acdc_wsss.data.acdc import make_datalist, read_datalist, read_patients, write_datalist
from acdc_wsss.data.preprocess import PreprocessConfig
from acdc_wsss.data.slices import SliceDataset, read_tag_csv, write_tag_csv
from acdc_wsss.errors import DatasetError


@pytest.fixture(scope="module")
def phantom_items(phantom_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    path = tmp_path_factory.mktemp("dl") / "datalist.json"
    write_datalist(make_datalist(read_patients(phantom_dir), phantom_dir), path)
    return read_datalist(path)


def _hand_tags(label_path: str) -> np.ndarray:
    gt = np.asarray(nib.load(label_path).dataobj)
    return np.array([[(gt[..., z] == c).any() for c in (1, 2, 3)] for z in range(gt.shape[-1])], np.float32)


def test_real_tags_match_hand_counts_and_design_facts(real_slices: SliceDataset) -> None:
    for v in (0, 57, 159):
        np.testing.assert_array_equal(
            real_slices.volumes[v]["tags"].numpy(), _hand_tags(real_slices.items[v]["label"])
        )
    tags = real_slices.tags().numpy()
    assert len(real_slices) == tags.shape[0] == 1552
    # the 80 real patients: 80.6% of slices carry all three tags, 3.6% none; RV absent from 18.6%
    assert (tags.sum(1) == 3).mean() == pytest.approx(0.806, abs=0.001)
    assert (tags.sum(1) == 0).mean() == pytest.approx(0.036, abs=0.001)
    np.testing.assert_allclose(1 - tags.mean(0), [0.186, 0.043, 0.053], atol=0.001)


def test_samples_and_batches(phantom_items: list[dict]) -> None:
    ds = SliceDataset(phantom_items, progress=False)
    s = ds[3]
    assert s["image"].shape == s["motion"].shape == s["label"].shape == (1, 128, 128)
    assert s["tags"].shape == (3,) and s["has_label"] and s["volume"] == 0 and s["slice"] == 3
    assert set(torch.unique(s["label"]).tolist()) <= {0, 1, 2, 3}
    # tags agree with the preprocessed label slice (the crop keeps the heart)
    present = [bool((s["label"] == c).any()) for c in (1, 2, 3)]
    assert s["tags"].bool().tolist() == present
    batch = next(iter(DataLoader(ds, batch_size=4, shuffle=False)))
    assert batch["image"].shape == (4, 1, 128, 128) and batch["tags"].shape == (4, 3)
    assert batch["slice"].tolist() == [0, 1, 2, 3] and batch["patient"] == ["patient001"] * 4


def test_slices_stack_back_to_the_source_grid(phantom_items: list[dict]) -> None:
    ds = SliceDataset(phantom_items[:2], progress=False)
    v = 1
    per_slice = {ds[i]["slice"]: ds[i]["label"].float() for i in range(len(ds)) if ds[i]["volume"] == v}
    stacked = ds.stack(v, per_slice)
    assert torch.equal(stacked, ds.volumes[v]["label"].float())
    back = ds.to_original(v, stacked)
    src = nib.load(phantom_items[v]["label"])
    assert tuple(back.shape[1:]) == src.shape
    np.testing.assert_allclose(back.affine.numpy(), src.affine, atol=1e-6)
    with pytest.raises(ValueError, match="slices"):
        ds.stack(v, list(per_slice.values())[:-1])


def test_preprocessing_leaves_the_global_random_state_alone(
    phantom_items: list[dict], tmp_path: Path
) -> None:
    torch.manual_seed(0)
    state = torch.get_rng_state()
    for workers in (0, 2):  # a loader without its own generator draws its workers' seed from the global one
        SliceDataset(
            phantom_items[:2], cache_dir=tmp_path / str(workers), num_workers=workers, progress=False
        )
        assert torch.equal(torch.get_rng_state(), state), workers


def test_cache_is_reused_and_invalidated(phantom_items: list[dict], tmp_path: Path, caplog) -> None:
    items = phantom_items[:4]  # two patients
    with caplog.at_level(logging.INFO, logger="acdc_wsss.data.slices"):
        first = SliceDataset(items, cache_dir=tmp_path, progress=False)
        assert "4 preprocessed, 0 from cache" in caplog.text
        caplog.clear()
        again = SliceDataset(items, cache_dir=tmp_path, progress=False)
        assert "0 preprocessed, 4 from cache" in caplog.text
        assert torch.equal(first.volumes[1]["image"].as_tensor(), again.volumes[1]["image"].as_tensor())
        # cached volumes still invert (transform ids were made process-independent)
        assert (
            again.to_original(0, again.volumes[0]["label"].float()).shape[1:]
            == nib.load(items[0]["label"]).shape
        )
        caplog.clear()
        SliceDataset(items, PreprocessConfig(spacing=1.8), cache_dir=tmp_path, progress=False)
        assert "4 preprocessed, 0 from cache" in caplog.text  # other settings, other key
        caplog.clear()
        os.utime(items[0]["image"], ns=(0, 0))  # an input changed: its volume and its pair's are redone
        SliceDataset(items, cache_dir=tmp_path, progress=False)
        assert "2 preprocessed, 2 from cache" in caplog.text
        caplog.clear()
        damaged = max(tmp_path.glob("patient001_frame*"), key=lambda f: f.stat().st_mtime_ns)
        damaged.write_bytes(b"not a torch file")
        SliceDataset(items, cache_dir=tmp_path, progress=False)
        assert "unreadable" in caplog.text


def test_tag_csv_round_trip_and_masks_free_use(phantom_items: list[dict], tmp_path: Path) -> None:
    ds = SliceDataset(phantom_items[:2], progress=False)
    tags = {
        (it["patient"], int(it["frame"])): v["tags"].numpy()
        for it, v in zip(ds.items, ds.volumes, strict=True)
    }
    path = write_tag_csv(tmp_path / "tags.csv", tags)
    back = read_tag_csv(path)
    assert set(back) == set(tags)
    for key, arr in tags.items():
        np.testing.assert_array_equal(np.stack([back[key][z] for z in range(len(arr))]), arr)
    no_masks = [{k: v for k, v in it.items() if k != "label"} for it in phantom_items[:2]]
    from_csv = SliceDataset(no_masks, tags_csv=path, progress=False)
    assert torch.equal(from_csv.tags(), ds.tags())
    assert not from_csv[0]["has_label"] and (from_csv[0]["label"] == 255).all()
    with pytest.raises(DatasetError, match="no mask to derive tags"):
        SliceDataset(no_masks, progress=False)


@pytest.mark.parametrize(
    ("rows", "fragment"),
    [
        ("patient,frame,slice\n", "missing column"),
        ("patient,frame,slice,tags\npatient001,1,x,RV\n", "line 2: frame and slice must be integers"),
        ("patient,frame,slice,tags\npatient001,1,0,Aorta\n", "line 2: unknown tag 'Aorta'"),
        ("patient,frame,slice,tags\npatient001,1,0,RV\npatient001,1,0,LV\n", "line 3: slice 0"),
    ],
)
def test_tag_csv_errors_name_file_and_line(tmp_path: Path, rows: str, fragment: str) -> None:
    path = tmp_path / "tags.csv"
    path.write_text(rows)
    with pytest.raises(DatasetError) as e:
        read_tag_csv(path)
    assert str(path) in str(e.value) and fragment in str(e.value)


def test_tag_csv_names_numbers_and_missing_slices(phantom_items: list[dict], tmp_path: Path) -> None:
    path = tmp_path / "tags.csv"
    path.write_text("patient,frame,slice,tags\npatient001,1,0,rv;3\npatient001,1,1,\n")
    rows = read_tag_csv(path)
    np.testing.assert_array_equal(rows[("patient001", 1)][0], [1, 0, 1])
    np.testing.assert_array_equal(rows[("patient001", 1)][1], [0, 0, 0])
    with pytest.raises(DatasetError, match=r"patient001 frame 1: slices \[2, "):
        SliceDataset(phantom_items[:1], tags_csv=path, progress=False)


def test_empty_and_duplicate_datalists(phantom_items: list[dict]) -> None:
    with pytest.raises(DatasetError, match="no volumes"):
        SliceDataset([], progress=False)
    with pytest.raises(DatasetError, match="twice"):
        SliceDataset([phantom_items[0], phantom_items[0]], progress=False)
