"""``python -m acdc_wsss run ...``: the whole chain (see :mod:`acdc_wsss.chain`)."""

import sys

from acdc_wsss.chain import main

sys.exit(main())
