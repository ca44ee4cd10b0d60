"""PASCAL VOC 2012 adapter for the acdc-wsss bundles: reader, tags, RGB transforms (override configs and the
scripted runs are in progress, issue 6)."""

from __future__ import annotations

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
from voc_adapter.dataset import VOCConfig, VOCImages, build_voc  # registers dataset 'voc'
from voc_adapter.transforms import voc_eval_transforms, voc_train_transforms

__all__ = [
    "VOC_CLASSES",
    "VOCCheckError",
    "VOCConfig",
    "VOCImages",
    "build_voc",
    "check_voc",
    "find_voc_root",
    "make_voc_datalist",
    "read_image_set",
    "read_mask",
    "tags_from_mask",
    "tags_from_xml",
    "voc_eval_transforms",
    "voc_train_transforms",
]
