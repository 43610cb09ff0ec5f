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
from ..errors import IndexDamaged, ModelError, SemsearchError, choice
from ..fusion import FUSION_DEPTH, Ranked, SearchMode, ranking, rrf, weighted
from . import passages as P
from .docs import DocStore, StaleSnapshot, StoredDoc
from .files import index_path
from .manifest import Manifest
from .segments import SegmentSet

if TYPE_CHECKING:
    from ..encoder import Encoder

QUERY_CACHE_SIZE = 1024  # query embeddings an open Index keeps (LRU by text)
OPEN_ATTEMPTS = 5
PASSAGE_DEPTH = 4  # a chunked index is first asked for this many passages per document wanted


@dataclass(frozen=True)
class Passage:
    """Where a hit's best passage lies in its text: passage ``number`` (from 0), characters ``start:end``."""

    number: int
    start: int
    end: int

    def to_dict(self) -> dict:
        return {"number": self.number, "start": self.start, "end": self.end}


@dataclass(frozen=True)
class SideRank:
    """Where one side of a hybrid search ranked a hit: rank from 1, its score there (cosine, or -bm25)."""

    rank: int
    score: float

    def to_dict(self) -> dict:
        return {"rank": self.rank, "score": round(self.score, 6)}


@dataclass(frozen=True)
class Hit:
    """One search result. ``score``: cosine (dense), -bm25 (lexical, higher is better) or the fused score
    (hybrid). ``passage``: the best passage of a document stored in passages (None: the whole text).
    ``dense``/``lexical``: in hybrid mode, the rank and score each side gave it (None: not among its candidates).
    """

    rank: int
    score: float
    id: str
    text: str
    meta: dict = field(default_factory=dict)
    passage: Passage | None = None
    mode: str | None = None  # set for lexical and hybrid hits
    dense: SideRank | None = None
    lexical: SideRank | None = None

    @property
    def passage_text(self) -> str:
        """The text of the best passage (the whole text when there is no passage)."""
        return self.text if self.passage is None else self.text[self.passage.start:self.passage.end]

    def to_dict(self) -> dict:
        """``rank, score, id, text, meta`` as always; ``passage``, ``mode``, ``dense`` and ``lexical`` added only
        when they say something."""
        score = None if math.isnan(self.score) else round(self.score, 6)
        out = {"rank": self.rank, "score": score, "id": self.id, "text": self.text, "meta": self.meta}
        if self.passage is not None:
            out["passage"] = self.passage.to_dict()
        if self.mode is not None:
            out["mode"] = self.mode
        if self.mode == SearchMode.HYBRID.value:
            out["dense"] = None if self.dense is None else self.dense.to_dict()
            out["lexical"] = None if self.lexical is None else self.lexical.to_dict()
        return out


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
                segments = SegmentSet.open(path, manifest, store.dead_vector_ids())
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
    @property
    def default_mode(self) -> SearchMode:
        """Hybrid when the index has a lexical index, else dense."""
        return SearchMode.HYBRID if self.manifest.lexical else SearchMode.DENSE

    def search(self, queries: str | Sequence[str], k: int = 10, threshold: float | None = None,
               filters: Sequence[str] | None = None, *, nprobe: int | None = None,
               ef_search: int | None = None, mode: SearchMode | str | None = SearchMode.DENSE,
               alpha: float | None = None, passages: bool = False) -> list[list[Hit]]:
        """The best documents for each query text, best first.

        ``mode``: ``dense`` (cosine of embeddings), ``lexical`` (FTS5 bm25) or ``hybrid`` (both, fused by
        reciprocal rank, or by ``alpha * dense + (1 - alpha) * lexical`` of min-max normalised scores when
        ``alpha`` is given), see :mod:`semsearch.fusion`; None: :attr:`default_mode` (hybrid when the index has
        a lexical index, else dense). The default here is dense, as before hybrid search existed. ``filters``
        (``["lang=en", "year>=2020"]``, see :mod:`semsearch.filters`) restrict both sides to the matching
        documents before searching, so k results come back whenever k documents match. ``threshold`` (dense mode) keeps hits with cosine >= it. ``nprobe`` (IVF indexes) and
        ``ef_search`` (HNSW) override the search defaults in the manifest.

        A document stored in passages scores as its best passage, which the hit names; ``passages=True``
        (dense mode) lists the k best passages instead, several of a document possibly.
        """
        texts = [queries] if isinstance(queries, str) else list(queries)
        mode = self._mode(mode, threshold, alpha, passages)
        vectors = None if mode is SearchMode.LEXICAL else self.embed_queries(texts)
        return self.search_vectors(vectors, k=k, threshold=threshold, filters=filters, nprobe=nprobe,
                                   ef_search=ef_search, texts=texts, mode=mode, alpha=alpha, passages=passages)

    def search_vectors(self, vectors: np.ndarray | None, k: int = 10, threshold: float | None = None,
                       filters: Sequence[str] | None = None, *, nprobe: int | None = None,
                       ef_search: int | None = None, texts: Sequence[str] | None = None,
                       mode: SearchMode | str | None = SearchMode.DENSE, alpha: float | None = None,
                       passages: bool = False) -> list[list[Hit]]:
        """Like :meth:`search` for query vectors already embedded (normalised, float32); lexical and hybrid
        modes also need the query ``texts`` (one per vector row). Dense unless ``mode`` says otherwise."""
        if k < 1:
            raise SemsearchError(f"k must be at least 1, got {k}")
        if threshold is not None and not math.isfinite(threshold):
            raise SemsearchError(f"threshold must be a number between -1 and 1, got {threshold}")
        mode = self._mode(mode, threshold, alpha, passages)
        if mode is not SearchMode.DENSE and (texts is None or (
                vectors is not None and len(texts) != len(np.atleast_2d(vectors)))):
            raise SemsearchError(f"{mode.value} search needs the query texts, one per query vector")
        if mode is not SearchMode.LEXICAL:
            self.segments.check_knobs(nprobe, ef_search)
            vectors = np.atleast_2d(vectors)
        count = len(texts) if mode is SearchMode.LEXICAL else len(vectors)
        filters = self.store.check_filters(filters) if filters else None  # checked once, for both sides
        if len(self) == 0:
            return [[] for _ in range(count)]
        if mode is SearchMode.LEXICAL:
            return [self._hits([(r.key, None, r.score, None, None) for r in self._lexical_ranking(text, k, filters)],
                               mode) for text in texts]
        allowed = None
        if filters:
            allowed = self.store.vector_ids_where(filters, checked=True)
            if len(allowed) == 0:
                return [[] for _ in range(count)]
        depth = k if mode is SearchMode.DENSE else max(k, FUSION_DEPTH)
        dense = self._dense_rankings(vectors, depth, allowed, nprobe, ef_search, passages)
        if mode is SearchMode.DENSE:
            return [self._hits([(rowid, number, score, None, None) for rowid, number, score in ranked
                                if threshold is None or score >= threshold], mode) for ranked in dense]
        results = []
        for text, dense_ranked in zip(texts, dense):
            best_passage = {rowid: number for rowid, number, _ in dense_ranked}
            dense_side = ranking([(rowid, score) for rowid, _, score in dense_ranked])
            lexical_side = self._lexical_ranking(text, depth, filters)
            fused = rrf(dense_side, lexical_side) if alpha is None else weighted(dense_side, lexical_side, alpha)
            results.append(self._hits([(f.key, best_passage.get(f.key), f.score, f.dense, f.lexical)
                                       for f in fused[:k]], mode))
        return results

    def _mode(self, mode, threshold, alpha, passages) -> SearchMode:
        mode = self.default_mode if mode is None else choice(SearchMode, mode, "search mode")
        if mode is not SearchMode.DENSE and not self.manifest.lexical:
            raise SemsearchError(f"{self.path}: has no lexical index (an index of an earlier format), so only "
                                 "--mode dense works; the next write builds it, or now: semsearch compact --index "
                                 f"{self.path}")
        if threshold is not None and mode is not SearchMode.DENSE:
            raise SemsearchError(f"a cosine threshold applies to dense search; {mode.value} scores are not cosines "
                                 "(use --mode dense with --threshold)")
        if alpha is not None and mode is not SearchMode.HYBRID:
            raise SemsearchError(f"alpha weighs the two sides of hybrid search; it means nothing in {mode.value} "
                                 "mode")
        if passages and mode is not SearchMode.DENSE:
            raise SemsearchError("passages are ranked by their vectors: list them with --mode dense")
        return mode

    def _dense_rankings(self, vectors: np.ndarray, k: int, allowed: np.ndarray | None, nprobe: int | None,
                        ef_search: int | None, passages: bool) -> list[list[tuple[int, int, float]]]:
        """Per query, the k best documents (or passages) as ``(rowid, passage number, cosine)``, best first.

        A document scores as its best passage. The segments are asked for :data:`PASSAGE_DEPTH` passages per
        document wanted, and again for more (only for the queries short of k documents) until k documents are
        found or every passage was seen.
        """
        def search(rows: np.ndarray, want: int) -> tuple[np.ndarray, np.ndarray]:
            return self.segments.search(vectors[rows], want, allowed=allowed, nprobe=nprobe, ef_search=ef_search)

        if passages or not self.manifest.has_passages:
            scores, ids = search(np.arange(len(vectors)), k)
            return [[(i & P.ROWID_MASK, i >> P.PASSAGE_SHIFT, s) for s, i in zip(row_s.tolist(), row_i.tolist())
                     if i >= 0] for row_s, row_i in zip(scores, ids)]
        total = len(self.segments) if allowed is None else len(allowed)
        out: list[list[tuple[int, int, float]] | None] = [None] * len(vectors)
        todo, want = np.arange(len(vectors)), min(total, k * PASSAGE_DEPTH)
        while len(todo):
            scores, ids = search(todo, max(1, want))
            short = []
            for row, row_s, row_i in zip(todo.tolist(), scores, ids):
                best = P.group_best(row_s, row_i)
                if len(best) < k and want < total and (row_i >= 0).all():
                    short.append(row)
                    continue
                out[row] = best[:k]
            todo, want = np.asarray(short, dtype=np.int64), min(total, want * PASSAGE_DEPTH)
        return out  # type: ignore[return-value]

    def _lexical_ranking(self, text: str, k: int, filters: Sequence[str] | None) -> list[Ranked]:
        """The k best lexical matches as :class:`Ranked` keyed by row id, scored -bm25 (higher is better)."""
        return ranking([(rowid, -bm25) for rowid, bm25 in self._lexical_rows(text, k, filters)])

    def _hits(self, found: Sequence[tuple[int, int | None, float, Ranked | None, Ranked | None]],
              mode: SearchMode) -> list[Hit]:
        """Hits from ``(rowid, passage number or None, score, dense place, lexical place)``, in that order."""
        docs = self.store.fetch([rowid for rowid, *_ in found])
        hits = []
        for rowid, number, score, dense, lexical in found:
            doc = docs.get(rowid)
            if doc is None:
                raise IndexDamaged(f"{self.store.path}: vector {rowid} has no document; "
                                   f"run: semsearch check --repair --index {self.path}")
            passage = Passage(number, *doc.passage(number)) if doc.passages is not None and number is not None \
                else None
            if mode is SearchMode.DENSE:
                score = min(1.0, max(-1.0, float(score)))
            hits.append(Hit(len(hits) + 1, float(score), doc.id, doc.text, doc.meta, passage,
                            None if mode is SearchMode.DENSE else mode.value,
                            SideRank(dense.rank, dense.score) if dense is not None else None,
                            SideRank(lexical.rank, lexical.score) if lexical is not None else None))
        return hits

    # ------------------------------------------------------------------ documents and vectors
    def get(self, ids: Sequence[str]) -> dict[str, Hit]:
        """The documents with these ids (those that exist), as hits with rank 0 and no score."""
        rowids = self.store.rowids_for_ids(list(ids))
        docs = self.store.fetch(list(rowids.values()))
        return {doc_id: Hit(0, float("nan"), docs[r].id, docs[r].text, docs[r].meta) for doc_id, r in rowids.items()}

    def fetch_rowids(self, rowids: Sequence[int]) -> dict[int, StoredDoc]:
        return self.store.fetch(rowids)

    def stored_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """``(vector ids, vectors)`` of every visible document, by row id then passage (exact for lossless
        types). A vector id is the row id for a document of one passage (see :mod:`.passages`)."""
        live = self.store.live_vector_ids()
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
            raise IndexDamaged(f"{self.path}: {len(np.unique(P.rowids_of(missing)))} documents have no vector (first "
                               f"row id {int(P.rowids_of(missing[:1])[0]) if len(missing) else '?'}); "
                               "run: semsearch check --repair")
        order = np.lexsort((P.passages_of(ids), P.rowids_of(ids)))  # a document's passages together
        return ids[order], vectors[order]

    def lexical(self, query: str, k: int = 10, filters: Sequence[str] | None = None) -> list[tuple[int, float]]:
        """``(rowid, bm25)`` of the best lexical matches (FTS5), best first; the query is quoted term by term."""
        return self._lexical_rows(query, k, self.store.check_filters(filters) if filters else None)

    def _lexical_rows(self, query: str, k: int, conditions) -> list[tuple[int, float]]:
        from .lexical import fts_query

        if not self.manifest.lexical:
            raise SemsearchError(f"{self.path}: has no lexical index (an index of an earlier format); the next write "
                                 f"builds it, or now: semsearch compact --index {self.path}")
        match = fts_query(query)
        if match is None:
            return []
        allowed = None
        if conditions:
            from ..filters import where_clause

            allowed = where_clause(conditions)
        return self.store.lexical(match, k, allowed)


def check_same_encoder(expected: EncoderSpec, given: EncoderSpec, where: Path) -> None:
    differences = expected.differences(given)
    if differences:
        raise ModelError(
            f"{where}: built with model {expected.model!r} ({expected.pooling.value} pooling, {expected.dimension}-d, "
            f"{expected.precision}); {given.model!r} differs in {', '.join(differences)}: "
            + (f"load it with precision={expected.precision!r}, or " if differences == ["precision"] else "")
            + "drop --model to use the index's own, or build a new index with this model")
