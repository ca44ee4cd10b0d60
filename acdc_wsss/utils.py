"""Small shared helpers: progress bars, CLI logging, atomic file writes."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from tqdm.auto import tqdm

__all__ = ["atomic_write", "ensure_writable", "progress_bar", "setup_cli_logging", "write_json"]

T = TypeVar("T")


def progress_bar(
    iterable: Iterable[T], desc: str, enabled: bool = True, total: int | None = None
) -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm bar on stderr; silent when disabled or when stderr is no terminal."""
    return iter(tqdm(iterable, desc=desc, total=total, disable=None if enabled else True, leave=False))


def setup_cli_logging(level: int = logging.INFO) -> None:
    """Plain ``LEVEL message`` logging to stderr for the command-line entry points."""
    logging.basicConfig(level=level, format="%(levelname)s %(message)s", stream=sys.stderr)


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; it replaces ``path`` when the block succeeds.

    The temporary name ends like ``path`` (``.tmp-PID-NAME``), so writers that pick the format from the
    extension (nibabel, NumPy's ``.npz``, matplotlib) write the right thing. On an error the temporary
    file is removed and ``path`` is left as it was. The parent folder is created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        if e.filename != str(tmp):
            raise
        raise type(e)(e.errno, e.strerror, str(path)) from e  # name the file the user knows
    finally:
        tmp.unlink(missing_ok=True)


def write_json(data: Any, path: str | os.PathLike) -> Path:
    """Write ``data`` as indented JSON atomically (temp file, then rename); create the parent folder."""
    path = Path(path)
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


def ensure_writable(folder: str | os.PathLike) -> Path:
    """Create ``folder`` (and its parents) and prove it can be written by writing and removing a small
    file, so a read-only or full output folder is refused before any work; the ``OSError`` names it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f".write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"ok")
    except OSError as e:
        raise type(e)(e.errno, e.strerror, str(folder)) from e
    finally:
        probe.unlink(missing_ok=True)
    return folder
