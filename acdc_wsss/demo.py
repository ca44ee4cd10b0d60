"""The default job: ``python -m acdc_wsss.demo`` (what ``make demo`` runs).

Every stage on a data set, into ``results/<run>/``: the synthetic phantom by default (made on the spot,
no download), or a real ACDC folder with ``--dataset_dir``. It checks the data, splits the patients,
trains the L2G classifier and the plain-CAM baseline (stage 1), makes and scores CAMs and pseudo labels
(stage 2), trains the stage-3 network on them (a U-Net by default), segments and scores the test
patients, and writes ``results/<run>/report.md`` with the tables, figures, training curves and the NIfTI
masks for 3D Slicer.
Run it again and every finished step is kept.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from acdc_wsss.chain import add_run_arguments, run_from_arguments
from acdc_wsss.data.phantom import ensure_phantom
from acdc_wsss.errors import USER_ERRORS, describe
from acdc_wsss.utils import setup_cli_logging

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of the demo; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m acdc_wsss.demo", description=__doc__.splitlines()[0])
    add_run_arguments(parser, None)
    parser.add_argument("--phantom_dir", default="data/phantom", help="phantom folder (data/phantom)")
    parser.add_argument("--patients", type=int, default=10, help="phantom patients (10)")
    args = parser.parse_args(argv)
    setup_cli_logging()
    name = Path(args.dataset_dir).resolve().name if args.dataset_dir else "phantom"
    args.output_dir = args.output_dir or f"results/{name}"
    if not args.dataset_dir:
        try:
            phantom = ensure_phantom(
                args.phantom_dir, patients=args.patients, seed=args.seed, progress=not args.no_progress
            )
        except USER_ERRORS as e:
            print(f"error: {describe(e)}", file=sys.stderr)
            return 2
        args.dataset_dir = str(phantom)
    return run_from_arguments(args, baseline=True)


if __name__ == "__main__":
    raise SystemExit(main())
