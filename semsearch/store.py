"""The metadata store: one SQLite table of documents whose integer primary key is the FAISS vector id.

A vector hit joins its document with no extra mapping (``rowid`` = FAISS id).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import sqlite_utils

DOCS = "docs"


@dataclass(frozen=True)
class StoredDoc:
    rowid: int
    id: str
    text: str
    meta: dict


class DocStore:
    """Documents in SQLite, through sqlite-utils."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        else:
            conn = sqlite3.connect(str(self.path), check_same_thread=False)
        self.db = sqlite_utils.Database(conn)
        if not readonly:
            self._create()

    def _create(self) -> None:
        if DOCS not in self.db.table_names():
            self.db[DOCS].create(
                {"rowid": int, "id": str, "text": str, "meta": str, "hash": str, "source": str, "line": int},
                pk="rowid", not_null={"id", "text", "hash"},
            )
            self.db[DOCS].create_index(["id"], unique=True)
            self.db[DOCS].create_index(["hash"])

    def close(self) -> None:
        self.db.conn.close()

    def __len__(self) -> int:
        return self.db.execute(f"select count(*) from {DOCS}").fetchone()[0]

    def existing(self, ids: Sequence[str]) -> dict[str, tuple[int, str]]:
        """``{id: (rowid, hash)}`` for the ids already stored."""
        found: dict[str, tuple[int, str]] = {}
        for start in range(0, len(ids), 500):
            part = list(ids[start:start + 500])
            marks = ",".join("?" * len(part))
            for rowid, doc_id, digest in self.db.execute(
                    f"select rowid, id, hash from {DOCS} where id in ({marks})", part):
                found[doc_id] = (rowid, digest)
        return found

    def next_rowid(self) -> int:
        value = self.db.execute(f"select max(rowid) from {DOCS}").fetchone()[0]
        return 1 if value is None else value + 1

    def write(self, rows: Iterable[dict]) -> None:
        """Insert or replace rows (each with its ``rowid``) in one transaction."""
        with self.db.conn:
            self.db[DOCS].insert_all(rows, replace=True, batch_size=1000)

    def rowids_where(self, conditions) -> list[int]:
        """Row ids of the documents whose metadata meets every condition (see :mod:`semsearch.filters`)."""
        from .filters import where_clause

        sql, params = where_clause(conditions)
        try:
            return [r[0] for r in self.db.execute(f"select rowid from {DOCS} where {sql} order by rowid", params)]
        except sqlite3.OperationalError as exc:
            from .filters import FilterError

            raise FilterError(f"filter failed: {exc}") from None

    def rowids_for_ids(self, ids: Sequence[str]) -> dict[str, int]:
        """``{id: rowid}`` for the ids that are stored."""
        return {doc_id: rowid for doc_id, (rowid, _) in self.existing(list(ids)).items()}

    def delete_rowids(self, rowids: Sequence[int]) -> None:
        with self.db.conn:
            self.db.conn.executemany(f"delete from {DOCS} where rowid = ?", [(int(r),) for r in rowids])

    def fetch(self, rowids: Sequence[int]) -> dict[int, StoredDoc]:
        """The documents with these row ids, keyed by row id."""
        if len(rowids) == 0:
            return {}
        out: dict[int, StoredDoc] = {}
        for start in range(0, len(rowids), 500):
            part = [int(r) for r in rowids[start:start + 500]]
            marks = ",".join("?" * len(part))
            for rowid, doc_id, text, meta in self.db.execute(
                    f"select rowid, id, text, meta from {DOCS} where rowid in ({marks})", part):
                out[rowid] = StoredDoc(rowid, doc_id, text, json.loads(meta) if meta else {})
        return out

    def iter_texts(self, batch: int = 4096):
        """``(rowids, texts)`` in row-id order, a batch at a time."""
        last = 0
        while True:
            rows = self.db.execute(
                f"select rowid, text from {DOCS} where rowid > ? order by rowid limit ?", (last, batch)).fetchall()
            if not rows:
                return
            yield [r[0] for r in rows], [r[1] for r in rows]
            last = rows[-1][0]
