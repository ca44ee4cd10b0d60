"""Small shared helpers: progress bars, CLI logging, atomic file writes."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from tqdm.auto import tqdm

__all__ = ["atomic_path", "progress_bar", "setup_cli_logging", "write_json"]

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


def write_json(data: Any, path: str | os.PathLike) -> Path:
    """Write ``data`` as indented JSON atomically (temp file, then rename); create the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic_path(path)
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
