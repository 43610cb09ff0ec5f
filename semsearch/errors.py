"""Every error semsearch raises on purpose derives from :class:`SemsearchError`.

The CLI turns these into one-line messages with exit code 1; anything else is a bug.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TypeVar


class SemsearchError(Exception):
    """Base class of the errors a user can act on."""


class InputError(SemsearchError):
    """Bad input data: names the file and, where known, the line."""

    def __init__(self, path: str | Path, message: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        self.reason = message
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {message}")


class ModelError(SemsearchError):
    """A model cannot be found, loaded or does not match an index."""


class IndexNotFoundError(SemsearchError):
    """The named index folder does not exist or holds no index."""


class IndexFormatError(SemsearchError):
    """An index folder that this version cannot read (newer format, damaged files)."""


class IndexDamaged(IndexFormatError):
    """An index whose files are missing, corrupt or disagree; ``semsearch check --repair`` may mend it."""


class WriterBusy(SemsearchError):
    """Another process holds the index's write lock."""


class InvalidArgument(SemsearchError, ValueError):
    """A value a function cannot use: an unknown choice (pooling, format, objective, ...), lengths that do
    not match. Also a ``ValueError``, so callers that caught one before keep working."""


class UnsupportedModel(ModelError):
    """A model that declares something semsearch does not implement (e.g. a pooling mode), so it would
    give other vectors than its authors' library: refused rather than approximated."""


class InferenceOnly(ModelError, RuntimeError):
    """An encoder on the inference-only backend was asked to train (load it with ``backend='transformers'``)."""


E = TypeVar("E", bound=Enum)


def choice(kind: type[E], value, what: str) -> E:
    """The member of the enum ``kind`` that ``value`` names, or :class:`InvalidArgument` listing the choices."""
    try:
        return kind(value)
    except ValueError:
        names = ", ".join(str(member.value) for member in kind)
        raise InvalidArgument(f"unknown {what} {value!r}: use one of {names}") from None
