"""The documents database: one SQLite file written in place, whose integer primary key is the FAISS vector id.

Every row records the generation that added it (``added``) and the one that deleted it (``deleted``, a
tombstone). A reader of generation G sees the rows with ``added <= G`` and no ``deleted <= G``, inside one read
transaction (WAL), so it keeps a consistent snapshot while writers commit beside it. A writer works inside one
write transaction; rows of a generation that never reached the manifest are removed by the next writer
(:meth:`DocStore.roll_back_to`). ``docs_fts`` (FTS5, porter + unicode61) indexes the texts, kept in step by
triggers; ``state`` holds ``next_rowid`` and ``purged`` (the newest generation whose tombstones compaction
removed); ``manifests`` keeps a copy of every manifest committed, from which ``check --repair`` can rebuild a
lost manifest.json.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from ..errors import IndexDamaged

SCHEMA = """
create table if not exists docs (
    rowid integer primary key, id text not null, text text not null, meta text, hash text not null,
    source text, line integer, added integer not null default 0, deleted integer);
create index if not exists docs_id on docs(id);
create unique index if not exists docs_live_id on docs(id) where deleted is null;
create index if not exists docs_hash on docs(hash);
create index if not exists docs_added on docs(added);
create index if not exists docs_deleted on docs(deleted) where deleted is not null;
create table if not exists state (key text primary key, value);
create table if not exists manifests (generation integer primary key, body text not null);
create virtual table if not exists docs_fts using fts5(
    text, content='docs', content_rowid='rowid', tokenize='porter unicode61');
create trigger if not exists docs_fts_insert after insert on docs begin
    insert into docs_fts(rowid, text) values (new.rowid, new.text); end;
create trigger if not exists docs_fts_delete after delete on docs begin
    insert into docs_fts(docs_fts, rowid, text) values ('delete', old.rowid, old.text); end;
"""
_BATCH = 500


@dataclass(frozen=True)
class StoredDoc:
    rowid: int
    id: str
    text: str
    meta: dict


class DocStore:
    """Documents in SQLite. ``generation``: the snapshot a reader sees (None: a writer, who sees its own rows)."""

    def __init__(self, path: Path, conn: sqlite3.Connection, generation: int | None, legacy: bool = False) -> None:
        self.path = Path(path)
        self.conn = conn
        self.generation = generation
        self.legacy = legacy

    # ------------------------------------------------------------------ opening
    @classmethod
    def open_reader(cls, path: Path, generation: int, legacy: bool = False) -> "DocStore":
        """A read-only connection holding one read transaction: the snapshot of ``generation``."""
        if not path.is_file():
            raise FileNotFoundError(path)
        with _damage(path):
            try:
                conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                                       check_same_thread=False)
                conn.execute("begin")
                conn.execute("select count(*) from sqlite_master").fetchone()  # the snapshot starts here
            except sqlite3.OperationalError:  # a read-only folder cannot hold the WAL index: nobody writes there
                conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True, isolation_level=None,
                                       check_same_thread=False)
                conn.execute("begin")
        store = cls(path, conn, generation, legacy)
        if not legacy and store.state("purged", 0) > generation:
            conn.close()
            raise StaleSnapshot(path)
        return store

    @classmethod
    def open_writer(cls, path: Path, *, create: bool) -> "DocStore":
        """A read-write connection; creates the schema when ``create``. Transactions are explicit."""
        if not create and not path.is_file():
            raise IndexDamaged(f"{path}: missing; the index is damaged (run: semsearch check --repair)")
        with _damage(path):
            conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            conn.execute("pragma busy_timeout = 10000")
            if create:
                conn.execute("pragma journal_mode = wal")
                conn.executescript(SCHEMA)
            conn.execute("pragma synchronous = full")
            conn.execute("select rowid from docs limit 1").fetchone()  # a database with our table, or an error
        return cls(path, conn, None)

    def close(self) -> None:
        try:
            self.conn.close()
        except sqlite3.Error:
            pass

    # ------------------------------------------------------------------ visibility
    def _visible(self, alias: str = "") -> tuple[str, list]:
        p = f"{alias}." if alias else ""
        if self.legacy:
            return "1", []
        if self.generation is None:
            return f"{p}deleted is null", []
        return f"{p}added <= ? and ({p}deleted is null or {p}deleted > ?)", [self.generation, self.generation]

    def execute(self, sql: str, params: Sequence = ()) -> sqlite3.Cursor:
        with _damage(self.path):
            return self.conn.execute(sql, params)

    # ------------------------------------------------------------------ reading
    def count(self) -> int:
        where, params = self._visible()
        return self.execute(f"select count(*) from docs where {where}", params).fetchone()[0]

    def existing(self, ids: Sequence[str]) -> dict[str, tuple[int, str]]:
        """``{id: (rowid, hash)}`` for the ids stored (visible)."""
        found: dict[str, tuple[int, str]] = {}
        where, params = self._visible()
        for part in _chunks(list(ids)):
            marks = ",".join("?" * len(part))
            for rowid, doc_id, digest in self.execute(
                    f"select rowid, id, hash from docs where id in ({marks}) and {where}", [*part, *params]):
                found[doc_id] = (rowid, digest)
        return found

    def rowids_for_ids(self, ids: Sequence[str]) -> dict[str, int]:
        return {doc_id: rowid for doc_id, (rowid, _) in self.existing(list(ids)).items()}

    def check_filters(self, conditions) -> list:
        """The conditions parsed and checked against the types each key holds: a value of the wrong type is a
        :class:`~semsearch.filters.FilterError`, a key no document has a :class:`~semsearch.filters.FilterWarning`."""
        import warnings

        from ..filters import FilterWarning, check_conditions, field_types, parse_condition

        parsed = [parse_condition(c) if isinstance(c, str) else c for c in conditions]
        types = self.__dict__.setdefault("_field_types", {})  # per snapshot: documents do not change under it
        missing = [c.key for c in parsed if c.key not in types]
        if missing:
            with _damage(self.path):
                types.update(field_types(self.conn, missing))
        for message in check_conditions(parsed, {c.key: types[c.key] for c in parsed}):
            warnings.warn(message, FilterWarning, stacklevel=3)
        return parsed

    def rowids_where(self, conditions) -> list[int]:
        """Row ids of the visible documents whose metadata meets every condition (see :mod:`semsearch.filters`)."""
        from ..filters import FilterError, where_clause

        sql, params = where_clause(self.check_filters(conditions))
        where, vis = self._visible()
        try:
            return [r[0] for r in self.conn.execute(
                f"select rowid from docs where ({sql}) and {where} order by rowid", [*params, *vis])]
        except sqlite3.OperationalError as exc:
            raise FilterError(f"filter failed: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise _damaged(self.path, exc) from None

    def fetch(self, rowids: Sequence[int]) -> dict[int, StoredDoc]:
        """The documents with these row ids, keyed by row id (visibility is the caller's: ids come from vectors)."""
        out: dict[int, StoredDoc] = {}
        for part in _chunks([int(r) for r in rowids]):
            marks = ",".join("?" * len(part))
            for rowid, doc_id, text, meta in self.execute(
                    f"select rowid, id, text, meta from docs where rowid in ({marks})", part):
                out[rowid] = StoredDoc(rowid, doc_id, text, json.loads(meta) if meta else {})
        return out

    def dead_rowids(self) -> list[int]:
        """Row ids deleted in this snapshot whose rows (and vectors) compaction has not removed yet."""
        if self.legacy:
            return []
        if self.generation is None:
            sql, params = "select rowid from docs where deleted is not null order by rowid", []
        else:
            sql, params = "select rowid from docs where deleted <= ? order by rowid", [self.generation]
        return [r[0] for r in self.execute(sql, params)]

    def live_rowids(self) -> list[int]:
        where, params = self._visible()
        return [r[0] for r in self.execute(f"select rowid from docs where {where} order by rowid", params)]

    def iter_texts(self, rowids: Sequence[int] | None = None, batch: int = 4096) -> Iterator[tuple[list[int], list[str]]]:
        """``(rowids, texts)`` of the visible documents (or of ``rowids``) in row-id order, a batch at a time."""
        if rowids is not None:
            ordered = sorted(int(r) for r in rowids)
            for start in range(0, len(ordered), batch):
                docs = self.fetch(ordered[start:start + batch])
                yield [r for r in ordered[start:start + batch]], [docs[r].text for r in ordered[start:start + batch]]
            return
        where, params = self._visible()
        last = 0
        while True:
            rows = self.execute(f"select rowid, text from docs where rowid > ? and {where} order by rowid limit ?",
                                [last, *params, batch]).fetchall()
            if not rows:
                return
            yield [r[0] for r in rows], [r[1] for r in rows]
            last = rows[-1][0]

    def lexical(self, match: str, limit: int, allowed_sql: tuple[str, list] | None = None) -> list[tuple[int, float]]:
        """``(rowid, bm25)`` of the best visible matches of an FTS5 expression (lower bm25 is better)."""
        where, params = self._visible("d")
        extra, extra_params = allowed_sql or ("1", [])
        sql = (f"select d.rowid, bm25(docs_fts) from docs_fts join docs d on d.rowid = docs_fts.rowid "
               f"where docs_fts match ? and {where} and ({extra}) order by bm25(docs_fts), d.rowid limit ?")
        return [(r[0], r[1]) for r in self.execute(sql, [match, *params, *extra_params, limit])]

    def state(self, key: str, default=None):
        row = self.execute("select value from state where key = ?", [key]).fetchone()
        return default if row is None else row[0]

    # ------------------------------------------------------------------ writing (inside the writer's transaction)
    def begin(self) -> None:
        self.execute("begin immediate")

    def commit(self) -> None:
        self.execute("commit")

    def rollback(self) -> None:
        try:
            self.conn.execute("rollback")
        except sqlite3.Error:
            pass

    def set_state(self, key: str, value) -> None:
        self.execute("insert or replace into state(key, value) values (?, ?)", [key, value])

    def next_rowid(self) -> int:
        stored = self.state("next_rowid")
        largest = self.execute("select max(rowid) from docs").fetchone()[0] or 0
        return max(int(stored or 1), largest + 1)

    def insert(self, rows: Iterable[tuple]) -> None:
        """Rows of ``(rowid, id, text, meta_json, hash, source, line, added)``."""
        self.conn.executemany(
            "insert into docs(rowid, id, text, meta, hash, source, line, added) values (?, ?, ?, ?, ?, ?, ?, ?)",
            rows)

    def mark_deleted(self, rowids: Sequence[int], generation: int) -> None:
        for part in _chunks([int(r) for r in rowids]):
            marks = ",".join("?" * len(part))
            self.execute(f"update docs set deleted = ? where rowid in ({marks}) and deleted is null",
                         [generation, *part])

    def purge(self, rowids: Sequence[int]) -> None:
        """Remove tombstoned rows for good (compaction dropped their vectors)."""
        for part in _chunks([int(r) for r in rowids]):
            marks = ",".join("?" * len(part))
            self.execute(f"delete from docs where rowid in ({marks}) and deleted is not null", part)

    def roll_back_to(self, generation: int) -> int:
        """Undo what writers of later generations committed to SQLite before crashing short of their manifest."""
        undone = self.execute("delete from docs where added > ?", [generation]).rowcount
        undone += self.execute("update docs set deleted = null where deleted > ?", [generation]).rowcount
        self.execute("delete from manifests where generation > ?", [generation])
        return undone

    def record_manifest(self, generation: int, body: dict) -> None:
        self.execute("insert or replace into manifests(generation, body) values (?, ?)", [generation, json.dumps(body)])
        self.execute("delete from manifests where generation < ?", [generation - 8])

    def recorded_manifests(self) -> list[tuple[int, dict]]:
        return [(g, json.loads(b)) for g, b in
                self.execute("select generation, body from manifests order by generation desc")]

    # ------------------------------------------------------------------ checking
    def integrity_problems(self) -> list[str]:
        problems = []
        result = self.execute("pragma integrity_check").fetchone()[0]
        if result != "ok":
            problems.append(f"SQLite integrity check: {result}")
        if not self.legacy:  # FTS5 checks itself through an INSERT, so on a connection of its own, rolled back
            try:
                conn = sqlite3.connect(str(self.path), isolation_level=None)
            except sqlite3.Error:
                return problems
            try:
                conn.execute("begin")
                conn.execute("insert into docs_fts(docs_fts, rank) values ('integrity-check', 1)")
            except sqlite3.OperationalError as exc:
                if "readonly" not in str(exc) and "read-only" not in str(exc) and "locked" not in str(exc):
                    problems.append(f"the lexical index disagrees with the documents ({exc})")
            except sqlite3.DatabaseError as exc:
                problems.append(f"the lexical index disagrees with the documents ({exc})")
            finally:
                try:
                    conn.execute("rollback")
                except sqlite3.Error:
                    pass
                conn.close()
        return problems


class StaleSnapshot(Exception):
    """The database moved past the generation a reader asked for (compaction purged rows it needs): reopen."""


def _chunks(items: list, size: int = _BATCH):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _damaged(path: Path, exc: sqlite3.DatabaseError) -> IndexDamaged:
    text = str(exc)
    if "full" in text:
        from ..errors import SemsearchError

        return SemsearchError(f"{path}: cannot write (no space left on the device); nothing was changed")  # type: ignore[return-value]
    if "readonly" in text or "read-only" in text:
        from ..errors import SemsearchError

        return SemsearchError(f"{path}: cannot write (read-only file system); nothing was changed")  # type: ignore[return-value]
    return IndexDamaged(f"{path}: unreadable SQLite database ({text}); run: semsearch check --repair")


@contextmanager
def _damage(path: Path):
    """SQLite errors that mean a damaged or unwritable file, as one-line errors naming it."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        text = str(exc)
        if "locked" in text or "busy" in text:
            raise
        raise _damaged(path, exc) from None
    except sqlite3.DatabaseError as exc:
        raise _damaged(path, exc) from None
