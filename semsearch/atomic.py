"""Durable file writes: flushed to the disk, and swapped in whole by a rename (a reader sees old or new)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path


def fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: dict, *, unique_tmp: bool = False) -> None:
    """Write ``data`` to a temporary sibling, flush it, then rename it over ``path`` and flush the folder.

    ``unique_tmp`` names the temporary file per call, for folders that several processes may write at once.
    """
    name = f".{path.name}.{uuid.uuid4().hex[:8]}.tmp" if unique_tmp else path.name + ".tmp"
    tmp = path.with_name(name)
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
