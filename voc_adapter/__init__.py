"""PASCAL VOC 2012 adapter for the acdc-wsss bundles (reader and override configs)."""

from __future__ import annotations
