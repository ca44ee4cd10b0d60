"""What a user sees when input or the machine is at fault: one ``error: ...`` line, not a traceback.

Every command line (``python -m acdc_wsss run``, the demo, ``python -m voc_adapter run``) reports the
errors in :data:`USER_ERRORS` through :func:`describe`; bundles run through ``python -m monai.bundle run``
get the same through :func:`short_errors`, which the bundles call in their ``initialize`` step. MONAI wraps
an error raised while a config is evaluated in a ``RuntimeError``; :func:`user_error` finds the user's
error inside that chain. ``ACDC_WSSS_TRACEBACK=1`` shows full tracebacks again.
"""

from __future__ import annotations

import errno
import os
import sys
from types import TracebackType

__all__ = ["USER_ERRORS", "DatasetError", "describe", "short_errors", "user_error"]


class DatasetError(ValueError):
    """A dataset folder, patient or datalist is unusable; the message names the file and the fault."""


#: What a command line reports as one ``error: ...`` line: bad data, missing or existing outputs, bad
#: settings, and files the machine cannot write (read-only folder, full disk).
USER_ERRORS: tuple[type[Exception], ...] = (DatasetError, OSError, ValueError, TypeError)

#: ``OSError`` numbers that mean "this file cannot be written here", with what to do about it.
_WRITE_FAULTS = {
    errno.ENOSPC: "free some space (or choose another --output_dir) and run the same command again",
    errno.EDQUOT: "free some space (or choose another --output_dir) and run the same command again",
    errno.EROFS: "choose a writable --output_dir",
    errno.EACCES: "choose a writable --output_dir or fix its permissions",
    errno.EPERM: "choose a writable --output_dir or fix its permissions",
}


def describe(error: BaseException) -> str:
    """The one-line message for ``error``: its own text, or for a write fault, the file, the cause and
    what to do (finished outputs are kept; every output is written to a temporary name first)."""
    if isinstance(error, OSError) and error.errno in _WRITE_FAULTS:
        where = error.filename or "a file"
        return (
            f"cannot write {where}: {error.strerror}. Nothing finished was lost (outputs are written to a "
            f"temporary name and renamed); {_WRITE_FAULTS[error.errno]}."
        )
    return str(error)


def user_error(error: BaseException) -> BaseException | None:
    """The first error of :data:`USER_ERRORS` in ``error``'s chain of causes, or None."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, USER_ERRORS):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _hook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
    found = user_error(error)
    if found is None or os.environ.get("ACDC_WSSS_TRACEBACK"):
        sys.__excepthook__(kind, error, tb)
        return
    print(f"error: {describe(found)}\n(ACDC_WSSS_TRACEBACK=1 shows the full traceback)", file=sys.stderr)


def short_errors() -> None:
    """Report a user error that ends the process as one line (used by the bundles' ``initialize``)."""
    sys.excepthook = _hook
