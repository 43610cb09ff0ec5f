"""Writing an index: each write is one new generation that costs what it changes.

A writer takes the folder's lock, rolls back whatever a crashed writer left (SQLite rows of generations the
manifest never named, journalled files it does not name), and opens one SQLite write transaction. Added and
updated documents get new row ids and go into one new segment; a replaced or deleted document's row gets a
tombstone (``deleted = generation``). :meth:`IndexWriter.commit` saves the segment, commits SQLite (with a copy of
the new manifest), and then atomically replaces ``manifest.json``: until that rename, readers and a crash see
the previous generation. :meth:`IndexWriter.compact` merges segments and purges tombstones the same way.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from ..atomic import fsync_file
from ..chunking import Chunking
from ..corpus import Record, iter_batches
from ..encoder import EncoderSpec, check_precision
from ..errors import IndexDamaged, IndexFormatError, InputError, ModelError, SemsearchError
from ..vectors import IndexTypeError, VectorStore, choose_type, normalise_type, stored_type
from .docs import DocStore
from .files import (DOCS_DB, MANIFEST, WriterLock, add_pending, clear_pending, folder_state, index_path,
                    is_own_name, os_error, refuse_missing, sha256)
from . import passages as P
from .manifest import Manifest, Segment, library_versions, now
from .reader import check_same_encoder
from .segments import (TYPED_SEGMENT_MIN, load_segment, new_segment_store, save_segment, segment_name,
                       trained_name)

if TYPE_CHECKING:
    from ..encoder import Encoder

MAX_SEGMENTS = 24  # more after a write: the smallest segments are merged (see compaction_due)
MAX_DEAD_FRACTION = 0.2  # more tombstoned vectors than this share: everything is compacted


@dataclass
class AddReport:
    """What one ``add`` did."""

    read: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    repeated: int = 0  # ids seen more than once in the input (the last one wins)
    truncated: int = 0  # texts longer than the model's max length: embedded from their beginning
    chunked: int = 0  # texts longer than the window: embedded as several passages
    passages: int = 0  # vectors embedded (one per passage; a text that fits is one)
    skipped: int = 0  # invalid records passed over (skip_invalid)
    skipped_examples: list[str] = field(default_factory=list)  # the first few of their messages
    seconds: float = 0.0

    @property
    def embedded(self) -> int:
        return self.added + self.updated


@dataclass
class CompactReport:
    segments_before: int = 0
    segments_after: int = 0
    purged: int = 0  # tombstoned documents removed for good
    vectors: int = 0  # vectors rewritten
    seconds: float = 0.0


def compaction_due(manifest: Manifest) -> str | None:
    """Why the automatic policy would compact this generation now (None: it would not). It never rewrites an
    on-disk segment (that would bring its lists into memory): tombstones there wait for ``semsearch compact``."""
    if _needs_full(manifest):
        return f"{manifest.dead} of {manifest.vector_total} vectors are deleted (over {MAX_DEAD_FRACTION:.0%})"
    if len(manifest.segments) > MAX_SEGMENTS:
        return f"{len(manifest.segments)} segments (over {MAX_SEGMENTS})"
    return None


class IndexWriter:
    """Adds and deletes documents as one new generation; nothing is visible until :meth:`commit`.

    >>> with IndexWriter("indexes/docs", encoder) as writer:
    ...     report = writer.add(read_records("corpus.jsonl"))
    """

    def __init__(self, name_or_path: str | os.PathLike | None = None, encoder: "Encoder | None" = None, *,
                 model: str | None = None, index_type: str = "auto", expected_count: int | None = None,
                 lock_timeout: float = 60.0, rebuild: bool = False, create: bool = True,
                 precision: str | None = None, force: bool = False, auto_compact: bool = True,
                 chunking: Chunking | None = Chunking()) -> None:
        """``index_type`` (new index only, see :mod:`semsearch.vectors`): ``auto`` is exact flat unless
        ``expected_count`` says the corpus is large. ``precision`` (``fp32``, ``bf16``; new index: fp32 when
        not given) must match an existing index's. ``force`` creates an index in a folder that holds other
        files (never touching them). ``auto_compact`` lets a commit merge segments when :func:`compaction_due`.
        ``chunking``: how texts longer than the model's max length become passages (see
        :mod:`semsearch.chunking`; the default cuts windows of the max length); None truncates them."""
        self.path = index_path(name_or_path)
        self._rebuild = rebuild
        self._create = create
        self._force = force
        self._auto_compact = auto_compact
        self._given_encoder = encoder
        self._model = model
        self._precision = check_precision(precision) if precision is not None else None
        self._index_type = normalise_type(index_type)
        self._expected_count = expected_count
        self._chunking = chunking
        self._chunker = False  # not made yet (None: no chunking)
        self._lock = WriterLock(self.path, lock_timeout)
        self._encoder: Encoder | None = None
        self.store: DocStore | None = None
        self.old: Manifest | None = None
        self.compacted: CompactReport | None = None
        self._builder = None  # an OnDiskBuilder that takes this write's vectors instead of self.vectors

    # -------------------------------------------------------------- lifecycle
    def __enter__(self) -> "IndexWriter":
        self._check_folder()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise os_error(self.path, exc) from None
        self._lock.__enter__()
        try:
            self._begin()
        except OSError as exc:
            self._abort()
            self._lock.__exit__()
            raise os_error(self.path, exc) from None
        except BaseException:
            self._abort()
            self._lock.__exit__()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                try:
                    self.commit()
                except OSError as error:
                    self._abort()
                    raise os_error(self.path, error) from None
                except BaseException:
                    self._abort()
                    raise
            else:
                self._abort()
        finally:
            self._lock.__exit__()

    def _check_folder(self) -> None:
        state = folder_state(self.path)
        if state == "index":
            return
        if not self._create:
            refuse_missing(self.path)
        if self.path.exists() and not self.path.is_dir():
            raise SemsearchError(f"{self.path}: is a file, not an index folder; choose another --index")
        if state == "damaged":
            refuse_missing(self.path)
        if state == "foreign":
            clashes = sorted(p.name for p in self.path.iterdir() if is_own_name(p.name))
            if clashes:
                raise SemsearchError(f"{self.path}: holds {', '.join(clashes[:3])}, which an index would write; "
                                     "refusing to touch them: choose another --index")
            if not self._force:
                raise SemsearchError(f"{self.path}: the folder holds other files and no index; refusing to write "
                                     "there (choose an empty or new folder, or pass --force to add the index "
                                     "beside those files, which stay untouched)")

    @property
    def encoder(self) -> "Encoder":
        """The index's encoder, loaded on first use (deleting needs none)."""
        if self._encoder is None:
            from ..encoder import Encoder

            if self.old is None:
                self._encoder = Encoder.load(self._model, backend="auto", precision=self._precision or "fp32")
            elif self._model is not None:
                self._encoder = Encoder.load(self._model, pooling=self.spec.pooling, max_length=self.spec.max_length,
                                             backend="auto", precision=self.spec.precision)
                check_same_encoder(self.spec, self._encoder.spec, self.path)
            else:
                self._encoder = Encoder.from_spec(self.spec)
        return self._encoder

    def _begin(self) -> None:
        self.old = Manifest.load(self.path) if (self.path / MANIFEST).exists() else None
        old = self.old
        # What a crashed writer journalled and the manifest does not name is its own leftover: remove it.
        clear_pending(self.path, keep=old.files() if old else set())
        if old is not None and self._index_type not in ("auto", stored_type(old.faiss), old.faiss.get("factory")):
            raise IndexTypeError(
                f"{self.path}: is a {stored_type(old.faiss)} index ({old.faiss.get('factory')}) and keeps "
                f"that type; drop --index-type {self._index_type}, or build a new index with it")
        self.spec: EncoderSpec | None = old.encoder if old else None
        if self.spec is not None and self._precision not in (None, self.spec.precision):
            raise ModelError(f"{self.path}: was built with {self.spec.precision} precision and keeps it; "
                             f"drop --precision {self._precision}, or build a new index with it")
        given = self._given_encoder
        if given is not None and self._precision not in (None, given.spec.precision):
            raise ModelError(f"precision {self._precision!r} asked for, but the encoder given runs "
                             f"{given.spec.precision}: load it with Encoder.load(..., precision={self._precision!r})")
        if given is not None:
            if self.spec is not None:
                check_same_encoder(self.spec, given.spec, self.path)
            self._encoder = given
        elif self._model is not None and old is not None:
            _ = self.encoder  # a --model that does not match is refused before any work
        self.generation = old.generation + 1 if old else 1
        if old is not None and old.legacy:
            self._migrate_legacy(old)
        elif old is not None:
            self.store = DocStore.open_writer(self.path / old.sqlite, create=False)
        else:
            if (self.path / DOCS_DB).exists():
                raise SemsearchError(f"{self.path / DOCS_DB}: exists but no index names it; refusing to touch it")
            add_pending(self.path, [DOCS_DB, DOCS_DB + "-wal", DOCS_DB + "-shm"])
            self.store = DocStore.open_writer(self.path / DOCS_DB, create=True)
        self.store.begin()
        if old is not None:
            self.store.roll_back_to(old.generation)
        self._first_rowid = self._next_rowid = self.store.next_rowid()
        self._dead = old.dead if old else 0
        self._documents = old.documents if old else 0  # kept by hand: counting a large table costs a scan
        self._vectors = old.live_vectors if old else 0  # live vectors (passages), kept by hand likewise
        self._dirty = False
        dimension = self.spec.dimension if self.spec else self.encoder.dimension
        if old is None:
            self._kind = choose_type(self._index_type, self._expected_count)
            self.vectors = VectorStore.create(dimension, self._kind)
        else:
            self._kind = stored_type(old.faiss)
            self.vectors = VectorStore.create(dimension, "flat")  # typed at commit when large enough

    def _migrate_legacy(self, old: Manifest) -> None:
        """Formats 1/2 -> 3: the documents move into docs.db (new columns, lexical index); the FAISS file stays as
        the first segment. Verified first; the old database is removed once the new manifest is committed."""
        segment = old.segments[0]
        load_segment(self.path, old, segment, mmap=False, verify=True)
        source = self.path / old.sqlite
        expected = old.faiss.get("legacy_sqlite_sha256")
        if not source.is_file():
            raise IndexDamaged(f"{source}: missing; the index is damaged (run: semsearch check --repair)")
        if expected and sha256(source) != expected:
            raise IndexDamaged(f"{source}: checksum differs from the manifest's; run: semsearch check --repair")
        if (self.path / DOCS_DB).exists():
            raise SemsearchError(f"{self.path / DOCS_DB}: exists but no index names it; refusing to touch it")
        add_pending(self.path, [DOCS_DB, DOCS_DB + "-wal", DOCS_DB + "-shm"])
        self.store = DocStore.open_writer(self.path / DOCS_DB, create=True)
        db = self.store
        db.execute("attach database ? as old", [f"file:{source}?mode=ro"])
        db.begin()
        db.execute("insert into docs(rowid, id, text, meta, hash, source, line, added) "
                   "select rowid, id, text, meta, hash, source, line, 0 from old.docs order by rowid")
        db.commit()
        db.execute("detach database old")
        old.sqlite = DOCS_DB  # from here on this writer builds on the migrated copy
        old.legacy = False
        old.lexical = True
        old.faiss.pop("legacy_sqlite_sha256", None)
        self._legacy_db = source.name
        add_pending(self.path, [source.name])  # removed once the new manifest no longer names it

    def _abort(self) -> None:
        if self.store is not None:
            self.store.rollback()
            self.store.close()
            self.store = None
        try:
            clear_pending(self.path, keep=self.old.files() if self.old else set())
        except OSError:
            pass

    # -------------------------------------------------------------- committing
    def commit(self) -> Manifest:
        """Save the new segment, commit SQLite, then make the new manifest current (the commit point).

        When nothing changed, no generation is written and the current manifest is returned.
        """
        if not self._dirty and self.old is not None and not getattr(self, "_legacy_db", None):
            self._abort()
            return self.old
        store = self.store
        count = self._documents
        live_expected = self._vectors
        fresh = self.old is None or self._replacing
        segments = [] if fresh else list(self.old.segments)
        faiss_meta = dict(self.old.faiss) if self.old else {}
        if self._builder is not None:
            built = self._builder.finish()
            if isinstance(built, Segment):
                segments.append(built)
                if fresh:
                    faiss_meta = {**self._builder.template.manifest(), "dead": 0,
                                  "trained": self._save_template(self._builder.template)}
            else:  # too few vectors for a segment of the index's type: a flat one, as any small write
                self.vectors.add(*built)
            self._builder = None
        if len(self.vectors) or fresh and not segments:
            segment, faiss_meta = self._save_segment(faiss_meta, fresh)
            segments.append(segment)
        if self.old is not None and self._replacing:  # removed once the new manifest no longer names them
            add_pending(self.path, [name for s in self.old.segments for name in s.files()]
                        + ([self.old.trained["file"]] if self.old.trained else []))
        manifest = self._manifest(segments, faiss_meta, count)
        manifest.vectors = live_expected
        live_vectors = manifest.vector_total - manifest.dead
        if live_vectors != live_expected:
            raise SemsearchError(f"{self.path}: {count} documents with {live_expected} passages but {live_vectors} "
                                 "live vectors; nothing was committed")
        store.record_manifest(manifest.generation, manifest.to_dict())
        store.set_state("next_rowid", self._next_rowid)
        store.commit()
        manifest.save(self.path)  # the commit point
        self.old = manifest
        try:
            purge_rows(store, getattr(self, "_purge_after", []), manifest.generation, vacuum=True)
        finally:
            store.close()
            self.store = None
        clear_pending(self.path, keep=manifest.files())
        if self._auto_compact and compaction_due(manifest):
            self.compacted = compact(self.path, lock=False, manifest=manifest)
            return Manifest.load(self.path)
        return manifest

    def _manifest(self, segments: list[Segment], faiss_meta: dict, count: int) -> Manifest:
        faiss_meta["dead"] = self._dead
        if self.old is not None:
            return self.old.next(segments=segments, faiss=faiss_meta, documents=count, sqlite=DOCS_DB)
        spec = self._encoder.spec if self._encoder is not None else self.spec
        return Manifest(format=3, generation=self.generation, encoder=spec, faiss=faiss_meta, segments=segments,
                        sqlite=DOCS_DB, documents=count, lexical=True, versions=library_versions())

    def _save_segment(self, faiss_meta: dict, fresh: bool) -> tuple[Segment, dict]:
        """Write this generation's vectors as a segment (typed when it is the first or a large one)."""
        name = segment_name(self.generation)
        store, kind = self.vectors, "flat"
        if fresh:
            kind = self._kind
        elif self._kind != "flat" and len(self.vectors) >= TYPED_SEGMENT_MIN:
            store, kind = new_segment_store(self.path, self.old, len(self.vectors))
            store.add(*self.vectors.vectors())
        add_pending(self.path, [name])
        save_segment(store, self.path / name)
        if fresh:
            faiss_meta = {**store.manifest(), "dead": 0, "trained": None}
            if store._ivf is not None:  # later IVF segments are clones of the trained, empty index
                faiss_meta["trained"] = self._save_template(store)
        elif kind != "flat" and store._hnsw is not None:
            faiss_meta["search"] = {**faiss_meta.get("search", {}), **store.manifest()["search"]}
        return Segment(name, sha256(self.path / name), len(store), kind, self.generation), faiss_meta

    def _save_template(self, store: VectorStore) -> dict:
        import faiss

        name = trained_name(self.generation)
        template = faiss.clone_index(store.index)
        template.reset()
        add_pending(self.path, [name])
        faiss.write_index(template, str(self.path / name))
        fsync_file(self.path / name)
        return {"file": name, "sha256": sha256(self.path / name)}

    # -------------------------------------------------------------- adding
    def add(self, records: Iterable[Record], *, vectors: np.ndarray | None = None,
            passages: Sequence[Sequence[tuple[int, int]] | None] | None = None, chunk_size: int = 2048,
            batch_size: int = 32, source: str | None = None, progress=None) -> AddReport:
        """Embed and store records: new ids are added, changed texts re-embedded, unchanged ones skipped.

        ``vectors`` (one row per record, in order) are used instead of embedding: precomputed embeddings that
        the caller has checked and normalised (see :mod:`semsearch.embeddings_file`). With ``passages`` (per
        record: the character spans of its passages, or None for one passage, the whole text), ``vectors`` has
        one row per passage instead (the Ray engine embeds passages on its workers).
        """
        if passages is not None and vectors is None:
            raise SemsearchError("add: passages come with their vectors")
        report = AddReport()
        started = time.perf_counter()
        seen: set[str] = set()
        offset = 0
        row = 0  # the next row of ``vectors``
        for chunk in iter_batches(iter(records), chunk_size):
            report.read += len(chunk)
            given = None
            if vectors is not None:
                spans = list(passages[offset:offset + len(chunk)]) if passages is not None else [None] * len(chunk)
                if len(spans) != len(chunk):
                    raise InputError("<embeddings>", f"passages of {len(passages)} records for more records than that")
                given = Given.of(vectors[row:], spans, cut=passages is not None)
                if len(given.vectors) != given.counts.sum():
                    raise InputError("<embeddings>", f"{len(vectors)} vectors for more records than that")
                row += int(given.counts.sum())
            offset += len(chunk)
            latest: dict[str, int] = {}
            for position, record in enumerate(chunk):
                if record.id in seen or record.id in latest:
                    report.repeated += 1
                latest[record.id] = position
            seen.update(latest)
            positions = list(latest.values())
            self._add_chunk([chunk[p] for p in positions], None if given is None else given.select(positions),
                            report, batch_size, source)
            if progress is not None:
                progress(len(chunk))
        if passages is not None and offset != len(passages):
            raise InputError("<embeddings>", f"passages of {len(passages)} records for {offset} records")
        if vectors is not None and row != len(vectors):
            raise InputError("<embeddings>", f"{len(vectors)} vectors for {offset} records"
                             + (f" of {row} passages" if passages is not None else ""))
        report.seconds = time.perf_counter() - started
        return report

    def _count_truncated(self, texts: list[str]) -> int:
        # A word-piece token covers at least one character, so only texts longer than the limit in
        # characters can pass it in tokens; only those are tokenised again, in full.
        limit = self.encoder.spec.max_length
        long = [t for t in texts if len(t) > limit - 2]
        if not long:
            return 0
        counter = getattr(self.encoder, "token_counts", None)
        if counter is not None:
            return sum(n > limit for n in counter(long))
        tokenizer = getattr(self.encoder, "tokenizer", None)
        if tokenizer is None:
            return 0
        lengths = tokenizer(long, truncation=False, verbose=False)["input_ids"]
        return sum(len(ids) > limit for ids in lengths)

    def _retire(self, rowids: Sequence[int]) -> None:
        """Take documents out of this generation: rows added by it go (with their vectors), older ones get a
        tombstone (their vectors, one per passage, stay in their segments until compaction)."""
        mine = [r for r in rowids if r >= self._first_rowid]
        older = [r for r in rowids if r < self._first_rowid]
        self._documents -= len(rowids)
        if mine:
            ids = self.store.vector_ids_for(mine)
            self._sink.remove(ids)
            self._vectors -= len(ids)
            self.store.execute(f"delete from docs where rowid in ({','.join('?' * len(mine))})", mine)
        if older:
            ids = self.store.vector_ids_for(older)
            self._dead += len(ids)
            self._vectors -= len(ids)
            self.store.mark_deleted(older, self.generation)

    @property
    def _sink(self):
        """Where this write's vectors go: the on-disk builder when there is one, else the in-memory segment."""
        return self._builder if self._builder is not None else self.vectors

    @property
    def chunker(self):
        """The chunker of this write (None: texts are truncated), made on first use."""
        if self._chunker is False:
            from ..chunking import chunker_for

            self._chunker = chunker_for(self.encoder.spec, self._chunking)
        return self._chunker

    def _passages(self, todo: list[tuple[int, Record]], report: AddReport) -> tuple[np.ndarray, list[str], list]:
        """Vector ids, texts to embed and ``passages`` column values for new rows: one passage per text that fits,
        several for a longer one (or, without chunking, its beginning: counted as truncated)."""
        texts = [r.text for _, r in todo]
        # a word piece covers at least one character: only texts longer than the limit in characters can need it
        limit = self.encoder.spec.max_length - 2
        chunker = self.chunker if any(len(t) > limit for t in texts) else None
        if chunker is None:
            report.truncated += self._count_truncated(texts)
            report.passages += len(texts)
            return np.array([rowid for rowid, _ in todo], dtype=np.int64), texts, [None] * len(todo)
        from ..chunking import passage_texts, passages_of

        all_spans = [passages_of(chunker, record.text, limit + 2) for _, record in todo]
        ids, columns = self._passage_rows(todo, all_spans, report)
        pieces = [piece for (_, record), spans in zip(todo, all_spans) for piece in passage_texts(record.text, spans)]
        return ids, pieces, columns

    @staticmethod
    def _passage_rows(todo: list[tuple[int, Record]], all_spans: list, report: AddReport) -> tuple[np.ndarray, list]:
        """Vector ids and ``passages`` column values of new rows cut into ``all_spans`` (per record; None or one
        span: one passage, the whole text)."""
        ids, columns = [], []
        for (rowid, record), spans in zip(todo, all_spans):
            if not spans or len(spans) == 1:
                ids.append(rowid)
                columns.append(None)
                continue
            if len(spans) > P.MAX_PASSAGES:
                raise InputError(record.id, f"{len(spans):,} passages; at most {P.MAX_PASSAGES:,} per document")
            report.chunked += 1
            ids.extend(P.vector_id(rowid, number) for number in range(len(spans)))
            columns.append(P.encode_offsets(spans))
        report.passages += len(ids)
        return np.array(ids, dtype=np.int64), columns

    def _add_chunk(self, records: list[Record], given: "Given | None", report: AddReport, batch_size: int,
                   source: str | None) -> None:
        stored = self.store.existing([r.id for r in records])
        todo: list[tuple[int, Record]] = []
        rows: list[int] = []
        replaced: list[int] = []
        for position, record in enumerate(records):
            if record.id in stored:
                rowid, digest = stored[record.id]
                if digest == record.hash:
                    report.unchanged += 1
                    continue
                replaced.append(rowid)
                report.updated += 1
            else:
                report.added += 1
            todo.append((self._next_rowid, record))
            rows.append(position)
            self._next_rowid += 1
            self._documents += 1
        if not todo:
            return
        if self._next_rowid > P.MAX_ROWID:
            raise SemsearchError(f"{self.path}: row ids are exhausted (2**40); rebuild the index")
        self._dirty = True
        if given is None:
            ids, texts, columns = self._passages(todo, report)
            embedded = self.encoder.encode(texts, batch_size=batch_size, show_progress=False)
        else:  # precomputed: one vector per passage given (one per record, its text as it is, without spans)
            given = given.select(rows)
            if given.cut and self.chunker is None:  # embedded by this index's model, whole: count as a local write
                report.truncated += self._count_truncated([record.text for _, record in todo])
            ids, columns = self._passage_rows(todo, given.spans, report)
            embedded = np.ascontiguousarray(given.vectors, dtype=np.float32)
        self._retire(replaced)
        self._sink.add(ids, embedded)
        self._vectors += len(ids)
        self.store.insert(
            (rowid, r.id, r.text, json.dumps(r.meta, ensure_ascii=False), r.hash, source, r.line, self.generation,
             column) for (rowid, r), column in zip(todo, columns))

    def delete(self, ids: Sequence[str] = (), filters: Sequence[str] | None = None) -> int:
        """Remove documents by id and/or by metadata filter; returns how many were removed.

        Unknown ids are ignored. Their vectors become tombstones until compaction reclaims the space.
        """
        rowids = set(self.store.rowids_for_ids(list(ids)).values()) if ids else set()
        if filters:
            rowids.update(self.store.rowids_where(filters))
        if rowids:
            self._retire(sorted(rowids))
            self._dirty = True
        return len(rowids)

    def build_on_disk(self, adder, *, rows_per_part: int = 65536, put=None) -> bool:
        """Write this write's vectors as one on-disk IVF segment (:mod:`semsearch.index.ondisk`): trained on a
        sample (a new index) or with the index's trained template, added in parts by ``adder``, merged by FAISS at
        commit. True when the index's type allows it (an ``IndexIVF`` at the top); otherwise nothing changes.
        ``put`` shares the serialised template with the adder (Ray: ``ray.put``). Call it before adding."""
        from .ondisk import OnDiskBuilder, mergeable, mergeable_type

        if self._dirty:
            raise SemsearchError("build_on_disk: call it before adding anything")
        if self._replacing or self._rebuild:
            return False
        dimension = self.spec.dimension if self.spec else self.encoder.dimension
        template = None
        if self.old is None:
            if not mergeable_type(self._kind, dimension):
                return False
        else:
            if not self.old.trained:
                return False
            template, _ = new_segment_store(self.path, self.old, TYPED_SEGMENT_MIN)
            if not mergeable(template.index):
                return False
        self._builder = OnDiskBuilder(self.path, self.generation, dimension, self._kind, adder, template=template,
                                      expected=self._expected_count, rows_per_part=rows_per_part, put=put)
        return True

    def ids_where(self, filters: Sequence) -> list[str]:
        """Ids of the documents (as this write left them so far) whose metadata meets every filter."""
        return self.store.ids_where(filters)

    def rebuild_vectors(self, batch_size: int = 32) -> None:
        """Re-embed every stored text into one fresh segment (for a writer opened with ``rebuild=True``)."""
        if not self._rebuild:
            raise SemsearchError("rebuild_vectors needs IndexWriter(..., rebuild=True)")
        if self._builder is not None:
            raise SemsearchError("rebuild_vectors: this write builds an on-disk segment (build_on_disk)")
        self.vectors = VectorStore.create(self.spec.dimension, self._kind, build=_build(self.old))
        for ids, texts in self.store.iter_passages():
            self.vectors.add(ids, self.encoder.encode(texts, batch_size=batch_size))
        self._purge_after = self.store.dead_rowids()  # once the new manifest (without their vectors) is current
        self._dead = 0
        self._dirty = True
        self._replace_all = True

    @property
    def _replacing(self) -> bool:
        return getattr(self, "_replace_all", False)


@dataclass
class Given:
    """Vectors embedded elsewhere for a run of records: one row per passage, records in order; ``spans`` per
    record (None: one passage, the whole text)."""

    vectors: np.ndarray
    spans: list
    counts: np.ndarray  # passages per record
    cut: bool = False  # embedded by the index's own model, cut as this writer would (the Ray engine)

    @classmethod
    def of(cls, vectors: np.ndarray, spans: list, *, cut: bool = False) -> "Given":
        """The records' share of ``vectors`` (which may run on past them)."""
        counts = np.array([len(s) if s else 1 for s in spans], dtype=np.int64)
        return cls(vectors[:int(counts.sum())], spans, counts, cut)

    def select(self, positions: Sequence[int]) -> "Given":
        """The records at ``positions``, in that order."""
        starts = np.cumsum(self.counts) - self.counts
        rows = [np.arange(starts[p], starts[p] + self.counts[p]) for p in positions]
        rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        return Given(self.vectors[rows], [self.spans[p] for p in positions], self.counts[list(positions)], self.cut)


def _build(manifest: Manifest | None) -> dict:
    if manifest is None:
        return {}
    return {k: v for k, v in manifest.faiss.get("build", {}).items() if k == "efConstruction"}


# ------------------------------------------------------------------ compaction
def compact(name_or_path: str | os.PathLike | None = None, *, lock: bool = True, lock_timeout: float = 60.0,
            full: bool = True, manifest: Manifest | None = None, encoder: "Encoder | None" = None) -> CompactReport:
    """Merge segments and purge tombstones, as one new generation (crash-safe like any write).

    ``full`` merges every segment into one of the index's type; otherwise only the small ones (the automatic
    policy after a write, unless tombstones pass :data:`MAX_DEAD_FRACTION`). Segments are verified against their
    checksums before anything is built on them.
    """
    path = index_path(name_or_path)
    if not lock:  # called by a writer that holds the lock: the automatic policy
        return _compact(path, full=_needs_full(manifest) if manifest is not None else full, encoder=encoder)
    if Manifest.load(path).legacy:  # formats 1/2: migrate first (a write of nothing)
        with IndexWriter(path, create=False, auto_compact=False, lock_timeout=lock_timeout) as writer:
            writer._dirty = True
    with WriterLock(path, lock_timeout):
        return _compact(path, full=full, encoder=encoder)


def purge_rows(store: DocStore, rowids: Sequence[int], generation: int, *, vacuum: bool) -> None:
    """After a manifest that no longer holds their vectors is current: remove tombstoned rows for good.

    ``purged`` tells readers that opened an older manifest to reopen (their segments still hold those vectors).
    A crash before this leaves harmless tombstones, purged by the next full compaction.
    """
    if not rowids:
        return
    store.begin()
    store.purge(rowids)
    store.set_state("purged", generation)
    if vacuum:  # merge the lexical index's segments, dropping the purged rows' postings
        store.execute("insert into docs_fts(docs_fts) values ('optimize')")
    store.commit()
    if vacuum:  # rows were purged all over the file: VACUUM gives their space back (open readers keep theirs)
        try:
            store.conn.execute("vacuum")
        except sqlite3.Error:
            pass  # the space stays allocated and is reused by later writes


def _needs_full(manifest: Manifest) -> bool:
    return bool(manifest.vector_total and manifest.dead > MAX_DEAD_FRACTION * manifest.vector_total
                and not any(s.lists for s in manifest.segments))


def _compact(path: Path, *, full: bool, encoder: "Encoder | None") -> CompactReport:
    started = time.perf_counter()
    old = Manifest.load(path)
    clear_pending(path, keep=old.files())
    if old.legacy:
        raise IndexFormatError(f"{path}: a format {old.format} index; write to it once to migrate it first")
    report = CompactReport(segments_before=len(old.segments))
    segments = sorted((s for s in old.segments if full or not s.lists), key=lambda s: s.vectors)
    if full:
        merge = segments
    else:  # the smallest segments (never an on-disk one), until the count is back under half the bound
        merge = segments[:max(2, len(old.segments) - MAX_SEGMENTS // 2)]
    store = DocStore.open_writer(path / old.sqlite, create=False)
    if len(merge) < 2 and old.dead == 0:
        store.close()
        report.segments_after = len(old.segments)
        return report
    try:
        store.begin()
        store.roll_back_to(old.generation)
        live = store.live_vector_ids()
        ids_parts, vector_parts, purge = [], [], []
        lossy = False
        for segment in merge:
            loaded = load_segment(path, old, segment, mmap=False, verify=True)
            try:
                ids, vectors = loaded.vectors()
            except (RuntimeError, IndexTypeError):
                ids, vectors, lossy = loaded.stored_ids(), None, True
            keep = np.isin(ids, live)
            purge.extend(ids[~keep].tolist())
            ids_parts.append(ids[keep])
            vector_parts.append(None if vectors is None else vectors[keep])
            lossy = lossy or not loaded.lossless
        ids = np.concatenate(ids_parts) if ids_parts else np.zeros(0, np.int64)
        order = np.argsort(ids, kind="stable")
        ids = ids[order]
        generation = old.generation + 1
        kind = stored_type(old.faiss)
        if kind == "flat" or len(ids) < TYPED_SEGMENT_MIN and len(merge) < len(old.segments):
            target, seg_kind = VectorStore.create(old.encoder.dimension, "flat"), "flat"
        else:
            target, seg_kind = new_segment_store(path, old, max(len(ids), TYPED_SEGMENT_MIN))
        if lossy and seg_kind != "flat" or any(v is None for v in vector_parts):
            from ..encoder import Encoder

            encoder = encoder or Encoder.from_spec(old.encoder)
            for vector_ids, texts in store.iter_passages(ids):
                target.add(vector_ids, encoder.encode(texts, show_progress=False))
        elif len(ids):
            vectors = np.concatenate([v for v in vector_parts if v is not None])[order]
            target.add(ids, vectors)
        name = segment_name(generation)
        add_pending(path, [name])
        save_segment(target, path / name)
        merged = Segment(name, sha256(path / name), len(target), seg_kind, generation)
        kept = [s for s in old.segments if s not in merge]
        dropped_vectors = len(purge)  # a deleted document's passages are all in the segment its write made
        purge = sorted(set(P.rowids_of(np.asarray(purge, dtype=np.int64)).tolist()))
        if full:  # no segment keeps any deleted document's vector now
            purge = sorted(set(purge) | set(store.dead_rowids()))
        faiss_meta = dict(old.faiss)
        faiss_meta["dead"] = max(0, old.dead - dropped_vectors)
        if seg_kind != "flat" and target._hnsw is not None:
            faiss_meta["search"] = {**faiss_meta.get("search", {}), **target.manifest()["search"]}
        manifest = old.next(segments=kept + [merged], faiss=faiss_meta, documents=store.count(),
                            vectors=store.vector_count())
        if manifest.vector_total - manifest.dead != manifest.vectors:
            raise SemsearchError(f"{path}: compaction would leave {manifest.vector_total - manifest.dead} vectors for "
                                 f"{manifest.documents} documents with {manifest.vectors} passages; nothing was "
                                 "committed")
        store.record_manifest(generation, manifest.to_dict())
        store.commit()
        add_pending(path, [name for s in merge for name in s.files()])  # not named once the new manifest is current
        manifest.save(path)
    except BaseException:
        store.rollback()
        store.close()
        clear_pending(path, keep=old.files())
        raise
    try:
        purge_rows(store, purge, generation, vacuum=full)
    finally:
        store.close()
    clear_pending(path, keep=manifest.files())
    report.segments_after = len(manifest.segments)
    report.purged = len(purge)
    report.vectors = int(len(ids))
    report.seconds = time.perf_counter() - started
    return report
