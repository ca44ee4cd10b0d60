"""Small shared helpers: progress bars, CLI logging, atomic file writes."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from tqdm.auto import tqdm

__all__ = ["atomic_path", "progress_bar", "setup_cli_logging"]

T = TypeVar("T")


def progress_bar(
    iterable: Iterable[T], desc: str, enabled: bool = True, total: int | None = None
) -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm bar on stderr; silent when disabled or when stderr is no terminal."""
    return iter(tqdm(iterable, desc=desc, total=total, disable=None if enabled else True, leave=False))


def setup_cli_logging(level: int = logging.INFO) -> None:
    """Plain ``LEVEL message`` logging to stderr for the command-line entry points."""
    logging.basicConfig(level=level, format="%(levelname)s %(message)s", stream=sys.stderr)


def atomic_path(path: str | os.PathLike) -> Path:
    """A temporary sibling of ``path`` to write to before ``os.replace(tmp, path)``."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")
