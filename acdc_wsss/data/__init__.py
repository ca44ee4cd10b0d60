"""ACDC data layer: reader, integrity check, preprocessing chain, 2D slice dataset, phantom generator."""

from __future__ import annotations

from acdc_wsss.data.acdc import (
    ACDC_CLASSES,
    ACDC_GROUPS,
    DatasetError,
    Frame,
    Patient,
    make_datalist,
    parse_info_cfg,
    read_datalist,
    read_patient,
    read_patients,
    split_patients,
    write_datalist,
)
from acdc_wsss.data.check import CheckReport, DatasetCheckError, Problem, check_dataset, validated_patients
from acdc_wsss.data.preprocess import PreprocessConfig, build_preprocessing, invert
from acdc_wsss.data.slices import SliceDataset, read_tag_csv, write_tag_csv

__all__ = [
    "ACDC_CLASSES",
    "ACDC_GROUPS",
    "CheckReport",
    "DatasetCheckError",
    "DatasetError",
    "Frame",
    "Patient",
    "PreprocessConfig",
    "Problem",
    "SliceDataset",
    "build_preprocessing",
    "check_dataset",
    "invert",
    "make_datalist",
    "parse_info_cfg",
    "read_datalist",
    "read_patient",
    "read_patients",
    "read_tag_csv",
    "split_patients",
    "validated_patients",
    "write_datalist",
    "write_tag_csv",
]
