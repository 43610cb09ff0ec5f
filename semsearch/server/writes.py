"""Writes from HTTP requests: documents in, deletions, one writer at a time.

Records are built by :func:`semsearch.corpus.record_from_fields`, the rules ``semsearch index`` applies to a
JSONL line (so an id missing from a request gets the same content hash as from a file). A write runs
through :class:`~semsearch.index.IndexWriter` in a worker thread: one at a time in this process, and when
another process holds the index's lock, the request waits ``wait`` seconds and then gets 409. Once a write
is committed, the server's snapshot is refreshed before the response goes out, so the next request sees it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence, TypeVar

from ..corpus import Record, json_objects, record_from_fields
from ..errors import InputError, ModelError
from .errors import ApiError

if TYPE_CHECKING:
    from ..index import IndexWriter
    from .snapshots import Snapshots

log = logging.getLogger("semsearch.server")
T = TypeVar("T")
SOURCE = "http"  # the "source" column of documents written through the server


def records_from_objects(objects: Sequence[dict]) -> list[Record]:
    """Records from the ``documents`` list of a JSON body; a bad one is a 400 naming ``documents[i]``."""
    records = []
    for position, values in enumerate(objects):
        try:
            records.append(record_from_fields(values, "documents", position + 1))
        except InputError as exc:
            raise ApiError(400, "invalid_document", f"documents[{position}]: {exc.reason}",
                           f"documents[{position}]") from None
    if not records:
        raise ApiError(400, "invalid_document", "documents: the list is empty", "documents")
    return records


def records_from_ndjson(body: bytes) -> list[Record]:
    """Records from an NDJSON body (one JSON object per line); a bad line is a 400 naming it."""
    def numbered():
        for number, raw in enumerate(body.split(b"\n"), start=1):
            try:
                yield number, raw.decode("utf-8").lstrip("\ufeff") if number == 1 else raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ApiError(400, "invalid_document", f"line {number}: invalid UTF-8 at byte {exc.start}",
                               "body") from None

    records = []
    for number, values, problem in json_objects(numbered()):
        try:
            if problem:
                raise InputError("body", problem, number)
            records.append(record_from_fields(values, "body", number))
        except InputError as exc:
            raise ApiError(400, "invalid_document", f"line {number}: {exc.reason}", "body") from None
    if not records:
        raise ApiError(400, "invalid_document", "the body holds no documents", "body")
    return records


class Writes:
    """Serialises this server's writes to one index and refreshes its snapshot after each."""

    def __init__(self, path: Path, snapshots: "Snapshots", *, encoder=None, wait: float = 5.0) -> None:
        self.path = Path(path)
        self.snapshots = snapshots
        self.wait = wait
        self._encoder = encoder  # embeds new texts; loaded by the first write when not given
        self._lock = threading.Lock()
        self.active = False  # a write is running (GET /health)
        self.committed = 0

    def add(self, records: list[Record]) -> dict:
        def run(writer: "IndexWriter") -> dict:
            report = writer.add(records, source=SOURCE)
            if self._encoder is None:
                self._encoder = writer.encoder  # loaded by add: keep it for the next write
            fields = asdict(report)
            fields.pop("skipped", None)
            fields.pop("skipped_examples", None)
            return fields

        return self._write(run, create=True)

    def delete(self, ids: Sequence[str], filters: Sequence[str]) -> dict:
        return self._write(lambda writer: {"deleted": writer.delete(list(ids), list(filters))}, create=False)

    def _write(self, run: Callable[["IndexWriter"], dict], *, create: bool) -> dict:
        from ..index import IndexWriter
        from .snapshots import generation_stamp

        if not self._lock.acquire(timeout=self.wait):
            raise ApiError(409, "writer_busy", f"this server has been writing {self.path} for more than "
                                               f"{self.wait:.0f} s; try again when it has finished")
        try:
            self.active = True
            if not create and generation_stamp(self.path) is None:
                from ..errors import IndexNotFoundError

                raise IndexNotFoundError(f"{self.path}: no such index")
            try:
                with IndexWriter(self.path, self._encoder, create=create, lock_timeout=self.wait) as writer:
                    result = run(writer)
            except ModelError:
                self._encoder = None  # the index was rebuilt with another model: load its own next time
                raise
            self.committed += 1
            self.snapshots.refresh()
            with self.snapshots.lease() as index:
                from .snapshots import generation_of

                result["generation"] = generation_of(index)
            return result
        finally:
            self.active = False
            self._lock.release()
