"""The server's open index, and the switch to a newer generation when one is committed.

Every request takes a *lease* on the current :class:`~semsearch.index.Index` and gives it back when done.
A watcher thread looks at the index's generation every ``interval`` seconds (a stat of ``manifest.json``,
cheap); when a writer in this process or in another one committed a new generation, it opens the new one,
makes it current and closes the old one once the last request that was using it has finished. Queries
therefore keep answering from a whole snapshot while a write runs, and see the write as soon as it is
committed, without a restart.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from ..errors import IndexNotFoundError, ModelError

if TYPE_CHECKING:
    from ..index import Index

log = logging.getLogger("semsearch.server")



def generation_stamp(path: Path) -> Any:
    """The committed generation of the index at ``path`` (reads manifest.json only); None when there is none.

    A manifest that cannot be read gives its file's identity instead, so opening it reports the damage."""
    from ..index import MANIFEST, current_generation

    generation = current_generation(path)
    if generation is None and (path / MANIFEST).exists():
        stat = (path / MANIFEST).stat()
        return ("unreadable", stat.st_ino, stat.st_mtime_ns, stat.st_size)
    return generation


def generation_of(index: "Index") -> int:
    """The generation an open index shows."""
    return index.generation


@dataclass
class _Snapshot:
    index: "Index"
    stamp: Any
    users: int = 0
    retired: bool = False


class Snapshots:
    """The current generation of one index folder, shared by the request handlers."""

    def __init__(self, path: Path, *, query_cache: int = 1024, encoder=None, interval: float = 0.2) -> None:
        self.path = Path(path)
        self.query_cache = query_cache
        self.interval = interval
        self._encoder = encoder  # given (tests, a preloaded model) or the first index's own, once loaded
        self._lock = threading.Lock()       # guards _current and the users counts
        self._open_lock = threading.Lock()  # one refresh at a time
        self._current: _Snapshot | None = None
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self.reopened = 0  # generations opened after the first (for /info and tests)

    # ----------------------------------------------------------------- leases
    @contextmanager
    def lease(self) -> Iterator["Index"]:
        """The current index, kept open until the block ends. Raises IndexNotFoundError when there is none."""
        with self._lock:
            snapshot = self._current
            if snapshot is None:
                raise IndexNotFoundError(f"{self.path}: no such index yet; add documents with POST /documents "
                                         f"or build it with: semsearch index CORPUS --index {self.path}")
            snapshot.users += 1
        try:
            yield snapshot.index
        finally:
            with self._lock:
                snapshot.users -= 1
                close = snapshot.retired and snapshot.users == 0
            if close:
                snapshot.index.close()

    @property
    def available(self) -> bool:
        return self._current is not None

    def encoder(self):
        """The query encoder: the one given, else the current index's own (loaded on first use)."""
        if self._encoder is None:
            with self.lease() as index:
                self._encoder = index.encoder()
        return self._encoder

    # ----------------------------------------------------------------- switching
    def refresh(self) -> bool:
        """Open the index's newest generation if it changed; True when the current snapshot was replaced."""
        with self._open_lock:
            stamp = generation_stamp(self.path)  # read before opening: a commit in between is seen next time
            current = self._current
            if current is not None and stamp == current.stamp:
                return False
            if stamp is None:
                if current is not None:
                    log.warning("%s: the index is gone; answering 404 until it is back", self.path)
                    self._replace(None)
                    return True
                return False
            from ..index import Index

            index = Index.open(self.path, query_cache=self.query_cache)
            if self._encoder is not None:
                try:
                    index.use_encoder(self._encoder)
                except ModelError:  # rebuilt with another model: use its own from now on
                    log.warning("%s: the index now has another model; loading it", self.path)
                    self._encoder = None
            self._replace(_Snapshot(index, stamp))
            if current is not None:
                self.reopened += 1
            return True

    def _replace(self, snapshot: _Snapshot | None) -> None:
        with self._lock:
            old, self._current = self._current, snapshot
            close = old is not None and old.users == 0
            if old is not None:
                old.retired = True
        if close:
            old.index.close()

    # ----------------------------------------------------------------- watcher
    def start(self) -> None:
        """Open the index (when it exists) and watch for new generations in a daemon thread."""
        self.refresh()
        self._stop.clear()
        self._watcher = threading.Thread(target=self._watch, name="semsearch-generations", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.refresh()
            except Exception as exc:  # a damaged or half-deleted index: keep the last good snapshot
                log.warning("%s: cannot open the new generation (%s); still serving the previous one",
                            self.path, exc)

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        self._replace(None)


def fetch_documents(index: "Index", ids: list[str]) -> dict[str, dict]:
    """``{id: {"id", "text", "meta"}}`` for the stored ones among ``ids``."""
    return {doc_id: {"id": hit.id, "text": hit.text, "meta": hit.meta} for doc_id, hit in index.get(ids).items()}
