"""Vector segments: immutable FAISS files whose ids are SQLite row ids, searched together.

A write adds one segment holding the vectors it embedded. Small segments are exact flat indexes; a segment
of :data:`TYPED_SEGMENT_MIN` vectors or more (and compaction's merged segment) uses the index's own type
(HNSW, IVF, ...). IVF segments are cloned from the empty trained index of the first write (``trained.*.faiss``),
so every segment shares one quantizer; an on-disk IVF segment (:mod:`.ondisk`, written by ``--engine ray``)
keeps its inverted lists in a file of its own, memory-mapped. Deleted documents are tombstones in SQLite:
searches exclude their row ids with an ID selector until compaction rewrites the segments without them.

Results of all segments are merged by score, ties by row id (earlier writes first); each segment is asked for every
vector tied with its k-th score (FAISS keeps an arbitrary part of a tie at the cut-off), so for flat segments the
merged top k is exactly that of one exhaustive search over the same vectors, ties included.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import IndexDamaged, SemsearchError
from ..vectors import DEFAULT_FACTORY, VectorStore
from .files import sha256
from .manifest import Manifest, Segment

TYPED_SEGMENT_MIN = 10_000  # a write this large gets a segment of the index's type; smaller ones are flat
SCORE_SLACK = 1e-3  # cosine scores of unit vectors beyond 1 + this mean damaged vectors (exact storage)
LOSSY_SCORE_SLACK = 0.1  # compressed vectors (SQ, PQ) overshoot a little


def segment_name(generation: int, number: int = 0) -> str:
    return f"seg.{generation}.{number}.faiss"


def trained_name(generation: int) -> str:
    return f"trained.{generation}.faiss"


def load_segment(folder: Path, manifest: Manifest, segment: Segment, *, mmap: bool, verify: bool = False) -> VectorStore:
    """Read one segment; ``verify`` checks its checksums first (a writer that builds on it)."""
    path = folder / segment.file
    if verify:
        for name, digest in segment.files().items():
            if digest and sha256(folder / name) != digest:
                raise IndexDamaged(f"{folder / name}: checksum differs from the manifest's; "
                                   "run: semsearch check --repair")
    meta = dict(manifest.faiss) if segment.kind != "flat" else {"type": "flat", "factory": DEFAULT_FACTORY}
    try:
        if segment.lists:  # always mapped: its lists may be larger than memory
            from .ondisk import read_segment

            store = read_segment(path, folder / segment.lists, meta)
        else:
            store = VectorStore.load(path, meta, mmap=mmap)
    except RuntimeError as exc:
        if not path.exists():
            raise FileNotFoundError(path) from None
        raise IndexDamaged(f"{path}: unreadable FAISS file ({str(exc).strip().splitlines()[0][:160]}); "
                           "run: semsearch check --repair") from None
    if store.dimension != manifest.encoder.dimension:
        raise IndexDamaged(f"{path}: holds {store.dimension}-d vectors, the index's encoder gives "
                           f"{manifest.encoder.dimension}-d; run: semsearch check --repair")
    return store


def save_segment(store: VectorStore, path: Path) -> None:
    """Write a segment file; FAISS's write errors (a full disk) become the one-line "cannot write" of any other
    failed write (the writer rolls back)."""
    try:
        store.save(path)
    except RuntimeError as exc:
        raise faiss_write_error(path.parent, str(exc)) or exc from None


def faiss_write_error(folder: Path, text: str) -> SemsearchError | None:
    """The one-line "cannot write" error for a FAISS write that failed for want of space or permission (its
    message carries the system's reason); None for any other failure."""
    import errno

    from .files import os_error

    for code in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT):
        if os.strerror(code) in text:
            return os_error(folder, OSError(code, os.strerror(code)))
    return None


def new_segment_store(folder: Path, manifest: Manifest, count: int) -> tuple[VectorStore, str]:
    """An empty store for a segment of ``count`` vectors, and its kind."""
    kind = manifest.faiss.get("type", "flat")
    if kind == "flat" or count < TYPED_SEGMENT_MIN:
        return VectorStore.create(manifest.encoder.dimension, "flat"), "flat"
    trained = manifest.trained
    if trained:
        store = load_segment(folder, manifest, Segment(trained["file"], trained["sha256"], 0, kind), mmap=False,
                             verify=True)
        return store, kind
    return VectorStore.create(manifest.encoder.dimension, kind, build=_build_knobs(manifest)), kind


def _build_knobs(manifest: Manifest) -> dict:
    return {k: v for k, v in manifest.faiss.get("build", {}).items() if k == "efConstruction"}


class SegmentSet:
    """The segments of one generation, opened for searching."""

    def __init__(self, folder: Path, manifest: Manifest, stores: list[VectorStore], excluded: np.ndarray) -> None:
        self.folder = folder
        self.manifest = manifest
        self.stores = stores
        self.excluded = excluded  # tombstoned row ids (sorted)
        self._live = [self._live_in(store, segment) for store, segment in zip(stores, manifest.segments)]

    @classmethod
    def open(cls, folder: Path, manifest: Manifest, excluded: Sequence[int], *, mmap: bool = True) -> "SegmentSet":
        stores = [load_segment(folder, manifest, segment, mmap=mmap) for segment in manifest.segments]
        return cls(folder, manifest, stores, np.asarray(excluded, dtype=np.int64))

    def _live_in(self, store: VectorStore, segment: Segment) -> int:
        if not len(self.excluded) or not len(store):
            return len(store)
        if segment.rows:  # an on-disk segment holds all vectors of its rows: no need to read its ids
            from .passages import rowids_of

            rows = rowids_of(self.excluded)
            return int(len(store) - np.count_nonzero((rows >= segment.rows[0]) & (rows <= segment.rows[1])))
        ids = store.stored_ids()
        return int(len(store) - np.count_nonzero(np.isin(ids, self.excluded)))

    def __len__(self) -> int:
        return sum(self._live)

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None, *,
               nprobe: int | None = None, ef_search: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, ids)``, ``(len(queries), k)``, best first, ties by row id; missing neighbours have id -1.

        ``allowed``: the row ids a filter selected (visible ones only); otherwise tombstones are excluded.
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        all_scores, all_ids = [], []
        for store, segment, live in zip(self.stores, self.manifest.segments, self._live):
            if live == 0:
                continue
            excluded = None if allowed is not None or not len(self.excluded) else self.excluded
            knobs = {"nprobe": nprobe if store._ivf is not None else None,
                     "ef_search": ef_search if store._hnsw is not None else None}
            scores, ids = self._search_ties_included(store, queries, k, live, allowed, excluded, knobs)
            found = ids >= 0
            slack = SCORE_SLACK if store.lossless else LOSSY_SCORE_SLACK
            if found.any() and np.abs(scores[found]).max() > 1 + slack:
                raise IndexDamaged(f"{self.folder / segment.file}: scores outside [-1, 1]: its vectors are damaged; "
                                   "run: semsearch check --repair")
            all_scores.append(scores)
            all_ids.append(ids)
        n = len(queries)
        if not all_scores:
            return np.zeros((n, k), np.float32), np.full((n, k), -1, np.int64)
        return merge_top_k(np.hstack(all_scores), np.hstack(all_ids), k)

    @staticmethod
    def _search_ties_included(store, queries, k, live, allowed, excluded, knobs):
        """A segment's top k plus every vector tied with its k-th score: FAISS keeps an arbitrary part of a tie
        at the cut-off, and the merged order (score, then row id) must choose from all of it. Only the queries
        with a tie at the cut-off are asked again (for twice as many); the others keep their first answer, and
        missing places are id -1."""
        want = min(k + 1, live)
        rows = np.arange(len(queries))
        answered = []  # (rows, scores, ids)
        while True:
            scores, ids = store.search(queries[rows], want, allowed=allowed, excluded=excluded, **knobs)
            got = ids.shape[1]  # fewer than asked when a filter allows fewer
            if got <= k or got < want or want >= live:
                tied = np.zeros(len(rows), dtype=bool)
            else:
                tied = (ids[:, -1] >= 0) & (scores[:, -1] == scores[:, k - 1])
            answered.append((rows[~tied], scores[~tied], ids[~tied]))
            if not tied.any():
                break
            rows, want = rows[tied], min(live, want * 2)
        if len(answered) == 1:
            return scores, ids
        width = max(part[2].shape[1] for part in answered)
        out_scores = np.zeros((len(queries), width), np.float32)
        out_ids = np.full((len(queries), width), -1, np.int64)
        for part_rows, part_scores, part_ids in answered:
            out_scores[part_rows, :part_ids.shape[1]] = part_scores
            out_ids[part_rows, :part_ids.shape[1]] = part_ids
        return out_scores, out_ids

    def check_knobs(self, nprobe: int | None, ef_search: int | None) -> None:
        """Refuse a knob that no segment of this index uses (as one index of that type would)."""
        from ..vectors import IndexTypeError

        kind = self.manifest.faiss.get("type", "flat")
        factory = self.manifest.faiss.get("factory") or "not trained yet"
        described = kind if kind == factory else f"{kind} ({factory})"
        if nprobe is not None and "IVF" not in factory:
            raise IndexTypeError(f"nprobe applies to IVF indexes; this one is {described}")
        if ef_search is not None and "HNSW" not in factory:
            raise IndexTypeError(f"ef-search applies to HNSW indexes; this one is {described}")


def merge_top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k best ``(score, id)`` pairs by score descending, then id ascending; -1 ids last."""
    n = len(scores)
    out_scores = np.zeros((n, k), np.float32)
    out_ids = np.full((n, k), -1, np.int64)
    for row in range(n):
        valid = ids[row] >= 0
        s, i = scores[row][valid], ids[row][valid]
        order = np.lexsort((i, -s.astype(np.float64)))[:k]
        out_scores[row, :len(order)] = s[order]
        out_ids[row, :len(order)] = i[order]
    return out_scores, out_ids
