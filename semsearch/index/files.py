"""The index folder on disk: where it is, what belongs to it, and the few file operations every writer needs.

Files of an index (``indexes/NAME/``)::

    manifest.json        the commit point: names every file of the current generation (see manifest.py)
    docs.db              SQLite, written in place (WAL): documents, the lexical index, tombstones
    seg.<gen>.<i>.faiss  immutable vector segments
    seg.<gen>.<i>.ivfdata  an on-disk IVF segment's inverted lists (see ondisk.py)
    part.<gen>.<i>.faiss   parts an on-disk segment is merged from, while its write runs
    trained.<gen>.faiss  an empty trained index that IVF segments are cloned from
    .lock                held by the one writer
    .pending             the writer's journal: each file it is about to create, written before the file

A writer only ever deletes files named in ``.pending`` (it wrote their names there before creating them, so
they are provably the index's own) that the current manifest does not name.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
import time
from pathlib import Path

from ..errors import IndexNotFoundError, SemsearchError, WriterBusy

MANIFEST = "manifest.json"
DOCS_DB = "docs.db"
LOCK = ".lock"
PENDING = ".pending"
DEFAULT_INDEX = "default"
DEFAULT_ROOT = "indexes"
# Names the index may create; anything else in the folder is the user's and is never touched.
_OWN = re.compile(r"^(manifest\.json(\.tmp)?|docs\.db(-wal|-shm|-journal)?|docs\.\d+\.db|vectors\.\d+\.faiss|"
                  r"seg\.\d+\.\d+\.(faiss|ivfdata)|part\.\d+\.\d+\.faiss|trained\.\d+\.faiss|\.lock|\.pending)$")
HOUSEKEEPING = {LOCK, PENDING}


def index_path(name_or_path: str | os.PathLike | None = None, root: str | os.PathLike | None = None) -> Path:
    """Where an index lives: a plain name goes under ``indexes/`` (or ``$SEMSEARCH_INDEXES``), a path as is."""
    name = str(name_or_path or DEFAULT_INDEX)
    if os.sep in name or name.startswith("."):
        return Path(name)
    return Path(root or os.environ.get("SEMSEARCH_INDEXES", DEFAULT_ROOT)) / name


def is_own_name(name: str) -> bool:
    return bool(_OWN.match(name))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def read_pending(folder: Path) -> list[str]:
    file = folder / PENDING
    try:
        return [line for line in file.read_text().splitlines() if line and is_own_name(line)]
    except FileNotFoundError:
        return []


def add_pending(folder: Path, names: list[str]) -> None:
    """Record files about to be created (or given up), durably, before anything else happens to them."""
    with open(folder / PENDING, "a") as fh:
        fh.write("".join(f"{name}\n" for name in names))
        fh.flush()
        os.fsync(fh.fileno())


def clear_pending(folder: Path, keep: set[str]) -> list[str]:
    """Delete the journalled files that ``keep`` (the current manifest's files) does not name; empty the journal."""
    removed = []
    for name in dict.fromkeys(read_pending(folder)):
        if name in keep:
            continue
        try:
            (folder / name).unlink()
            removed.append(name)
        except FileNotFoundError:
            pass
    if (folder / PENDING).exists():
        with open(folder / PENDING, "w") as fh:
            fh.flush()
            os.fsync(fh.fileno())
    return removed


def folder_state(folder: Path) -> str:
    """``missing``, ``empty`` (nothing or only our housekeeping), ``index`` (has a manifest), ``unfinished``
    (only files a failed first write journalled), ``damaged`` (our data files without a manifest), or ``foreign``
    (the user's files)."""
    if not folder.exists():
        return "missing"
    if not folder.is_dir():
        return "foreign"
    names = {p.name for p in folder.iterdir()}
    if MANIFEST in names:
        return "index"
    journalled = set(read_pending(folder))
    leftovers = names - HOUSEKEEPING - journalled
    if not leftovers:
        return "unfinished" if names & journalled else "empty"
    ours = any(n.startswith(("seg.", "trained.")) for n in leftovers) or (
        DOCS_DB in leftovers and _is_sqlite(folder / DOCS_DB))
    if ours and all(is_own_name(n) for n in leftovers):
        return "damaged"
    return "foreign"


def _is_sqlite(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(16) == b"SQLite format 3\0"
    except OSError:
        return False


def refuse_missing(folder: Path) -> None:
    """Raise the one-line error for a folder that holds no readable index."""
    from ..errors import IndexDamaged

    state = folder_state(folder)
    if state in ("missing", "empty", "unfinished"):
        raise IndexNotFoundError(f"{folder}: no such index; build it with: semsearch index CORPUS --index {folder.name}")
    if state == "damaged":
        raise IndexDamaged(f"{folder}: {MANIFEST} is missing but the data files are there: the index is damaged; "
                           f"run: semsearch check --repair --index {folder}")
    if not folder.is_dir():
        raise IndexNotFoundError(f"{folder}: is a file, not an index folder")
    raise IndexNotFoundError(f"{folder}: not a semsearch index (no {MANIFEST}; the folder holds other files)")


class WriterLock:
    """An exclusive ``flock`` on ``.lock``, waited for up to ``timeout`` seconds."""

    def __init__(self, folder: Path, timeout: float) -> None:
        self.path = folder / LOCK
        self.timeout = timeout
        self.fh = None

    def __enter__(self) -> "WriterLock":
        try:
            self.fh = open(self.path, "a+")
        except OSError as exc:
            raise os_error(self.path.parent, exc) from None
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() >= deadline:
                    self.fh.close()
                    raise WriterBusy(
                        f"{self.path.parent}: another process is writing this index (waited {self.timeout:.0f} s); "
                        "try again when it has finished") from None
                time.sleep(0.05)

    def __exit__(self, *exc) -> None:
        if self.fh is not None:
            fcntl.flock(self.fh, fcntl.LOCK_UN)
            self.fh.close()
            self.fh = None


def os_error(path: Path | str, exc: OSError) -> SemsearchError:
    """One line for a failed write: full disk, read-only file system, permissions."""
    reason = {errno.ENOSPC: "no space left on the device", errno.EROFS: "read-only file system",
              errno.EACCES: "permission denied", errno.EDQUOT: "disk quota exceeded"}.get(exc.errno, exc.strerror)
    return SemsearchError(f"{path}: cannot write ({reason}); nothing was changed")
