"""acdc-wsss: weakly supervised cardiac MRI segmentation from slice-level tags (L2G on MONAI)."""

from __future__ import annotations

__version__ = "0.1.0"
