"""The index folder: FAISS vectors + SQLite documents + a manifest, kept in step by a generation number.

Layout of ``indexes/NAME/``::

    manifest.json          format version, generation, encoder spec, file names, checksums, counts, versions
    vectors.<gen>.faiss    FAISS inner-product index, ids = SQLite row ids
    docs.<gen>.db          SQLite documents table
    .lock                  held by the one writer

A writer builds generation ``g+1`` beside ``g`` (a copy of the database, a new FAISS file), flushes both
to disk and then atomically replaces ``manifest.json``. Until that rename, readers and a crash see
generation ``g`` untouched; files of unfinished generations are removed by the next writer.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from .corpus import Record, iter_batches
from .encoder import EncoderSpec, check_precision
from .errors import IndexFormatError, IndexNotFoundError, ModelError, SemsearchError
from .store import DocStore
from .vectors import IndexTypeError, VectorStore, choose_type, normalise_type, stored_type

if TYPE_CHECKING:
    from .encoder import Encoder

FORMAT_VERSION = 2  # the newest format this version reads and writes
# Format 2 = format 1 + the encoder's "precision". Indexes in fp32 are still written as format 1, so that
# earlier semsearch versions keep reading them; a bf16 index is format 2, which those versions refuse
# instead of querying it in fp32 and appending fp32 vectors to it.
MANIFEST = "manifest.json"
DEFAULT_INDEX = "default"
DEFAULT_ROOT = "indexes"
QUERY_CACHE_SIZE = 1024  # query embeddings an open Index keeps (LRU by text)


def index_path(name_or_path: str | os.PathLike | None = None, root: str | os.PathLike | None = None) -> Path:
    """Where an index lives: a plain name goes under ``indexes/`` (or ``$SEMSEARCH_INDEXES``), a path as is."""
    name = str(name_or_path or DEFAULT_INDEX)
    if os.sep in name or name.startswith("."):
        return Path(name)
    return Path(root or os.environ.get("SEMSEARCH_INDEXES", DEFAULT_ROOT)) / name


@dataclass(frozen=True)
class Hit:
    """One search result."""

    rank: int
    score: float
    id: str
    text: str
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"rank": self.rank, "score": round(self.score, 6), "id": self.id, "text": self.text, "meta": self.meta}


@dataclass
class AddReport:
    """What one ``add`` did."""

    read: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    repeated: int = 0  # ids seen more than once in the input (the last one wins)
    truncated: int = 0  # texts longer than the model's max length: embedded from their beginning
    skipped: int = 0  # invalid records passed over (skip_invalid)
    skipped_examples: list[str] = field(default_factory=list)  # the first few of their messages
    seconds: float = 0.0

    @property
    def embedded(self) -> int:
        return self.added + self.updated


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _versions() -> dict:
    import sqlite3

    from .versions import package_versions

    return {"sqlite": sqlite3.sqlite_version,
            **package_versions(("semsearch", "faiss-cpu", "torch", "transformers", "sqlite-utils", "numpy"))}


def read_manifest(path: Path) -> dict:
    """The manifest of the index at ``path``; refuses missing indexes and newer formats."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        if path.is_dir() and any(path.iterdir()):
            raise IndexNotFoundError(f"{path}: no {MANIFEST}: not a semsearch index (or its first write never finished)")
        raise IndexNotFoundError(f"{path}: no such index; build it with: semsearch index CORPUS --index {path.name}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexFormatError(f"{manifest_path}: damaged manifest ({exc})") from None
    version = manifest.get("format")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise IndexFormatError(
            f"{manifest_path}: index format {version} is newer than this semsearch reads ({FORMAT_VERSION}); "
            "upgrade: pip install -U semsearch")
    return manifest


class Index:
    """A read-only view of one generation of an index folder.

    >>> index = Index.open("indexes/default")
    >>> index.search("parse a date", k=5)[0][0].text
    """

    def __init__(self, path: Path, manifest: dict, store: DocStore, vectors: VectorStore, *,
                 query_cache: int = QUERY_CACHE_SIZE) -> None:
        self.path = path
        self.manifest = manifest
        self.store = store
        self.vectors = vectors
        self.spec = EncoderSpec.from_dict(manifest["encoder"])
        self._encoder: Encoder | None = None
        self._encoder_source: str | None = None  # the `model` argument that loaded it, if any
        self.query_cache_size = query_cache
        self._query_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()

    @classmethod
    def open(cls, name_or_path: str | os.PathLike | None = None, *, query_cache: int = QUERY_CACHE_SIZE) -> "Index":
        """Open the current generation. ``query_cache``: how many query embeddings to keep (LRU by text; 0: none)."""
        path = index_path(name_or_path)
        for attempt in range(3):
            manifest = read_manifest(path)
            db_file = path / manifest["sqlite"]["file"]
            faiss_file = path / manifest["faiss"]["file"]
            if db_file.is_file() and faiss_file.is_file():
                break
            time.sleep(0.05)  # a writer swapped generations between our reads; read the new manifest
        else:
            missing = db_file if not db_file.is_file() else faiss_file
            raise IndexFormatError(f"{missing}: missing; the index is damaged (run: semsearch check --repair)")
        try:
            vectors = VectorStore.load(faiss_file, manifest["faiss"], mmap=True)
        except RuntimeError as exc:
            raise IndexFormatError(f"{faiss_file}: unreadable FAISS file ({str(exc).splitlines()[0][:200]})") from None
        return cls(path, manifest, DocStore(db_file, readonly=True), vectors, query_cache=query_cache)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self.vectors)

    def encoder(self, model: str | os.PathLike | None = None, device: str | None = None) -> "Encoder":
        """The encoder that built this index. A ``model`` given explicitly must produce the same vectors."""
        from .encoder import Encoder

        if model is not None and not (self._encoder is not None and self._encoder_source == str(model)):
            candidate = Encoder.load(model, pooling=self.spec.pooling, max_length=self.spec.max_length, device=device,
                                     backend="auto", precision=self.spec.precision)
            check_same_encoder(self.spec, candidate.spec, self.path)
            self.use_encoder(candidate)
            self._encoder_source = str(model)
        if self._encoder is None:
            self._encoder = Encoder.from_spec(self.spec, device=device)
        return self._encoder

    def use_encoder(self, encoder: "Encoder") -> None:
        """Query with an encoder already in memory (checked against the manifest)."""
        check_same_encoder(self.spec, encoder.spec, self.path)
        with self._cache_lock:
            self._encoder = encoder
            self._encoder_source = None
            self._query_cache.clear()

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Query vectors, from the LRU cache where the same text was embedded before (the rest in one batch)."""
        texts = list(texts)
        if self.query_cache_size <= 0:
            return self.encoder().encode(texts)
        cache, found = self._query_cache, {}
        with self._cache_lock:  # an Index may be shared by threads; the encoding itself runs outside the lock
            for text in texts:
                if text in cache:
                    cache.move_to_end(text)
                    found[text] = cache[text]
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        if missing:
            fresh = {}
            for text, vector in zip(missing, self.encoder().encode(missing)):
                fresh[text] = vector.copy()  # a row of its own, not a view pinning the whole batch
                fresh[text].flags.writeable = False
            found.update(fresh)
            with self._cache_lock:
                cache.update(fresh)
                while len(cache) > self.query_cache_size:
                    cache.popitem(last=False)
        if not texts:
            return np.zeros((0, self.spec.dimension), np.float32)
        return np.stack([found[t] for t in texts])

    def search(self, queries: str | Sequence[str], k: int = 10, threshold: float | None = None,
               filters: Sequence[str] | None = None, *, nprobe: int | None = None,
               ef_search: int | None = None) -> list[list[Hit]]:
        """Nearest documents for each query text, best first, with cosine scores.

        ``filters`` (``["lang=en", "year>=2020"]``, see :mod:`semsearch.filters`) restrict the search to the
        matching documents before the vector search, so k results come back whenever k documents match.
        ``nprobe`` (IVF indexes) and ``ef_search`` (HNSW) override the search defaults in the manifest.
        """
        texts = [queries] if isinstance(queries, str) else list(queries)
        vectors = self.embed_queries(texts)
        return self.search_vectors(vectors, k=k, threshold=threshold, filters=filters, nprobe=nprobe,
                                   ef_search=ef_search)

    def search_vectors(self, vectors: np.ndarray, k: int = 10, threshold: float | None = None,
                       filters: Sequence[str] | None = None, *, nprobe: int | None = None,
                       ef_search: int | None = None) -> list[list[Hit]]:
        """Like :meth:`search` for query vectors already embedded (normalised, float32)."""
        if k < 1:
            raise SemsearchError(f"k must be at least 1, got {k}")
        vectors = np.atleast_2d(vectors)
        allowed = None
        if filters:
            allowed = np.asarray(self.store.rowids_where(filters), dtype=np.int64)
            if len(allowed) == 0:
                return [[] for _ in vectors]
        if len(self) == 0:
            return [[] for _ in vectors]
        scores, ids = self.vectors.search(vectors, k, allowed=allowed, nprobe=nprobe, ef_search=ef_search)
        docs = self.store.fetch(np.unique(ids[ids >= 0]).tolist())
        results = []
        for row_scores, row_ids in zip(scores, ids):
            hits = []
            for score, rowid in zip(row_scores.tolist(), row_ids.tolist()):
                if rowid < 0 or (threshold is not None and score < threshold):
                    continue
                doc = docs[rowid]
                hits.append(Hit(len(hits) + 1, float(score), doc.id, doc.text, doc.meta))
            results.append(hits)
        return results


def check_same_encoder(expected: EncoderSpec, given: EncoderSpec, where: Path) -> None:
    differences = expected.differences(given)
    if differences:
        raise ModelError(
            f"{where}: built with model {expected.model!r} ({expected.pooling.value} pooling, {expected.dimension}-d, "
            f"{expected.precision}); {given.model!r} differs in {', '.join(differences)}: "
            + (f"load it with precision={expected.precision!r}, or " if differences == ["precision"] else "")
            + "drop --model to use the index's own, or build a new index with this model")


class _Lock:
    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self.fh = None

    def __enter__(self) -> "_Lock":
        self.fh = open(self.path, "a+")
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() >= deadline:
                    self.fh.close()
                    raise SemsearchError(
                        f"{self.path.parent}: another process is writing this index (waited {self.timeout:.0f} s); "
                        "try again when it has finished") from None
                time.sleep(0.1)

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()


class IndexWriter:
    """Adds documents to an index as one new generation; nothing is visible until :meth:`commit`.

    >>> with IndexWriter("indexes/docs", encoder) as writer:
    ...     report = writer.add(read_records("corpus.jsonl"))
    """

    def __init__(self, name_or_path: str | os.PathLike | None = None, encoder: "Encoder | None" = None, *,
                 model: str | None = None, index_type: str = "auto", expected_count: int | None = None,
                 lock_timeout: float = 60.0, rebuild: bool = False, create: bool = True,
                 precision: str | None = None) -> None:
        """``index_type`` (new index only, see :mod:`semsearch.vectors`): ``auto`` is exact flat unless
        ``expected_count`` says the corpus is large. ``precision`` (``fp32``, ``bf16``; new index: fp32 when
        not given) must match an existing index's."""
        self.path = index_path(name_or_path)
        self._rebuild = rebuild
        self._create = create
        self._given_encoder = encoder
        self._model = model
        self._precision = check_precision(precision) if precision is not None else None
        self._index_type = normalise_type(index_type)
        self._expected_count = expected_count
        self._lock = _Lock(self.path / ".lock", lock_timeout)
        self._encoder: Encoder | None = None

    # -------------------------------------------------------------- lifecycle
    def __enter__(self) -> "IndexWriter":
        if not self._create:
            read_manifest(self.path)  # refuses a missing index before anything is created
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock.__enter__()
        try:
            self._begin()
        except BaseException:
            self._lock.__exit__()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.commit()
            else:
                self._abort()
        finally:
            self._lock.__exit__()

    @property
    def encoder(self) -> "Encoder":
        """The index's encoder, loaded on first use (deleting needs none)."""
        if self._encoder is None:
            from .encoder import Encoder

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
        self.old = read_manifest(self.path) if (self.path / MANIFEST).exists() else None
        if self.old is not None and self._index_type not in ("auto", stored_type(self.old["faiss"]),
                                                             self.old["faiss"]["factory"]):
            raise IndexTypeError(
                f"{self.path}: is a {stored_type(self.old['faiss'])} index ({self.old['faiss']['factory']}) and keeps "
                f"that type; drop --index-type {self._index_type}, or build a new index with it")
        self._clean_orphans()
        self.spec = EncoderSpec.from_dict(self.old["encoder"]) if self.old else None
        if self.spec is not None and self._precision not in (None, self.spec.precision):
            raise ModelError(f"{self.path}: was built with {self.spec.precision} precision and keeps it; "
                             f"drop --precision {self._precision}, or build a new index with it")
        given = self._given_encoder
        if given is not None and self._precision not in (None, given.spec.precision):
            raise ModelError(f"precision {self._precision!r} asked for, but the encoder given runs "
                             f"{given.spec.precision}: load it with Encoder.load(..., precision={self._precision!r})")
        if self._given_encoder is not None:
            if self.spec is not None:
                check_same_encoder(self.spec, self._given_encoder.spec, self.path)
            self._encoder = self._given_encoder
        elif self._model is not None and self.old is not None:
            _ = self.encoder  # a --model that does not match is refused before any work
        self.generation = self.old["generation"] + 1 if self.old else 1
        self.db_file = self.path / f"docs.{self.generation}.db"
        self.faiss_file = self.path / f"vectors.{self.generation}.faiss"
        if self.old is None or self._rebuild:
            dimension = self.spec.dimension if self.spec else self.encoder.dimension
            if self.old is None:
                self.vectors = VectorStore.create(dimension, choose_type(self._index_type, self._expected_count))
            else:
                self.vectors = VectorStore.create(dimension, stored_type(self.old["faiss"]),
                                                  build=self.old["faiss"].get("build"))
        else:
            try:
                self.vectors = VectorStore.load(self.path / self.old["faiss"]["file"], self.old["faiss"])
            except RuntimeError:
                raise IndexFormatError(f"{self.path / self.old['faiss']['file']}: unreadable FAISS file; "
                                       "run: semsearch check --repair") from None
        if self.old is not None:
            shutil.copyfile(self.path / self.old["sqlite"]["file"], self.db_file)
        self.store = DocStore(self.db_file)
        # The copy is private until the manifest names it: no journal needed, one fsync at commit.
        self.store.db.execute("pragma journal_mode = off")
        self.store.db.execute("pragma synchronous = off")
        self._next_rowid = self.store.next_rowid()
        self._dirty = False
        self._deleted = False

    def _clean_orphans(self) -> None:
        keep = set()
        if self.old is not None:
            keep = {self.old["sqlite"]["file"], self.old["faiss"]["file"]}
        for item in self.path.iterdir():
            if item.name.startswith(("docs.", "vectors.", MANIFEST + ".")) and item.name not in keep:
                item.unlink()

    def _abort(self) -> None:
        self.store.close()
        for leftover in (self.db_file, self.faiss_file):
            leftover.unlink(missing_ok=True)

    def commit(self) -> dict:
        """Flush the new generation to disk and make it the current one (manifest last).

        When nothing changed, no new generation is written and the current manifest is returned.
        """
        if not self._dirty and self.old is not None:
            self._abort()
            return self.old
        self.store.db.conn.commit()
        if self.vectors.needs_rebuild:  # too many dead vectors in a type that cannot remove them
            self.vectors = self.vectors.rebuilt(self._reencoded)
        if self._deleted:
            self.store.db.execute("vacuum")  # give the deleted rows' pages back
        count = len(self.store)
        self.store.close()
        with open(self.db_file, "rb") as fh:
            os.fsync(fh.fileno())
        self.vectors.save(self.faiss_file)
        if count != len(self.vectors):
            raise SemsearchError(f"{self.path}: {count} documents but {len(self.vectors)} vectors; nothing was committed")
        spec = self._encoder.spec if self._encoder is not None else self.spec
        manifest = {
            "format": 1 if spec.precision == "fp32" else FORMAT_VERSION,
            "generation": self.generation,
            "encoder": spec.to_dict(),
            "faiss": {**self.vectors.manifest(), "file": self.faiss_file.name, "sha256": _sha256(self.faiss_file)},
            "sqlite": {"file": self.db_file.name, "sha256": _sha256(self.db_file)},
            "counts": {"documents": count},
            "created": self.old["created"] if self.old else _now(),
            "updated": _now(),
            "versions": _versions(),
        }
        tmp = self.path / (MANIFEST + ".tmp")
        with open(tmp, "w") as fh:
            json.dump(manifest, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path / MANIFEST)
        _fsync_dir(self.path)
        if self.old is not None:
            for name in (self.old["sqlite"]["file"], self.old["faiss"]["file"]):
                (self.path / name).unlink(missing_ok=True)
        return manifest

    # -------------------------------------------------------------- adding
    def add(self, records: Iterable[Record], *, chunk_size: int = 2048, batch_size: int = 32,
            source: str | None = None, progress=None) -> AddReport:
        """Embed and store records: new ids are added, changed texts re-embedded, unchanged ones skipped."""
        report = AddReport()
        started = time.perf_counter()
        seen: set[str] = set()
        for chunk in iter_batches(iter(records), chunk_size):
            report.read += len(chunk)
            latest: dict[str, Record] = {}
            for record in chunk:
                if record.id in seen or record.id in latest:
                    report.repeated += 1
                latest[record.id] = record
            seen.update(latest)
            self._add_chunk(list(latest.values()), report, batch_size, source)
            if progress is not None:
                progress(len(chunk))
        report.seconds = time.perf_counter() - started
        return report

    def _count_truncated(self, texts: list[str]) -> int:
        # A word-piece token covers at least one character, so only texts longer than the limit in
        # characters can pass it in tokens; only those are tokenised again, in full.
        limit = self.encoder.spec.max_length
        long = [t for t in texts if len(t) > limit - 2]
        if not long:
            return 0
        tokenizer = getattr(self.encoder, "tokenizer", None)
        if tokenizer is None:
            return 0
        lengths = tokenizer(long, truncation=False, verbose=False)["input_ids"]
        return sum(len(ids) > limit for ids in lengths)

    def rebuild_vectors(self, batch_size: int = 32) -> None:
        """Re-embed every stored text into fresh vectors (for a writer opened with ``rebuild=True``)."""
        if not self._rebuild:
            raise SemsearchError("rebuild_vectors needs IndexWriter(..., rebuild=True)")
        for rowids, texts in self.store.iter_texts():
            self.vectors.add(np.array(rowids, dtype=np.int64), self.encoder.encode(texts, batch_size=batch_size))
        self._dirty = True

    def _reencoded(self):
        """``(rowids, vectors)`` of every stored text, embedded again (rebuilding a lossy index)."""
        for rowids, texts in self.store.iter_texts():
            yield np.array(rowids, dtype=np.int64), self.encoder.encode(texts, show_progress=False)

    def delete(self, ids: Sequence[str] = (), filters: Sequence[str] | None = None) -> int:
        """Remove documents by id and/or by metadata filter; returns how many were removed.

        Unknown ids are ignored. The space is reclaimed when the generation is committed.
        """
        rowids = set(self.store.rowids_for_ids(list(ids)).values()) if ids else set()
        if filters:
            rowids.update(self.store.rowids_where(filters))
        if rowids:
            ordered = sorted(rowids)
            self.vectors.remove(np.array(ordered, dtype=np.int64))
            self.store.delete_rowids(ordered)
            self._dirty = self._deleted = True
        return len(rowids)

    def _add_chunk(self, records: list[Record], report: AddReport, batch_size: int, source: str | None) -> None:
        stored = self.store.existing([r.id for r in records])
        todo: list[tuple[int, Record]] = []
        replaced: list[int] = []
        for record in records:
            if record.id in stored:
                rowid, digest = stored[record.id]
                if digest == record.hash:
                    report.unchanged += 1
                    continue
                replaced.append(rowid)
                report.updated += 1
            else:
                rowid = self._next_rowid
                self._next_rowid += 1
                report.added += 1
            todo.append((rowid, record))
        if not todo:
            return
        self._dirty = True
        texts = [r.text for _, r in todo]
        report.truncated += self._count_truncated(texts)
        vectors = self.encoder.encode(texts, batch_size=batch_size, show_progress=False)
        self.vectors.remove(np.array(replaced, dtype=np.int64))
        self.vectors.add(np.array([rowid for rowid, _ in todo], dtype=np.int64), vectors)
        self.store.write(
            {"rowid": rowid, "id": r.id, "text": r.text, "meta": json.dumps(r.meta, ensure_ascii=False),
             "hash": r.hash, "source": source, "line": r.line}
            for rowid, r in todo)
