"""Stage-2 rules that turn CAMs, image and motion into pseudo labels, one module per structure and step.

- :mod:`.common`: heart centre, search disc, blood pools per slice, Otsu threshold;
- :mod:`.lv`, :mod:`.myo`, :mod:`.rv`: the LV cavity, the myocardial ring, the RV;
- :mod:`.consistency`: the ES cavity inside the ED cavity;
- :mod:`.temporal`: ES labels fused with the ED labels carried onto the ES images by registration;
- :mod:`.anatomy`: :func:`priors_labels`, the three structures of a volume composed by template rules;
- :mod:`.polar`: rays out of the cavity and closed paths through them (the epicardium's search);
- :mod:`.scan`: :func:`scan_labels`, the three structures from the scan itself, and
  :func:`label_confidence`, the per-pixel confidence exported beside the labels;
- :mod:`.background`: background from a constant score, the learned background channel, the motion prior;
- :mod:`.crf`: dense-CRF refinement (MRI and RGB);
- :mod:`.targets`: the stage-3 training target (uncertain pixels ignored).

Which rules make which row of the stage-2 table: :mod:`acdc_wsss.pseudo.rows`. :func:`rules_source`: a
digest of these modules, which the inference's masks record (they run the rules in its fusions).
"""

from __future__ import annotations

from pathlib import Path

from acdc_wsss.pseudo.rules.anatomy import priors_labels
from acdc_wsss.pseudo.rules.background import labels_constant, labels_learned, motion_labels
from acdc_wsss.pseudo.rules.common import heart_region, otsu_threshold
from acdc_wsss.pseudo.rules.consistency import es_lv_region
from acdc_wsss.pseudo.rules.crf import crf_labels, rgb_crf_labels
from acdc_wsss.pseudo.rules.scan import ScanRules, label_confidence, scan_labels
from acdc_wsss.pseudo.rules.targets import missing_tagged, uncertain_to_ignore
from acdc_wsss.pseudo.rules.temporal import FusionRules, carry_labels, carry_probabilities, fuse_es_labels
from acdc_wsss.utils import source_digest

__all__ = [
    "FusionRules",
    "ScanRules",
    "carry_labels",
    "carry_probabilities",
    "crf_labels",
    "es_lv_region",
    "fuse_es_labels",
    "heart_region",
    "label_confidence",
    "labels_constant",
    "labels_learned",
    "missing_tagged",
    "motion_labels",
    "otsu_threshold",
    "priors_labels",
    "rgb_crf_labels",
    "rules_source",
    "scan_labels",
    "uncertain_to_ignore",
]


def rules_source() -> str:
    """A digest of the source of the stage-2 rules (this package): the masks of an inference that fuses the
    network with the rules record it, so masks made by other rules are known."""
    return source_digest(Path(__file__).parent)
