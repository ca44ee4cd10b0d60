"""Old home of the ACDC anatomy rules, now :mod:`acdc_wsss.pseudo.rules` (one module per structure and
step since 0.2.0); importing a name from here still works, with a ``DeprecationWarning``."""

from __future__ import annotations

from acdc_wsss.utils import moved

__getattr__ = moved(
    __name__,
    {
        **dict.fromkeys(
            ("es_lv_region", "heart_region", "otsu_threshold", "priors_labels", "uncertain_to_ignore"),
            "acdc_wsss.pseudo.rules",
        ),
        "IGNORE": "acdc_wsss.labels",
    },
)
