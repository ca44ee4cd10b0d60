"""2D slices with slice-level tags, from volumes run once through the preprocessing chain.

:class:`SliceDataset` preprocesses every volume of a datalist once (in parallel workers, with a progress
bar), optionally caches the result on disk keyed by the input files and the chain settings, and serves 2D
slices. Each slice carries the index of its volume and its slice number, and the dataset keeps each volume's
preprocessed image (with its recorded transforms), so any per-slice output can be stacked and mapped back
onto the source grid with :meth:`SliceDataset.to_original`.

Tags come from the ground truth (the usual benchmark protocol) or, for data without masks, from a tag CSV::

    patient,frame,slice,tags
    patient101,1,0,
    patient101,1,1,RV Myo LV
    patient101,1,2,Myo;LV

``slice`` is the 0-based index along the short-axis (last) array axis; ``tags`` lists class names (any case)
or label numbers, separated by spaces, ``;`` or ``|``; empty means no structure.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from torch.utils.data import DataLoader, Dataset

import acdc_wsss
from acdc_wsss.data.acdc import ACDC_CLASSES, PATH_KEYS
from acdc_wsss.data.preprocess import (
    PreprocessConfig,
    build_preprocessing,
    forget_transform_ids,
    invert,
    invert_labels,
)
from acdc_wsss.errors import DatasetError
from acdc_wsss.labels import IGNORE
from acdc_wsss.metrics import dice_per_class
from acdc_wsss.safeload import from_plain, load_pt, to_plain
from acdc_wsss.utils import atomic_write, identity, progress_bar

__all__ = ["SliceDataset", "label_round_trip", "read_tag_csv", "volume_key", "write_tag_csv"]

logger = logging.getLogger(__name__)

_TAG_SPLIT = re.compile(r"[\s;|,]+")


def volume_key(item: Mapping[str, Any]) -> str:
    """Unique name of a datalist item's volume: ``patientXXX_frameYY`` (or the item's own ``key``, as VOC
    image ids)."""
    if item.get("key"):
        return str(item["key"])
    return f"{item['patient']}_frame{int(item['frame']):02d}"


def read_tag_csv(
    path: str | os.PathLike, classes: Sequence[str] = ACDC_CLASSES
) -> dict[tuple[str, int], dict[int, np.ndarray]]:
    """Read a tag CSV (columns ``patient, frame, slice, tags``).

    Args:
        path: the CSV file.
        classes: foreground class names, in label order (label ``i + 1`` is ``classes[i]``).

    Returns:
        ``{(patient, frame): {slice: multi-hot float32 array of len(classes)}}``.

    Raises:
        DatasetError: missing columns, a bad number, an unknown class, or a slice listed twice; the message
            names the file and line.
    """
    path = Path(path)
    lookup = {c.lower(): i for i, c in enumerate(classes)} | {str(i + 1): i for i in range(len(classes))}
    out: dict[tuple[str, int], dict[int, np.ndarray]] = {}
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = {"patient", "frame", "slice", "tags"} - set(reader.fieldnames or [])
            if missing:
                raise DatasetError(
                    f"{path}: missing column(s) {sorted(missing)}; expected patient,frame,slice,tags."
                )
            for row in reader:
                where = f"{path}, line {reader.line_num}"
                try:
                    key, z = (row["patient"].strip(), int(row["frame"])), int(row["slice"])
                except (TypeError, ValueError) as e:
                    raise DatasetError(f"{where}: frame and slice must be integers, got {row}.") from e
                tags = np.zeros(len(classes), np.float32)
                for name in filter(None, _TAG_SPLIT.split((row["tags"] or "").strip())):
                    if name.lower() not in lookup:
                        raise DatasetError(f"{where}: unknown tag {name!r}; expected one of {list(classes)}.")
                    tags[lookup[name.lower()]] = 1.0
                if z in out.setdefault(key, {}):
                    raise DatasetError(f"{where}: slice {z} of {key[0]} frame {key[1]} is listed twice.")
                out[key][z] = tags
    except OSError as e:
        raise DatasetError(f"{path}: cannot read tag CSV ({e.strerror or e}).") from e
    return out


def write_tag_csv(
    path: str | os.PathLike, tags: Mapping[tuple[str, int], np.ndarray], classes: Sequence[str] = ACDC_CLASSES
) -> Path:
    """Write ``{(patient, frame): (S, C) multi-hot}`` as a tag CSV (atomically) and return its path."""
    path = Path(path)
    with atomic_write(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["patient", "frame", "slice", "tags"])
        for (patient, frame), arr in sorted(tags.items()):
            for z, row in enumerate(np.asarray(arr)):
                w.writerow(
                    [patient, frame, z, " ".join(c for c, on in zip(classes, row, strict=True) if on > 0)]
                )
    return path


#: Layout of a cached volume: 2 stores plain types (:func:`acdc_wsss.safeload.to_plain`), loaded with
#: ``weights_only=True``; files of older layouts are not looked at.
_CACHE_FORMAT = 3


def _file_stamp(path: str) -> list[Any]:
    st = os.stat(path)
    return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


class _Preprocessed(Dataset):
    """Runs the chain on datalist items (the workers of a DataLoader call it)."""

    def __init__(
        self, items: Sequence[Mapping[str, Any]], config: PreprocessConfig, num_classes: int
    ) -> None:
        self.items, self.chain = list(items), build_preprocessing(config, num_classes)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.items[i]
        d = self.chain({k: v for k, v in item.items() if k in ("image", "label", "pair")})
        vol = {
            # a compact copy, not a view into the larger padded volume
            "image": forget_transform_ids(d["image"].clone()),
            "motion": d["motion"].as_tensor().to(torch.float16),
            "label": d["label"].as_tensor().to(torch.uint8) if "label" in d else None,
            "tags": d.get("tags"),
            "centre": None if d.get("centre") is None else [float(c) for c in d["centre"]],
        }
        return vol


class SliceDataset(Dataset):
    """2D slices of preprocessed volumes with multi-hot tags.

    Args:
        items: datalist items (see :func:`acdc_wsss.data.acdc.make_datalist`), absolute paths.
        config: preprocessing settings shared by every stage of a run.
        classes: foreground class names; their number sets the tag length.
        tags_csv: read tags from this CSV instead of the masks (data without masks).
        cache_dir: keep preprocessed volumes here (one ``.pt`` per volume, keyed by the input files' paths,
            sizes and times and by the chain settings), so later runs skip preprocessing.
        num_workers: parallel preprocessing workers (default: up to 2).
        progress: show a progress bar on a terminal.
        require_tags: refuse volumes with neither a mask nor CSV tags; False (inference) gives them
            all-zero tags.

    Each sample is a dict: ``image`` ``(1, H, W)`` float32, ``motion`` ``(1, H, W)`` float32 in [0, 1],
    ``tags`` ``(C,)`` float32, ``label`` ``(1, H, W)`` int64 (``255`` where the volume has no mask),
    ``has_label`` bool, ``volume`` (index into :attr:`volumes`), ``slice``, ``patient``, ``frame``,
    ``phase``.
    """

    def __init__(
        self,
        items: Sequence[Mapping[str, Any]],
        config: PreprocessConfig | None = None,
        classes: Sequence[str] = ACDC_CLASSES,
        tags_csv: str | os.PathLike | None = None,
        cache_dir: str | os.PathLike | None = None,
        num_workers: int | None = None,
        progress: bool = True,
        require_tags: bool = True,
    ) -> None:
        if not items:
            raise DatasetError("SliceDataset got no volumes: the datalist split is empty.")
        self.items = [dict(it) for it in items]
        keys = [volume_key(it) for it in self.items]
        if len(set(keys)) != len(keys):
            raise DatasetError(
                f"the datalist lists a volume twice: {sorted({k for k in keys if keys.count(k) > 1})}."
            )
        self.config = config or PreprocessConfig()
        self.classes = tuple(classes)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.num_workers = min(2, os.cpu_count() or 1) if num_workers is None else num_workers
        csv_tags = read_tag_csv(tags_csv, self.classes) if tags_csv is not None else None
        self.volumes = self._preprocess(progress)
        self._set_tags(csv_tags, tags_csv, require_tags)
        self.index = [(v, z) for v, vol in enumerate(self.volumes) for z in range(vol["image"].shape[-1])]

    # --- building ---------------------------------------------------------------------------------------
    def cache_key(self, item: Mapping[str, Any]) -> str:
        """Hash of what a cached volume depends on: input files, chain settings, package version."""
        stamp = {
            "files": {k: _file_stamp(item[k]) for k in PATH_KEYS if k != "cine" and item.get(k)},
            "config": self.config.to_dict(),
            "classes": self.classes,
            "version": acdc_wsss.__version__,
            "format": _CACHE_FORMAT,
        }
        return hashlib.sha1(json.dumps(stamp, sort_keys=True).encode()).hexdigest()[:16]

    def _cache_path(self, item: Mapping[str, Any]) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"{volume_key(item)}-{self.cache_key(item)}.pt"

    def _preprocess(self, progress: bool) -> list[dict[str, Any]]:
        volumes: list[dict[str, Any] | None] = [None] * len(self.items)
        todo = []
        for i, item in enumerate(self.items):
            path = self._cache_path(item)
            if path is not None and path.is_file():
                try:
                    volumes[i] = from_plain(load_pt(path))
                    continue
                except Exception as e:  # a damaged or foreign cache file is rebuilt, never trusted
                    logger.warning("cache file %s unreadable (%s); preprocessing again.", path, e)
            todo.append(i)
        if todo:
            if self.cache_dir is not None:
                self.cache_dir.mkdir(parents=True, exist_ok=True)
            ds = _Preprocessed([self.items[i] for i in todo], self.config, len(self.classes))
            workers = self.num_workers if len(todo) > 1 else 0
            # its own generator: a DataLoader draws its workers' seed from the global one otherwise, and
            # the random state a training seeds must not depend on whether the cache was filled
            loader = DataLoader(
                ds, batch_size=None, num_workers=workers, collate_fn=identity, generator=torch.Generator()
            )
            for i, vol in zip(
                todo, progress_bar(loader, "preprocessing volumes", progress, len(todo)), strict=True
            ):
                volumes[i] = vol
                path = self._cache_path(self.items[i])
                if path is not None:
                    with atomic_write(path) as tmp:
                        torch.save(to_plain(vol), tmp)
        logger.info(
            "%d volumes ready (%d preprocessed, %d from cache).",
            len(volumes),
            len(todo),
            len(volumes) - len(todo),
        )
        return [v for v in volumes if v is not None]

    def _set_tags(self, csv_tags: dict | None, tags_csv: Any, required: bool = True) -> None:
        missing = []
        for item, vol in zip(self.items, self.volumes, strict=True):
            n = vol["image"].shape[-1]
            if csv_tags is None:
                if vol["tags"] is None and required:
                    missing.append(f"{item['image']}: no mask to derive tags from")
                elif vol["tags"] is None:
                    vol["tags"] = torch.zeros(n, len(self.classes))
                continue
            rows = csv_tags.get((item["patient"], int(item["frame"])), {})
            absent = [z for z in range(n) if z not in rows]
            extra = [z for z in rows if not 0 <= z < n]
            if absent or extra:
                missing.append(
                    f"{item['patient']} frame {item['frame']}: "
                    + (f"slices {absent} missing" if absent else "")
                    + (f"{'; ' if absent else ''}slices {extra} beyond the volume's {n}" if extra else "")
                )
                continue
            vol["tags"] = torch.as_tensor(np.stack([rows[z] for z in range(n)]))
        if missing:
            src = f"tag CSV {tags_csv}" if tags_csv else "the masks"
            raise DatasetError(f"no tags from {src} for:\n  - " + "\n  - ".join(missing))

    # --- access -----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        v, z = self.index[i]
        vol, item = self.volumes[v], self.items[v]
        image = vol["image"].as_tensor()[..., z]
        label = vol["label"]
        return {
            "image": image,
            "motion": vol["motion"][..., z].float(),
            "tags": vol["tags"][z],
            "label": torch.full_like(image, IGNORE).long() if label is None else label[..., z].long(),
            "has_label": label is not None,
            "volume": v,
            "slice": z,
            "patient": item["patient"],
            "frame": int(item["frame"]),
            "phase": item["phase"],
        }

    @property
    def num_classes(self) -> int:
        """Number of foreground classes (tag length)."""
        return len(self.classes)

    def tags(self) -> torch.Tensor:
        """All slice tags, ``(len(self), C)``, in sample order."""
        return torch.cat([vol["tags"] for vol in self.volumes])

    def stack(self, volume: int, slices: Mapping[int, torch.Tensor] | Sequence[torch.Tensor]) -> torch.Tensor:
        """Stack per-slice ``(C, H, W)`` arrays of one volume into ``(C, H, W, S)``, in slice order."""
        n = self.volumes[volume]["image"].shape[-1]
        if len(slices) != n:
            raise ValueError(f"volume {volume_key(self.items[volume])} has {n} slices, got {len(slices)}.")
        return torch.stack([torch.as_tensor(slices[z]) for z in range(n)], dim=-1)

    def to_original(self, volume: int, values: torch.Tensor, nearest: bool = True) -> MetaTensor:
        """Map ``(C, H, W, S)`` values of one volume back onto its source image's grid (shape and affine).

        Args:
            volume: index into :attr:`volumes`.
            values: array on the preprocessed grid.
            nearest: nearest-neighbour (masks); False for continuous maps (bilinear).
        """
        chain = build_preprocessing(self.config, self.num_classes)
        return invert(values, self.volumes[volume]["image"], chain, nearest=nearest)

    def labels_to_original(self, volume: int, labels: torch.Tensor, linear: bool = True) -> MetaTensor:
        """Map a ``(1, H, W, S)`` label map of one volume back onto its source image's grid
        (:func:`~acdc_wsss.data.preprocess.invert_labels`: linearly as one-hot channels, as the stage-3
        masks are; ``linear=False``: nearest-neighbour)."""
        chain = build_preprocessing(self.config, self.num_classes)
        return invert_labels(labels, self.volumes[volume]["image"], chain, self.num_classes, linear)


def label_round_trip(ds: SliceDataset, atol: float = 1e-6) -> dict[str, Any]:
    """Map every preprocessed mask of ``ds`` back to its source grid and compare with the source mask.

    Returns:
        ``{"dice": (V, C) array (NaN where a class is in neither), "heart_kept": (V,) fraction of the source
        foreground voxels still foreground after the round trip (what the crop cut shows here),
        "geometry_mismatch": [label paths whose inverted shape or affine differ from the source]}``.
    """
    dice, kept, mismatch = [], [], []
    for v, item in enumerate(ds.items):
        if ds.volumes[v]["label"] is None:
            continue
        back = ds.labels_to_original(v, ds.volumes[v]["label"], linear=False)  # came by nearest
        src = nib.load(item["label"])
        if tuple(back.shape[1:]) != src.shape or not np.allclose(back.affine.numpy(), src.affine, atol=atol):
            mismatch.append(item["label"])
            continue
        ref = np.asarray(src.dataobj)
        dice.append(dice_per_class(back[0], ref, range(1, ds.num_classes + 1)))
        kept.append(float(((back[0].numpy() > 0) & (ref > 0)).sum()) / max(float((ref > 0).sum()), 1.0))
    return {"dice": np.array(dice), "heart_kept": np.array(kept), "geometry_mismatch": mismatch}
