"""Every error semsearch raises on purpose derives from :class:`SemsearchError`.

The CLI turns these into one-line messages with exit code 1; anything else is a bug.
"""

from __future__ import annotations

from pathlib import Path


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
