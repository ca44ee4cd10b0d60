"""What stage 2 keeps in ``RUN/cam/`` and how it is read back.

The CAM manifest (:func:`read_cam_manifest`, :func:`cam_splits`), the stored CAMs of one volume
(:func:`load_cams`), the volumes of a split that have CAMs (:func:`split_dataset`), which are the
run's preprocessed volumes for ACDC and, for a data set an adapter registers (VOC), whole images
(:func:`inference_volumes`), and the labels the evaluation made with the exported row, kept so that the
export does not make them again (:class:`KeptLabels`), filed under :func:`labels_fingerprint`: what the
labels depend on besides the images, recorded in the table and the export's manifest so that the chain
makes labels again after the rules change (:func:`labels_source`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from acdc_wsss.data.registry import get_volumes, register_volumes
from acdc_wsss.data.slices import SliceDataset, volume_key
from acdc_wsss.layout import RunLayout
from acdc_wsss.utils import source_digest, write_npz

__all__ = [
    "KeptLabels",
    "acdc_volumes",
    "cam_splits",
    "inference_volumes",
    "labels_fingerprint",
    "labels_source",
    "load_cams",
    "read_cam_manifest",
    "split_dataset",
]


@register_volumes("acdc")
def acdc_volumes(
    items: list[dict[str, Any]], preprocess: dict[str, Any], classes: list[str], out: Path, progress: bool
) -> SliceDataset:
    """The ``acdc`` builder of stage 2: the run's preprocessed volumes of ``items``, from its cache."""
    return RunLayout(out).slices({"preprocess": preprocess, "classes": classes}, items, progress=progress)


def inference_volumes(
    manifest: dict[str, Any], items: list[dict[str, Any]], out: Path, progress: bool
) -> Any:
    """The volumes of ``items`` as the stage-1 ``manifest`` says the run was trained on, by the registered
    builder of its data set (ACDC: :func:`acdc_volumes`; VOC: whole images)."""
    name = manifest.get("dataset", "acdc")
    return get_volumes(name)(items, manifest["preprocess"], manifest["classes"], out, progress)


def read_cam_manifest(output_dir: str | os.PathLike) -> dict[str, Any]:
    """``output_dir/cam/manifest.json``, or a FileNotFoundError naming the command that makes it."""
    path = RunLayout(output_dir).cam.manifest
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: make the CAMs first with python -m monai.bundle run --config_file "
            f"\"['bundles/l2g_acdc/train.json','bundles/l2g_acdc/infer.json']\" --output_dir {output_dir}"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def cam_splits(output_dir: str | os.PathLike) -> list[str]:
    """The splits whose CAMs the run holds (none when stage 2 has not run)."""
    path = RunLayout(output_dir).cam.manifest
    return json.loads(path.read_text(encoding="utf-8"))["splits"] if path.is_file() else []


def split_dataset(output_dir: str | os.PathLike, split: str, progress: bool = True) -> Any:
    """The volumes of ``split`` that have stored CAMs (ACDC: a :class:`SliceDataset` on the run's cache;
    VOC: whole images)."""
    out = Path(output_dir)
    run = RunLayout(out)
    manifest = read_cam_manifest(out)
    items = [it for it in run.split(split) if volume_key(it) in manifest["volumes"]]
    if not items:
        raise ValueError(f"{run.cam.path}: no CAMs for split {split!r}; it has {manifest['splits']}.")
    return inference_volumes(manifest, items, out, progress)


def load_cams(output_dir: str | os.PathLike, key: str) -> dict[str, np.ndarray]:
    """Read the stored CAMs of one volume (``patientXXX_frameYY``) as float32 arrays."""
    path = RunLayout(output_dir).cam.cam(key)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found; make the CAMs with the stage-2 infer bundle (infer.json)."
        )
    with np.load(path) as z:
        return {k: z[k].astype(np.float32) for k in z.files}


def labels_source() -> str:
    """A digest of the source of :mod:`acdc_wsss.pseudo` (the rules, their defaults, the registration, the
    table's rows): what every stage-2 label depends on besides its inputs."""
    return source_digest(Path(__file__).parent)


def labels_fingerprint(output_dir: str | os.PathLike) -> str:
    """What a run's stage-2 labels depend on besides the images: its CAM manifest (stage 1's fingerprint,
    the preprocessing, the volumes) and :func:`labels_source`. The table and the export record it; the
    chain makes them again when it differs."""
    digest = hashlib.sha1(RunLayout(output_dir).cam.manifest.read_bytes())
    digest.update(labels_source().encode())
    return digest.hexdigest()[:16]


class KeptLabels:
    """The labels one row made at one setting, per volume, kept in ``cam/kept_labels/`` between the
    pseudo-label evaluation (which makes them for the training and validation patients) and the export
    (which would make them again: the rules and the ED-ES registrations, or a photo's dense CRF, take
    minutes). The evaluation keeps the export row's labels at each of its settings and discards those of the
    settings it did not choose.

    They are filed under :func:`labels_fingerprint`, everything else they depend on; labels under another
    fingerprint are never read, and a writer (``clear=True``) removes them.
    """

    def __init__(self, output_dir: str | os.PathLike, row: str, value: Any, clear: bool = False) -> None:
        cam = RunLayout(output_dir).cam
        root = cam.kept_labels
        self.row, self.value = row, value
        self.folder = root / labels_fingerprint(output_dir) / f"{row}-{value}"
        if clear and root.is_dir():
            for old in root.iterdir():
                if old.name != self.folder.parent.name:
                    shutil.rmtree(old, ignore_errors=True)

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.npz"

    def put(self, key: str, labels: np.ndarray) -> None:
        """Keep one volume's labels (written atomically)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        write_npz(self.path(key), labels=np.asarray(labels, np.uint8))

    def discard(self) -> None:
        """Remove this row's and setting's labels (a setting the evaluation did not choose)."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def get(self, key: str) -> np.ndarray | None:
        """One volume's kept labels, or None where there are none."""
        path = self.path(key)
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as data:
            return data["labels"]
