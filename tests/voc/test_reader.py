"""The VOC reader on the 17 real images in ../shared/data/voc (read-only) and on planted faults."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import VOC_DIR
from voc_adapter.data import (
    VOC_CLASSES,
    VOCCheckError,
    check_voc,
    find_voc_root,
    make_voc_datalist,
    read_image_set,
    read_mask,
    tags_from_mask,
    tags_from_xml,
)


@pytest.fixture(scope="module")
def voc() -> Path:
    if not (VOC_DIR / "VOC2012" / "JPEGImages").is_dir():
        pytest.skip(f"real VOC images not found at {VOC_DIR}")
    return VOC_DIR


def test_reads_the_official_layout(voc: Path) -> None:
    root = find_voc_root(voc)
    assert root.name == "VOC2012" and find_voc_root(root) == root
    train, val = read_image_set(root, "train"), read_image_set(root, "val")
    assert len(train) == 12 and len(val) == 5 and not set(train) & set(val)
    datalist = make_voc_datalist(voc)
    assert len(datalist["training"]) == 12 and datalist["classes"][14] == "person"
    for item in datalist["training"] + datalist["validation"]:
        mask = read_mask(item["label"])
        present = {int(v) for v in np.unique(mask)} - {0, 255}
        assert {i + 1 for i, t in enumerate(item["tags"]) if t} == present  # tags are the mask's classes
        with Image.open(item["image"]) as im:
            assert im.size == (mask.shape[1], mask.shape[0])


def test_tags_by_hand(tmp_path: Path) -> None:
    mask = np.array([[0, 15, 255], [15, 3, 0]], np.uint8)
    tags = tags_from_mask(mask)
    assert tags.sum() == 2 and tags[14] == 1 and tags[2] == 1
    xml = tmp_path / "a.xml"
    xml.write_text(
        "<annotation><object><name>dog</name></object><object><name>cat</name></object></annotation>"
    )
    assert [VOC_CLASSES[i] for i in np.flatnonzero(tags_from_xml(xml))] == ["cat", "dog"]
    xml.write_text("<annotation><object><name>unicorn</name></object></annotation>")
    with pytest.raises(Exception, match="unknown class 'unicorn'"):
        tags_from_xml(xml)


def test_check_lists_every_planted_problem(voc: Path, tmp_path: Path) -> None:
    root = tmp_path / "VOC2012"
    shutil.copytree(voc / "VOC2012", root)
    ids = read_image_set(root, "train")
    (root / "SegmentationClass" / f"{ids[0]}.png").unlink()  # missing mask
    bad = read_mask(root / "SegmentationClass" / f"{ids[1]}.png").copy()
    bad[0, 0] = 42
    Image.fromarray(bad, mode="L").save(root / "SegmentationClass" / f"{ids[1]}.png")  # value 42
    small = read_mask(root / "SegmentationClass" / f"{ids[2]}.png")[:10, :10].copy()
    Image.fromarray(small, mode="L").save(root / "SegmentationClass" / f"{ids[2]}.png")  # wrong size
    (root / "JPEGImages" / f"{ids[3]}.jpg").unlink()  # missing image
    with pytest.raises(VOCCheckError) as err:
        check_voc(root)
    text = str(err.value)
    assert len(err.value.problems) == 4
    assert f"{ids[0]}.png: listed mask missing" in text and f"{ids[3]}.jpg: listed image missing" in text
    assert "label values [42]" in text and "differs from the image's" in text
    with pytest.raises(Exception, match="does not exist"):
        find_voc_root(tmp_path / "nothing")


def test_saliency_maps_reach_the_samples(voc: Path, tmp_path: Path) -> None:
    from types import SimpleNamespace

    from voc_adapter.dataset import build_voc

    root = tmp_path / "VOC2012"
    shutil.copytree(voc / "VOC2012", root)
    (root / "Sal").mkdir()
    for jpg in (root / "JPEGImages").glob("*.jpg"):
        with Image.open(jpg) as im:
            sal = np.zeros((im.size[1], im.size[0]), np.uint8)
        sal[: sal.shape[0] // 2] = 255  # the top half is salient
        Image.fromarray(sal).save(root / "Sal" / f"{jpg.stem}.png")
    cfg = SimpleNamespace(dataset_dir=str(root), image_size=48, saliency_key="saliency")
    _, splits, train, val = build_voc(cfg, tmp_path / "run", 0)
    assert len(splits["training"]) == 10 and len(splits["holdout"]) == 2  # 15% of 12 held out to choose on
    assert "saliency" in train.items[0]
    sample = val[0]
    assert sample["saliency"].shape == (1, 48, 48) and sample["image"].shape == (3, 48, 48)
    assert 0 <= float(sample["saliency"].min()) and float(sample["saliency"].max()) <= 1
    assert train[0]["saliency"].shape == (1, 48, 48)
