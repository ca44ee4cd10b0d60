"""The PASCAL VOC 2012 reader: image lists, masks, tags, integrity check, datalists.

Reads the official folder (``VOC2012/`` or the ``VOCdevkit/`` above it):

- ``JPEGImages/<id>.jpg``;
- ``SegmentationClass/<id>.png`` and/or ``SegmentationClassAug/<id>.png`` (palette or gray PNGs: 0
  background, 1-20 the classes, 255 the void border; the Aug masks win where both exist);
- ``ImageSets/Segmentation/{train,val}.txt`` and ``train_aug.txt`` (also looked for in
  ``ImageSets/SegmentationAug/``);
- optional ``Sal/<id>.png`` saliency maps and ``Annotations/<id>.xml``.

Tags come from the XML where it exists (every object's class), else from the mask (its classes, 0 and 255
ignored). :func:`check_voc` lists every problem with its file before any work is done.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from acdc_wsss.errors import DatasetError
from acdc_wsss.labels import IGNORE

__all__ = [
    "VOC_CLASSES",
    "VOCCheckError",
    "check_voc",
    "find_voc_root",
    "make_voc_datalist",
    "read_image_set",
    "read_mask",
    "tags_from_mask",
    "tags_from_xml",
]

#: The 20 VOC classes; label k (1..20) is ``VOC_CLASSES[k - 1]``, 0 is background.
VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip


class VOCCheckError(DatasetError):
    """The VOC folder has problems; ``problems`` lists ``(file, what is wrong)``."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        lines = "\n  - ".join(f"{f}: {w}" for f, w in self.problems[:20])
        more = f"\n  ... and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
        super().__init__(f"VOC check found {len(self.problems)} problem(s):\n  - {lines}{more}")


def find_voc_root(path: str | os.PathLike) -> Path:
    """The folder holding ``JPEGImages``: ``path`` itself, ``path/VOC2012`` or ``path/VOCdevkit/VOC2012``."""
    root = Path(path)
    if not root.exists():
        raise DatasetError(f"{root}: VOC folder does not exist.")
    for cand in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (cand / "JPEGImages").is_dir():
            return cand
    raise DatasetError(f"{root}: no JPEGImages folder here, in VOC2012/ or in VOCdevkit/VOC2012/.")


def read_image_set(root: Path, name: str) -> list[str]:
    """Image ids of ``ImageSets/Segmentation/<name>.txt`` (or ``SegmentationAug``), in file order."""
    for folder in ("Segmentation", "SegmentationAug"):
        path = root / "ImageSets" / folder / f"{name}.txt"
        if path.is_file():
            ids = [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            return [Path(i).stem for i in ids]  # train_aug lists may hold paths
    raise DatasetError(f"{root / 'ImageSets' / 'Segmentation' / (name + '.txt')}: image list not found.")


def _mask_path(root: Path, image_id: str) -> Path | None:
    for folder in ("SegmentationClassAug", "SegmentationClass"):
        path = root / folder / f"{image_id}.png"
        if path.is_file():
            return path
    return None


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """A VOC mask as ``(H, W)`` uint8 class indices (palette indices, not colours)."""
    with Image.open(path) as im:
        if im.mode not in ("P", "L"):
            raise DatasetError(
                f"{path}: mask mode {im.mode!r}; expected a palette or gray PNG of class indices."
            )
        return np.array(im, dtype=np.uint8)


def tags_from_mask(mask: np.ndarray, num_classes: int = len(VOC_CLASSES)) -> np.ndarray:
    """``(num_classes,)`` multi-hot float32 of the classes in a mask (0 and 255 ignored)."""
    tags = np.zeros(num_classes, np.float32)
    for v in np.unique(mask):
        if 1 <= v <= num_classes:
            tags[v - 1] = 1
    return tags


def tags_from_xml(path: str | os.PathLike, classes: Sequence[str] = VOC_CLASSES) -> np.ndarray:
    """Multi-hot tags of every ``<object><name>`` in a VOC annotation file."""
    tags = np.zeros(len(classes), np.float32)
    for obj in ET.parse(path).getroot().iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in classes:
            raise DatasetError(f"{path}: unknown class {name!r}; expected one of the 20 VOC classes.")
        tags[classes.index(name)] = 1
    return tags


def check_voc(path: str | os.PathLike, splits: Mapping[str, str] | None = None, deep: bool = True) -> Path:
    """Check a VOC folder; return its root or raise :class:`VOCCheckError` listing every problem.

    Args:
        path: the VOC folder.
        splits: datalist split -> image list (default ``training: train``, ``validation: val``).
        deep: open every image and mask (sizes, mask values), not only check that files exist.
    """
    root = find_voc_root(path)
    splits = dict(splits or {"training": "train", "validation": "val"})
    problems: list[tuple[str, str]] = []
    for list_name in splits.values():
        try:
            ids = read_image_set(root, list_name)
        except DatasetError as e:
            problems.append((str(root / "ImageSets"), str(e)))
            continue
        for image_id in ids:
            jpg = root / "JPEGImages" / f"{image_id}.jpg"
            mask = _mask_path(root, image_id)
            if not jpg.is_file():
                problems.append((str(jpg), "listed image missing"))
                continue
            if mask is None:
                problems.append((str(root / "SegmentationClass" / f"{image_id}.png"), "listed mask missing"))
                continue
            if not deep:
                continue
            try:
                with Image.open(jpg) as im:
                    size = im.size
                    im.verify()
                m = read_mask(mask)
            except (OSError, DatasetError) as e:
                problems.append((str(jpg if "mask" not in str(e) else mask), f"unreadable: {e}"))
                continue
            if (m.shape[1], m.shape[0]) != size:
                problems.append(
                    (
                        str(mask),
                        f"size {m.shape[1]}x{m.shape[0]} differs from the image's {size[0]}x{size[1]}",
                    )
                )
            bad = sorted(set(np.unique(m).tolist()) - set(range(len(VOC_CLASSES) + 1)) - {IGNORE})
            if bad:
                problems.append((str(mask), f"label values {bad} outside 0-20 and 255"))
    if problems:
        raise VOCCheckError(problems)
    return root


def make_voc_datalist(
    path: str | os.PathLike, splits: Mapping[str, str] | None = None, deep: bool = True
) -> dict[str, Any]:
    """A MONAI-style datalist of a checked VOC folder: per split, items with ``image``, ``label``, ``id``,
    ``tags`` (from the XML where there is one, else the mask) and ``saliency`` where ``Sal/`` has it."""
    splits = dict(splits or {"training": "train", "validation": "val"})
    root = check_voc(path, splits, deep)
    out: dict[str, Any] = {"name": "VOC2012", "classes": list(VOC_CLASSES), "base_dir": str(root.resolve())}
    for split, list_name in splits.items():
        items = []
        for image_id in read_image_set(root, list_name):
            mask = _mask_path(root, image_id)
            xml = root / "Annotations" / f"{image_id}.xml"
            tags = tags_from_xml(xml) if xml.is_file() else tags_from_mask(read_mask(mask))
            item = {
                "id": image_id,
                "key": image_id,
                "image": str((root / "JPEGImages" / f"{image_id}.jpg").resolve()),
                "label": str(mask.resolve()),
                "tags": tags.astype(int).tolist(),
            }
            sal = root / "Sal" / f"{image_id}.png"
            if sal.is_file():
                item["saliency"] = str(sal.resolve())
            items.append(item)
        out[split] = items
    return out
