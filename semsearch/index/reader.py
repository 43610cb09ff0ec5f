"""Reading an index: one generation's snapshot (manifest, SQLite read transaction, open segments), searched exactly.

An open :class:`Index` pins what it opened: its SQLite read transaction keeps the documents as of its
generation while writers and compaction commit beside it, and its segment files stay readable (open or
memory-mapped) after a writer removes them. ``Index.open`` retries on the newer manifest when a writer swapped
generations between its reads, so a healthy index is never called damaged.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..encoder import EncoderSpec
from ..errors import IndexDamaged, ModelError, SemsearchError
from .docs import DocStore, StaleSnapshot, StoredDoc
from .files import index_path
from .manifest import Manifest
from .segments import SegmentSet

if TYPE_CHECKING:
    from ..encoder import Encoder

QUERY_CACHE_SIZE = 1024  # query embeddings an open Index keeps (LRU by text)
OPEN_ATTEMPTS = 5


@dataclass(frozen=True)
class Hit:
    """One search result."""

    rank: int
    score: float
    id: str
    text: str
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        score = None if math.isnan(self.score) else round(self.score, 6)
        return {"rank": self.rank, "score": score, "id": self.id, "text": self.text, "meta": self.meta}


class Index:
    """A read-only snapshot of one generation of an index folder.

    >>> with Index.open("indexes/docs") as index:
    ...     index.search("parse a date", k=5)[0][0].text
    """

    def __init__(self, path: Path, manifest: Manifest, store: DocStore, segments: SegmentSet, *,
                 query_cache: int = QUERY_CACHE_SIZE) -> None:
        self.path = path
        self.manifest = manifest
        self.store = store
        self.segments = segments
        self.spec: EncoderSpec = manifest.encoder
        self._encoder: Encoder | None = None
        self._encoder_source: str | None = None
        self.query_cache_size = query_cache
        self._query_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()

    @classmethod
    def open(cls, name_or_path: str | os.PathLike | None = None, *, query_cache: int = QUERY_CACHE_SIZE) -> "Index":
        """Open the current generation. ``query_cache``: how many query embeddings to keep (LRU by text; 0: none)."""
        path = index_path(name_or_path)
        missing: Path | None = None
        for attempt in range(OPEN_ATTEMPTS):
            manifest = Manifest.load(path)
            store = None
            try:
                store = DocStore.open_reader(path / manifest.sqlite, manifest.generation, legacy=manifest.legacy)
                segments = SegmentSet.open(path, manifest, store.dead_rowids())
                return cls(path, manifest, store, segments, query_cache=query_cache)
            except (FileNotFoundError, StaleSnapshot) as exc:  # a writer moved on between our reads
                if store is not None:
                    store.close()
                missing = Path(str(exc.args[0])) if exc.args else path
                time.sleep(0.02 * (attempt + 1))
            except BaseException:
                if store is not None:
                    store.close()
                raise
        raise IndexDamaged(f"{missing}: missing; the index is damaged (run: semsearch check --repair --index {path})")

    @property
    def generation(self) -> int:
        return self.manifest.generation

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return self.manifest.documents

    # ------------------------------------------------------------------ the encoder
    def encoder(self, model: str | os.PathLike | None = None, device: str | None = None) -> "Encoder":
        """The encoder that built this index. A ``model`` given explicitly must produce the same vectors."""
        from ..encoder import Encoder

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

    # ------------------------------------------------------------------ searching
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
        if threshold is not None and not math.isfinite(threshold):
            raise SemsearchError(f"threshold must be a number between -1 and 1, got {threshold}")
        self.segments.check_knobs(nprobe, ef_search)
        vectors = np.atleast_2d(vectors)
        allowed = None
        if filters:
            allowed = np.asarray(self.store.rowids_where(filters), dtype=np.int64)
            if len(allowed) == 0:
                return [[] for _ in vectors]
        if len(self) == 0:
            return [[] for _ in vectors]
        scores, ids = self.segments.search(vectors, k, allowed=allowed, nprobe=nprobe, ef_search=ef_search)
        docs = self.store.fetch(np.unique(ids[ids >= 0]).tolist())
        results = []
        for row_scores, row_ids in zip(scores, ids):
            hits = []
            for score, rowid in zip(row_scores.tolist(), row_ids.tolist()):
                if rowid < 0 or (threshold is not None and score < threshold):
                    continue
                doc = docs.get(rowid)
                if doc is None:
                    raise IndexDamaged(f"{self.store.path}: vector {rowid} has no document; "
                                       f"run: semsearch check --repair --index {self.path}")
                hits.append(Hit(len(hits) + 1, min(1.0, max(-1.0, float(score))), doc.id, doc.text, doc.meta))
            results.append(hits)
        return results

    # ------------------------------------------------------------------ documents and vectors
    def get(self, ids: Sequence[str]) -> dict[str, Hit]:
        """The documents with these ids (those that exist), as hits with rank 0 and no score."""
        rowids = self.store.rowids_for_ids(list(ids))
        docs = self.store.fetch(list(rowids.values()))
        return {doc_id: Hit(0, float("nan"), docs[r].id, docs[r].text, docs[r].meta) for doc_id, r in rowids.items()}

    def fetch_rowids(self, rowids: Sequence[int]) -> dict[int, StoredDoc]:
        return self.store.fetch(rowids)

    def stored_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """``(rowids, vectors)`` of every visible document, in row-id order (exact for lossless types)."""
        live = np.asarray(self.store.live_rowids(), dtype=np.int64)
        parts_ids, parts_vectors = [], []
        for store in self.segments.stores:
            ids, vectors = store.vectors()
            keep = np.isin(ids, live)
            parts_ids.append(ids[keep])
            parts_vectors.append(vectors[keep])
        if not parts_ids:
            return np.zeros(0, np.int64), np.zeros((0, self.spec.dimension), np.float32)
        ids, vectors = np.concatenate(parts_ids), np.concatenate(parts_vectors)
        order = np.argsort(ids, kind="stable")
        ids, vectors = ids[order], vectors[order]
        if len(ids) != len(live) or not np.array_equal(ids, live):
            missing = np.setdiff1d(live, ids)
            raise IndexDamaged(f"{self.path}: {len(missing)} documents have no vector (first row id "
                               f"{int(missing[0]) if len(missing) else '?'}); run: semsearch check --repair")
        return ids, vectors

    def lexical(self, query: str, k: int = 10, filters: Sequence[str] | None = None) -> list[tuple[int, float]]:
        """``(rowid, bm25)`` of the best lexical matches (FTS5), best first; the query is quoted term by term."""
        from .lexical import fts_query

        if not self.manifest.lexical:
            raise SemsearchError(f"{self.path}: has no lexical index; run: semsearch check --repair --index {self.path}")
        match = fts_query(query)
        if match is None:
            return []
        allowed = None
        if filters:
            from ..filters import where_clause

            allowed = where_clause(filters)
        return self.store.lexical(match, k, allowed)


def check_same_encoder(expected: EncoderSpec, given: EncoderSpec, where: Path) -> None:
    differences = expected.differences(given)
    if differences:
        raise ModelError(
            f"{where}: built with model {expected.model!r} ({expected.pooling.value} pooling, {expected.dimension}-d, "
            f"{expected.precision}); {given.model!r} differs in {', '.join(differences)}: "
            + (f"load it with precision={expected.precision!r}, or " if differences == ["precision"] else "")
            + "drop --model to use the index's own, or build a new index with this model")
