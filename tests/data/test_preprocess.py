"""The preprocessing chain and its inverse (acdc_wsss.data.preprocess) on real and oblique phantom volumes."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from acdc_wsss.data.acdc import make_datalist, read_datalist, read_patients, write_datalist
from acdc_wsss.data.preprocess import PreprocessConfig, build_preprocessing
from acdc_wsss.data.slices import SliceDataset, label_round_trip
from acdc_wsss.nifti import save_nifti


def test_chain_outputs(real_items: list[dict]) -> None:
    chain = build_preprocessing(PreprocessConfig(), num_classes=3)
    d = chain({k: real_items[0][k] for k in ("image", "label", "pair")})
    assert d["image"].shape == d["label"].shape == d["motion"].shape
    assert d["image"].shape[:3] == (1, 128, 128)
    assert d["tags"].shape == (d["image"].shape[-1], 3)
    assert d["image"].dtype == torch.float32 and abs(float(d["image"].mean())) < 1.0
    assert 0.0 <= float(d["motion"].min()) and float(d["motion"].max()) <= 1.0
    np.testing.assert_allclose(
        np.linalg.norm(d["image"].affine.numpy()[:3, :2], axis=0), [1.5, 1.5], atol=1e-6
    )
    src = nib.load(real_items[0]["image"])
    assert np.linalg.norm(d["image"].affine.numpy()[:3, 2]) == pytest.approx(src.header.get_zooms()[2])
    assert "pair" not in d and d["centre"] is not None


def test_invert_round_trip_on_all_real_volumes(real_slices: SliceDataset) -> None:
    rt = label_round_trip(real_slices)
    dice, bad = rt["dice"], rt["geometry_mismatch"]
    assert not bad, f"geometry not restored for {bad[:5]}"
    assert len(dice) == 160
    assert (dice.mean(axis=0) >= 0.98).all(), dice.mean(axis=0)
    # the motion-centred crop keeps every heart: no volume loses a class on the way
    assert dice.min() >= 0.9, dice.min(axis=0)


def test_invert_round_trip_on_oblique_phantom(phantom_dir: Path, tmp_path: Path) -> None:
    path = write_datalist(make_datalist(read_patients(phantom_dir), phantom_dir), tmp_path / "datalist.json")
    items = read_datalist(path)
    ds = SliceDataset(items, progress=False)
    for item in items:
        aff = nib.load(item["image"]).affine
        assert np.abs(aff[:3, :3] - np.diag(np.diag(aff[:3, :3]))).max() > 1e-3, (
            "phantom affine is not oblique"
        )
    rt = label_round_trip(ds)
    dice, bad = rt["dice"], rt["geometry_mismatch"]
    assert not bad and len(dice) == len(items)
    assert (dice.mean(axis=0) >= 0.98).all(), dice


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [({"spacing": 0}, "spacing"), ({"centre": "heart"}, "centre must be one of")],
)
def test_config_validation(kwargs, fragment) -> None:
    with pytest.raises(ValueError, match=fragment):
        PreprocessConfig(**kwargs)


def test_nifti_export_geometry_on_real_patients(real_slices: SliceDataset, tmp_path: Path) -> None:
    for v in (0, 41, 159):  # three real volumes of different sizes and spacings
        back = real_slices.to_original(v, real_slices.volumes[v]["label"].float())
        path = save_nifti(back[0].numpy(), back.affine.numpy(), tmp_path / f"v{v}_pseudo.nii.gz")
        src, out = nib.load(real_slices.items[v]["label"]), nib.load(path)
        assert out.shape == src.shape and np.allclose(out.affine, src.affine, atol=1e-5)
        assert out.get_data_dtype() == np.uint8
        assert nib.aff2axcodes(out.affine) == nib.aff2axcodes(src.affine)
        assert not list(tmp_path.glob(".tmp-*"))  # written through a temporary name
