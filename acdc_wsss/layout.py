"""The run folder: every file and folder a run holds is named here, and nowhere else.

Stages hand their work to each other through the run folder (``output_dir``)::

    RUN/
      datalist.json            the patient split (stage 1 writes it; every later step reads it)
      cache/                   preprocessed volumes, shared by every stage
      l2g/                     stage 1: last.pt, best.pt, metrics.json, manifest.json, evaluation_<split>.json
      baseline/                the plain-CAM classifier's own run (l2g/, cam/), when the chain trains one
      cam/                     stage 2: manifest.json, evaluation_<split>.{json,md}, panels.png, septal.json
        cams/                    <key>.npz: the stored CAMs of each volume
        kept_labels/             <fingerprint>/<row>-<value>/<key>.npz: the evaluation's labels of the
                                   exported row, read by the export (``pseudo.store.KeptLabels``)
        pseudo/                  <key>.npz pseudo labels, manifest.json (VOC: <key>.png, <key>_target.png)
        nifti/                   <key>_pseudo.nii.gz: the pseudo labels on the source grid
      seg/                     stage 3: last.pt, best.pt, metrics.json, manifest.json, rounds.json,
                                 evaluation_<split>.{json,csv,md}
      seg_members/member<k>/   the other networks of an ensemble (``ensemble`` > 1; ``seg/`` is member 0):
                                 member k trained as ``seg/`` with seed + k, laid out as ``seg/``
      seg_rounds/round<r>/     self-training round r (``rounds`` > 0): pseudo/ (the labels of round r,
                                 r >= 1) and, for r below the last, the network trained on them
      predictions/             <key>_seg.nii.gz and <key>_seg.seg.nrrd (VOC: <id>.png), acdc_labels.ctbl,
                                 manifest.json
      figures/                 panels.png, curves.png, data.png
      dataset_summary.json, summary.json, report.md

``<key>`` is a volume's :func:`~acdc_wsss.data.slices.volume_key` (``patientXXX_frameYY``, or a VOC image
id). :meth:`RunLayout.slices` loads a run's preprocessed volumes the way every stage does.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from acdc_wsss.data.acdc import read_datalist
from acdc_wsss.data.preprocess import PreprocessConfig
from acdc_wsss.data.slices import SliceDataset
from acdc_wsss.utils import read_json

__all__ = [
    "BEST",
    "CAM_STAGE",
    "L2G_STAGE",
    "LAST",
    "MANIFEST",
    "SEG_STAGE",
    "CamLayout",
    "RoundLayout",
    "RunLayout",
    "StageLayout",
]

#: Checkpoints of a training stage: after every epoch, and at the best validation.
LAST, BEST = "last.pt", "best.pt"
#: Stage folders of a run; each name is also the ``stage`` its manifest records.
L2G_STAGE, CAM_STAGE, SEG_STAGE = "l2g", "cam", "seg"
#: What every folder of a run that holds stage outputs records about them.
MANIFEST = "manifest.json"


class StageLayout:
    """A stage folder: ``manifest.json``, ``metrics.json``, checkpoints, ``evaluation_<split>.*``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    @property
    def name(self) -> str:
        """The folder's name, also the ``stage`` its manifest records."""
        return self.path.name

    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST

    @property
    def complete(self) -> bool:
        """Whether the stage's manifest records a finished run."""
        return read_json(self.manifest).get("status") == "complete"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def last(self) -> Path:
        return self.path / LAST

    @property
    def best(self) -> Path:
        return self.path / BEST

    def checkpoint(self, name: str) -> Path:
        """``<name>.pt`` (``last`` or ``best``)."""
        return self.path / f"{name}.pt"

    def evaluation(self, split: str, suffix: str = ".json") -> Path:
        """``evaluation_<split><suffix>`` (``.json``, ``.md``, ``.csv``)."""
        return self.path / f"evaluation_{split}{suffix}"

    def evaluations(self) -> list[Path]:
        """Every ``evaluation_<split>.json`` of the folder, oldest first."""
        return sorted(self.path.glob("evaluation_*.json"), key=lambda p: p.stat().st_mtime)


class CamLayout(StageLayout):
    """Stage 2's folder: stored CAMs, pseudo labels (arrays, PNGs, NIfTI) and the figure panels."""

    @property
    def cams(self) -> Path:
        return self.path / "cams"

    def cam(self, key: str) -> Path:
        """The stored CAMs of volume ``key``."""
        return self.cams / f"{key}.npz"

    @property
    def pseudo(self) -> Path:
        return self.path / "pseudo"

    @property
    def septal(self) -> Path:
        """The septal direction the training patients share (:func:`acdc_wsss.pseudo.rows.run_septal`)."""
        return self.path / "septal.json"

    @property
    def pseudo_manifest(self) -> Path:
        return self.pseudo / MANIFEST

    @property
    def kept_labels(self) -> Path:
        """Labels the pseudo-label evaluation made with the exported row, kept for the export
        (:class:`acdc_wsss.pseudo.store.KeptLabels`), one folder per fingerprint of what made them."""
        return self.path / "kept_labels"

    def pseudo_labels(self, key: str) -> Path:
        """Labels and training target of volume ``key`` (arrays)."""
        return self.pseudo / f"{key}.npz"

    def pseudo_png(self, key: str, target: bool = False) -> Path:
        """A photo's pseudo label (``target``: the training target, uncertain pixels 255) as PNG."""
        return self.pseudo / (f"{key}_target.png" if target else f"{key}.png")

    @property
    def nifti(self) -> Path:
        return self.path / "nifti"

    def pseudo_nifti(self, key: str) -> Path:
        """The pseudo label of volume ``key`` on its source grid."""
        return self.nifti / f"{key}_pseudo.nii.gz"

    @property
    def panels(self) -> Path:
        return self.path / "panels.png"


class RoundLayout(StageLayout):
    """``seg_rounds/round<r>/``: a self-training round's labels (``pseudo/``, laid out as stage 2's) and
    the network trained on them."""

    @property
    def pseudo(self) -> Path:
        return self.path / "pseudo"


class PredictionLayout:
    """``predictions/``: the stage-3 masks, their colour table and manifest."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST

    @property
    def colour_table(self) -> Path:
        return self.path / "acdc_labels.ctbl"

    def mask(self, name: str) -> Path:
        """The NIfTI mask of the volume called ``name`` (``patientXXX_frameYY``, or a file's stem)."""
        return self.path / f"{name}_seg.nii.gz"

    def segmentation(self, name: str) -> Path:
        """The 3D Slicer segmentation (named, coloured segments) beside :meth:`mask`."""
        return self.path / f"{name}_seg.seg.nrrd"

    def png(self, image_id: str) -> Path:
        """The predicted label image of a photo."""
        return self.path / f"{image_id}.png"


class RunLayout:
    """The files and folders of one run folder (see the module docstring)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.l2g = StageLayout(self.root / L2G_STAGE)
        self.cam = CamLayout(self.root / CAM_STAGE)
        self.seg = StageLayout(self.root / SEG_STAGE)
        self.predictions = PredictionLayout(self.root / "predictions")

    def __repr__(self) -> str:
        return f"RunLayout({str(self.root)!r})"

    @property
    def datalist(self) -> Path:
        return self.root / "datalist.json"

    def seg_member(self, k: int) -> StageLayout:
        """Network ``k`` (1, 2, ...) of a stage-3 ensemble; ``seg/`` holds network 0."""
        if k < 1:
            raise ValueError(f"ensemble members beside seg/ are numbered from 1, got {k}.")
        return StageLayout(self.root / "seg_members" / f"member{k}")

    @property
    def seg_members(self) -> Path:
        """The folder of an ensemble's networks beside ``seg/``."""
        return self.root / "seg_members"

    def seg_round(self, r: int) -> RoundLayout:
        """Self-training round ``r``: its network's stage folder, with its labels in ``pseudo/``."""
        return RoundLayout(self.root / "seg_rounds" / f"round{r}")

    @property
    def rounds(self) -> Path:
        """The self-training table: per round, its labels' Dice on training and its network's on
        validation."""
        return self.seg.path / "rounds.json"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def baseline(self) -> RunLayout:
        """The plain-CAM classifier's own run inside this one."""
        return RunLayout(self.root / "baseline")

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def panels(self) -> Path:
        return self.figures / "panels.png"

    @property
    def curves(self) -> Path:
        return self.figures / "curves.png"

    @property
    def data_preview(self) -> Path:
        return self.figures / "data.png"

    @property
    def dataset_summary(self) -> Path:
        return self.root / "dataset_summary.json"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    def split(self, name: str) -> list[dict[str, Any]]:
        """The datalist items (absolute paths) of split ``name`` (empty when the split is)."""
        return read_datalist(self.datalist, name)

    def slices(
        self,
        manifest: Mapping[str, Any],
        items: str | Sequence[Mapping[str, Any]],
        *,
        progress: bool = False,
        **kwargs: Any,
    ) -> SliceDataset:
        """The run's preprocessed volumes of ``items`` (a split's name, or datalist items), with the
        preprocessing and classes a stage ``manifest`` records, from the run's cache.

        ``kwargs`` go to :class:`~acdc_wsss.data.slices.SliceDataset` (``num_workers``, ``require_tags``).
        """
        if isinstance(items, str):
            items = self.split(items)
        config = PreprocessConfig(**manifest["preprocess"])
        return SliceDataset(
            items, config, manifest["classes"], cache_dir=self.cache, progress=progress, **kwargs
        )
