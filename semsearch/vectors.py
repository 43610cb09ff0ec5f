"""The vector store: a FAISS inner-product index whose ids are the documents' SQLite row ids.

Vectors are L2-normalised before they get here, so inner product is cosine similarity. Every index type keeps
that metric and those ids:

=======  ===========================================  ==========================================================
type     FAISS factory (n: count at the first write)  notes
=======  ===========================================  ==========================================================
flat     ``IDMap2,Flat``                              exact; what ``auto`` picks up to :data:`AUTO_FLAT_MAX`
hnsw     ``IDMap,HNSW32,Flat``                        graph, no training; cannot remove ids (dead-marked)
ivf      ``IVF{sqrt n},Flat``                         trained once; exact vectors; ``auto`` above the bound
ivfpq    ``IDMap,IVF{sqrt n},PQ{d/8}x8,RFlat``        48-byte PQ codes searched in memory, the best
                                                      ``k_factor`` x k re-ranked with exact vectors that
                                                      readers memory-map; cannot remove ids (dead-marked)
other    any FAISS factory string                     wrapped in ``IDMap``/``IDMap2`` when it keeps no ids
=======  ===========================================  ==========================================================

Search knobs (``nprobe`` for IVF, ``efSearch`` for HNSW, ``k_factor`` for ivfpq) default to values measured to give
recall@10 >= 0.95 (``benchmarks/results/scale.md``) and are recorded in the manifest; ``nprobe`` and ``efSearch``
can be overridden per query.

*Training.* A type that needs training (IVF, PQ, ...) starts as a flat buffer; :meth:`VectorStore.save` trains
it on a seeded sample of what the first write holds, with ``nlist`` chosen from the real count, and moves the
vectors in. Later writes add to the trained index.

*Removal.* Flat and IVF indexes remove ids. Types that cannot (HNSW, ivfpq) mark a removed vector dead by flipping
its id to ``~rowid`` (negative) in the FAISS id map; searches exclude negative ids with an ID selector, and the
writer rebuilds the vectors once more than :data:`REBUILD_DEAD_FRACTION` of them are dead (copied when stored
exactly, else embedded again from the stored texts). The marks live in the FAISS file, so they are saved and
swapped in with it.

*Loading.* Readers memory-map what FAISS can map: IVF inverted lists (``IO_FLAG_MMAP``), the vectors of flat,
HNSW and ivfpq indexes (``IO_FLAG_MMAP_IFC``), so a cold query reads the pages it touches. A flat index whose file is not in
the page cache is read whole instead, since its every page is touched and one sequential read beats page faults.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np

from .errors import SemsearchError

if TYPE_CHECKING:
    import faiss

DEFAULT_FACTORY = "IDMap2,Flat"
INDEX_TYPES = ("auto", "flat", "hnsw", "ivf", "ivfpq")
AUTO_FLAT_MAX = 200_000  # ``auto``: exact flat search up to this many documents (a query then costs ~30 ms)
AUTO_LARGE = "ivf"  # ``auto`` above it: memory-mapped lists make cold queries cheap; builds in minutes
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 40
HNSW_EF_SEARCH = 64  # the least; see ef_search_for
REFINE_K_FACTOR = 16  # ivfpq: PQ candidates per result, re-ranked with the exact vectors
REBUILD_DEAD_FRACTION = 0.2
FILTER_APPROX_FRACTION = 0.5  # filters matching at least this share use the approximate search (with a selector)
TRAIN_POINTS_PER_LIST = 64  # IVF training sample: this many vectors per list, at least TRAIN_MIN (PQ codebooks)
TRAIN_MIN = 20_000
TRAIN_MAX = 100_000  # other trained types
PQ_TRAIN_POINTS_PER_CENTROID = 64
TRAIN_SEED = 0
_LIVE = (0, 2**63 - 1)  # the id range of live vectors (dead ones are negative)


class IndexTypeError(SemsearchError):
    """An index type or search option that does not fit."""


def index_type_help() -> str:
    return "auto, flat, hnsw, ivf, ivfpq or a FAISS factory string such as HNSW32,Flat or IVF1024,PQ96"


def choose_type(requested: str | None, expected_count: int | None) -> str:
    """The type ``auto`` stands for: exact flat unless the corpus is known to hold more than :data:`AUTO_FLAT_MAX`."""
    requested = normalise_type(requested)
    if requested != "auto":
        return requested
    return AUTO_LARGE if expected_count is not None and expected_count > AUTO_FLAT_MAX else "flat"


def normalise_type(requested: str | None) -> str:
    text = (requested or "auto").strip()
    if not text:
        raise IndexTypeError(f"empty index type: use {index_type_help()}")
    return text.lower() if text.lower() in INDEX_TYPES else text


def stored_type(meta: dict) -> str:
    """The type recorded in a manifest's ``faiss`` section (manifests before index types: from the factory)."""
    factory = meta.get("factory") or DEFAULT_FACTORY
    return meta.get("type") or ("flat" if factory == DEFAULT_FACTORY else factory)


def nlist_for(count: int) -> int:
    """Inverted lists for ``count`` vectors: about sqrt(n), with at least 39 training points per list."""
    return max(1, min(round(math.sqrt(count)), count // 39))


def nprobe_for(nlist: int) -> int:
    """Lists searched per query: 32, and at least 1/32 of them (benchmarks/results/scale.md: recall@10 0.98 on
    40k real and on 1M synthetic all-MiniLM-L6-v2 vectors; 16 lists fall to 0.95 on the real ones)."""
    return max(1, min(nlist, max(32, math.ceil(nlist / 32))))


def ef_search_for(count: int) -> int:
    """HNSW beam width: 64 up to 100k vectors, growing with sqrt(n) beyond (208 at 1M, where 64 gives recall@10
    0.91 and 192 gives 0.97 on the synthetic set of benchmarks/results/scale.md)."""
    return max(HNSW_EF_SEARCH, 16 * math.ceil(HNSW_EF_SEARCH * math.sqrt(count / 100_000) / 16))


def training_points(index) -> int:
    """How many vectors an index is trained on (a seeded sample when there are more): 64 per IVF list and at
    least :data:`TRAIN_MIN` (PQ codebooks), or :data:`TRAIN_MAX` for other trained types."""
    ivf = _ivf_of(index)
    return TRAIN_MAX if ivf is None else max(TRAIN_POINTS_PER_LIST * ivf.nlist, TRAIN_MIN)


@lru_cache(maxsize=256)
def training_points_for(kind: str, dimension: int, count: int) -> int:
    """:func:`training_points` of the index of type ``kind`` that ``count`` vectors would get (asked on every
    buffered add of an on-disk write, so remembered)."""
    index, _ = _new_index(dimension, _factory_for(kind, dimension, count), kind)
    return training_points(index)


def _pq_bits(count: int) -> int:
    return max(1, min(8, int(math.log2(max(count, 2)))))


def _factory_for(kind: str, dimension: int, count: int) -> str:
    if kind == "flat":
        return DEFAULT_FACTORY
    if kind == "hnsw":
        return f"IDMap,HNSW{HNSW_M},Flat"
    if kind == "ivf":
        return f"IVF{nlist_for(count)},Flat"
    if kind == "ivfpq":
        m = next(m for m in (dimension // 8, dimension // 4, dimension // 2, dimension) if m and dimension % m == 0)
        return f"IDMap,IVF{nlist_for(count)},PQ{m}x{_pq_bits(count)},RFlat"
    return kind


def _new_index(dimension: int, factory: str, requested: str) -> "tuple[faiss.Index, str]":
    """A fresh FAISS index for ``factory`` that takes row ids, and the factory string that builds it."""
    import faiss

    try:
        index = faiss.index_factory(dimension, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1][:160]
        raise IndexTypeError(f"unknown index type {requested!r}: use {index_type_help()} (FAISS: {reason})") from None
    # index_factory and read_index return the concrete class already; downcast_index would return a proxy that
    # does not own the index, freed with the original.
    if isinstance(index, faiss.IndexIDMap):
        if _keeps_ids(index.index):  # IVF keeps ids itself, and IDMap would break its removal
            return _new_index(dimension, factory.split(",", 1)[1], requested)
        return index, factory
    if _keeps_ids(index):
        return index, factory
    prefix = "IDMap2," if isinstance(index, faiss.IndexFlatCodes) else "IDMap,"
    return _new_index(dimension, prefix + factory, requested)


def _keeps_ids(index) -> bool:
    import faiss

    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexPreTransform):
        return _keeps_ids(index.index)
    return isinstance(index, faiss.IndexIVF)


def _ivf_of(index) -> "faiss.IndexIVF | None":
    """The IVF index inside ``index`` (under transforms, an ID map or a refinement), or None."""
    import faiss

    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexIVF):
        return index
    if isinstance(index, (faiss.IndexPreTransform, faiss.IndexIDMap)):
        return _ivf_of(index.index)
    if isinstance(index, faiss.IndexRefine):
        return _ivf_of(index.base_index)
    return None


@contextmanager
def _threads(count: int | None):
    """FAISS's OpenMP threads for this thread, for a block. One query gains nothing from a second thread (FAISS
    splits its work by query) and loses much when the cores are busy: the idle thread's spin-wait competes."""
    import faiss

    if count is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


_TORCH = None  # the torch module once use_torch_scans() enabled it: exact flat scans through its GEMM


def use_torch_scans(enabled: bool = True) -> bool:
    """Pick the candidates of exact flat scans with torch's matrix product instead of FAISS's scan; True when
    torch is in use afterwards.

    For long-running processes (``semsearch serve`` turns it on): importing torch costs about 1.7 s once, so a
    one-shot ``semsearch query`` keeps FAISS. ``benchmarks/flat_scan.py`` measures both pickers over 100k
    stored vectors, quiet and beside a CPU hog (``benchmarks/results/flat-scan.md``). The hits and scores are
    the same either way:
    the candidates are scored again in float64 (see :meth:`VectorStore._exact_scan`). Scans restricted by a
    filter or by tombstones keep FAISS's selectors.
    """
    global _TORCH
    if not enabled:
        _TORCH = None
        return False
    try:
        import torch
    except ImportError:
        return False
    _TORCH = torch
    return True


def _torch_candidates(stored: np.ndarray, queries: np.ndarray, want: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``want`` best rows of ``stored`` for each query by float32 inner product: ``(scores, positions)``."""
    import warnings

    torch = _TORCH
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore", UserWarning)  # a read-only (memory-mapped) segment: torch only reads it
        matrix = torch.from_numpy(stored)
        scores, positions = torch.topk(torch.from_numpy(queries) @ matrix.T, want, dim=1)
    return scores.numpy(), positions.numpy().astype(np.int64)


_RESCORE_EXTRA = 8  # candidates beyond k re-scored exactly before a row may need a wider search
_SCORE_BLOCK = 1 << 23  # float32 scores FAISS may hold per block of a batched flat scan (32 MB)


@contextmanager
def _one_pass(queries: int, dimension: int, stored: int):
    """Several queries against a flat index scored by one matrix product (BLAS), which reads the stored vectors
    once for all of them. FAISS does so only from ``distance_compute_blas_threshold`` (queries x dimension
    128,000: 333 queries of 384 dimensions) and below that reads every vector once per query, which leaves a
    server's batches of 2-64 queries bound by memory. One query keeps FAISS's own path.

    The product runs over blocks of ``distance_compute_blas_database_bs`` stored vectors, each block ending in a
    barrier of FAISS's threads. At its default (1,024) a 100k scan passes 98 barriers, and when another process
    keeps the cores busy each one waits for a descheduled thread. Blocks of up to 32 MB of scores (131,072
    vectors for 64 queries) keep the barriers few; ``benchmarks/results/flat-scan.md`` compares the two, quiet
    and beside a CPU hog. Both settings are FAISS globals, restored afterwards;
    they choose how the same exact inner products are computed, never which.
    """
    import faiss

    if queries < 2:
        yield
        return
    settings = faiss.cvar
    before = settings.distance_compute_blas_threshold, settings.distance_compute_blas_database_bs
    settings.distance_compute_blas_threshold = min(before[0], 2 * dimension)
    settings.distance_compute_blas_database_bs = int(max(before[1], min(stored, _SCORE_BLOCK // queries)))
    try:
        yield
    finally:
        settings.distance_compute_blas_threshold, settings.distance_compute_blas_database_bs = before


def _mostly_cached(path: Path) -> bool:
    """Whether nine tenths of the file's pages are in the page cache (``mincore``); False when unknown."""
    import ctypes

    try:
        size = path.stat().st_size
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        page = os.sysconf("SC_PAGE_SIZE")
        with open(path, "rb") as fh:
            address = libc.mmap(None, size, 1, 1, fh.fileno(), 0)  # PROT_READ, MAP_SHARED
        if address in (None, ctypes.c_void_p(-1).value):
            return False
        try:
            pages = np.zeros((size + page - 1) // page, dtype=np.uint8)
            if libc.mincore(ctypes.c_void_p(address), size, pages.ctypes.data_as(ctypes.c_void_p)) != 0:
                return False
        finally:
            libc.munmap(ctypes.c_void_p(address), size)
        return np.count_nonzero(pages & 1) >= 0.9 * len(pages)
    except (OSError, AttributeError, ValueError):
        return False


class VectorStore:
    """One FAISS index with explicit 64-bit ids, whatever its type.

    ``kind`` is the type asked for (``flat``, ``hnsw``, ``ivf``, ``ivfpq`` or a factory string), ``factory`` what
    FAISS built (``None`` while an index that needs training still buffers its first write).
    """

    def __init__(self, index: "faiss.Index", factory: str | None, kind: str = "flat", *,
                 search: dict | None = None, build: dict | None = None) -> None:
        self.index = index
        self.factory = factory
        self.kind = kind
        self.search_defaults = dict(search or {})
        self.build = dict(build or {})
        self._inspect()

    # ------------------------------------------------------------------ making, loading, saving
    @classmethod
    def create(cls, dimension: int, kind: str = "flat", *, build: dict | None = None) -> "VectorStore":
        """An empty store of type ``kind``; one that needs training buffers vectors until :meth:`save`."""
        kind = normalise_type(kind)
        if kind == "auto":
            kind = "flat"
        build = dict(build or {})
        if kind in ("ivf", "ivfpq"):  # nlist is chosen from the count when the first write is trained
            return cls._buffering(dimension, kind, None, build)
        index, factory = _new_index(dimension, _factory_for(kind, dimension, 0), kind)
        if not index.is_trained:
            return cls._buffering(dimension, kind, factory, build)
        store = cls(index, factory, kind, build=build)
        store._configure()
        return store

    def _configure(self) -> None:
        """Build settings of a new index (those FAISS does not take in the factory string)."""
        if self._hnsw is not None:
            self._hnsw.hnsw.efConstruction = self.build.setdefault("efConstruction", HNSW_EF_CONSTRUCTION)
            self._hnsw.hnsw.efSearch = self.search_defaults["efSearch"]

    @classmethod
    def _buffering(cls, dimension: int, kind: str, factory: str | None, build: dict) -> "VectorStore":
        import faiss

        buffer = faiss.index_factory(dimension, DEFAULT_FACTORY, faiss.METRIC_INNER_PRODUCT)
        store = cls(buffer, None, kind, build=build)
        store._target = factory or ""
        return store

    @classmethod
    def load(cls, path: Path, meta: dict | str, *, mmap: bool = False) -> "VectorStore":
        """Read a FAISS file; ``meta`` is the manifest's ``faiss`` section (or its factory string).

        ``mmap`` maps what FAISS can map instead of reading it (for readers; a mapped index cannot change).
        """
        import faiss

        meta = {"factory": meta} if isinstance(meta, str) else dict(meta)
        factory, kind = meta.get("factory") or DEFAULT_FACTORY, stored_type(meta)
        index = None
        if mmap:
            refined = "RFlat" in factory or "Refine" in factory  # map the exact vectors, read the codes
            flag = faiss.IO_FLAG_MMAP if "IVF" in factory and not refined else faiss.IO_FLAG_MMAP_IFC
            if flag == faiss.IO_FLAG_MMAP or refined or "HNSW" in factory or _mostly_cached(path):
                try:
                    index = faiss.read_index(str(path), flag)
                except RuntimeError:
                    index = None  # a type FAISS cannot map: read it
        if index is None:
            index = faiss.read_index(str(path))
        if not index.is_trained:  # trained on the first write that brings vectors
            return cls._buffering(int(index.d), kind, factory if kind not in ("ivf", "ivfpq") else None,
                                  meta.get("build") or {})
        return cls(index, factory, kind, search=meta.get("search"), build=meta.get("build"))

    def save(self, path: Path) -> None:
        """Train the index first if it still buffers, then write to ``path`` and flush it to disk."""
        import faiss

        if self.buffering:
            self._train()
        faiss.write_index(self.index, str(path))
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())

    def manifest(self) -> dict:
        """What the manifest records about the vectors (besides the file name and checksum)."""
        if self._hnsw is not None:  # the beam a search needs grows with the index
            self.search_defaults["efSearch"] = ef_search_for(len(self))
        return {"type": self.kind, "factory": self.factory, "metric": "inner_product",
                "search": dict(self.search_defaults), "build": dict(self.build), "dead": self.dead}

    def _inspect(self) -> None:
        """Find the parts of the FAISS index that each operation needs."""
        import faiss

        self._target: str | None = None
        top = self.index
        self._idmap = top if isinstance(top, (faiss.IndexIDMap, faiss.IndexIDMap2)) else None
        inner = faiss.downcast_index(top.index) if self._idmap is not None else top
        self._ivf = _ivf_of(top)
        self._hnsw = inner if isinstance(inner, faiss.IndexHNSW) else None
        self._refine = inner if isinstance(inner, faiss.IndexRefine) else None
        if self._refine is not None:
            storage = faiss.downcast_index(inner.refine_index)
        else:
            storage = faiss.downcast_index(inner.storage) if hasattr(inner, "storage") else inner
        self._storage = storage if self._idmap is not None and isinstance(storage, faiss.IndexFlatCodes) else None
        self._tombstones = self._idmap is not None and not isinstance(inner, faiss.IndexFlatCodes)
        self._exact_flat = self._idmap is not None and isinstance(inner, faiss.IndexFlat)
        self._plain_ivf_flat = isinstance(top, faiss.IndexIVFFlat)  # its codes are the vectors themselves
        self.lossless = isinstance(storage, faiss.IndexFlat) or self._plain_ivf_flat
        if self._ivf is not None and self._ivf.is_trained:
            self.search_defaults.setdefault("nprobe", nprobe_for(self._ivf.nlist))
        if self._hnsw is not None:
            self.search_defaults.setdefault("efSearch", ef_search_for(int(self.index.ntotal)))
        if self._refine is not None:
            self.search_defaults.setdefault("k_factor", REFINE_K_FACTOR)
        self._dead = int(np.count_nonzero(self._id_map() < 0)) if self._tombstones else 0

    def _train(self) -> None:
        """Train the target type on a seeded sample of the buffered vectors and move them all in."""
        ids, vectors = self.vectors()
        self._become_trained(vectors, len(ids))
        if len(ids):
            self.add(ids, vectors)

    def train_empty(self, vectors: np.ndarray, count: int) -> None:
        """Train this empty store's type on ``vectors`` (a sample) for an index of ``count`` vectors (``nlist`` is
        chosen from it); the store stays empty, ready to be copied and filled (see :mod:`semsearch.index.ondisk`)."""
        if len(self):
            raise SemsearchError("train_empty: the store already holds vectors")
        self._become_trained(np.ascontiguousarray(vectors, dtype=np.float32), count)

    def _become_trained(self, vectors: np.ndarray, count: int) -> None:
        """Swap the buffer for the target index, trained on a seeded sample of ``vectors`` (sized for ``count``)."""
        factory = self._target or _factory_for(self.kind, self.dimension, count)
        index, factory = _new_index(self.dimension, factory, self.kind)
        if len(vectors):
            ivf = _ivf_of(index)
            want = training_points(index)
            rng = np.random.default_rng(TRAIN_SEED)
            rows = np.sort(rng.choice(len(vectors), size=min(want, len(vectors)), replace=False))
            sample = vectors[rows]
            for clustering, most in self._clusterings(index):
                clustering.min_points_per_centroid = 1  # small corpora: no warnings
                clustering.max_points_per_centroid = most
            if hasattr(ivf, "do_polysemous_training"):
                ivf.do_polysemous_training = False  # on by default; minutes of annealing for codes we never use
            while len(sample) < 256:  # k-means needs at least one point per centroid (PQ: up to 256)
                sample = np.vstack([sample, sample])
            # PQ codebooks are 256-centroid k-means in a few dimensions, thousands of tiny steps: a second
            # thread only adds synchronisation (ten times slower on a busy 2-core machine).
            with _threads(1 if hasattr(ivf, "pq") else None):
                index.train(np.ascontiguousarray(sample))
            self.build["trained_on"] = int(len(rows))
            if ivf is not None:
                self.build["nlist"] = int(ivf.nlist)
        self.index, self.factory = index, factory
        self._inspect()
        self._configure()

    @staticmethod
    def _clusterings(index) -> list:
        """The k-means settings inside ``index`` with the most points per centroid each may use."""
        ivf = _ivf_of(index)
        found = []
        if ivf is not None:
            found.append((ivf.cp, 1 << 30))  # the sample is already sized for the lists
            if hasattr(ivf, "pq"):  # 64 x 256 points are plenty for codebooks of 8 or fewer dimensions
                found.append((ivf.pq.cp, PQ_TRAIN_POINTS_PER_CENTROID))
        return found

    # ------------------------------------------------------------------ sizes
    @property
    def buffering(self) -> bool:
        """True while an index that needs training holds its vectors in a flat buffer."""
        return self._target is not None

    def __len__(self) -> int:
        """Live vectors (dead ones excluded)."""
        return int(self.index.ntotal) - self._dead

    @property
    def dimension(self) -> int:
        return int(self.index.d)

    @property
    def dead(self) -> int:
        """Vectors removed but still in the index (types that cannot remove ids)."""
        return self._dead

    @property
    def needs_rebuild(self) -> bool:
        return self._dead > REBUILD_DEAD_FRACTION * max(1, int(self.index.ntotal))

    def _id_map(self) -> np.ndarray:
        """A view (not a copy) of the external ids, by FAISS position: valid until the next add."""
        import faiss

        size = self._idmap.id_map.size()
        if size == 0:
            return np.zeros(0, dtype=np.int64)
        return faiss.rev_swig_ptr(self._idmap.id_map.data(), size)

    # ------------------------------------------------------------------ changing
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray) -> int:
        """Remove these ids (unknown ones are ignored); types that cannot remove mark them dead."""
        if len(ids) == 0:
            return 0
        ids = np.asarray(ids, dtype=np.int64)
        if not self._tombstones:
            return int(self.index.remove_ids(ids))
        id_map = self._id_map()
        hits = np.flatnonzero(np.isin(id_map, ids[ids >= 0]))
        id_map[hits] = ~id_map[hits]
        if hasattr(self._idmap, "construct_rev_map"):
            self._idmap.construct_rev_map()
        self._dead += len(hits)
        return len(hits)

    def rebuilt(self, reencode: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]] | None = None) -> "VectorStore":
        """A fresh store of the same type holding only the live vectors.

        Lossless types copy their stored vectors; lossy ones need ``reencode``, which yields ``(ids, vectors)``
        batches embedded again from the stored texts.
        """
        build = {key: value for key, value in self.build.items() if key == "efConstruction"}
        fresh = VectorStore.create(self.dimension, self.kind, build=build)
        if self.lossless or reencode is None:
            fresh.add(*self.vectors())
        else:
            for ids, vectors in reencode():
                fresh.add(ids, vectors)
        return fresh

    # ------------------------------------------------------------------ reading
    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None, *,
               excluded: np.ndarray | None = None, nprobe: int | None = None,
               ef_search: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, ids)`` of shape ``(len(queries), k)``; missing neighbours have id -1.

        ``allowed`` restricts the search to those ids, always inside FAISS with an ID selector. It is exact for
        flat indexes and for filters narrower than :data:`FILTER_APPROX_FRACTION` of the index (the matching
        vectors are scanned); wider filters use the approximate search with the selector. Any query left with
        fewer than ``k`` results by the approximate search is answered by a scan, so k results come back whenever
        k documents match. ``nprobe`` (IVF) and ``ef_search`` (HNSW) override the defaults in the manifest.
        """
        import faiss

        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        limit = len(self) if allowed is None else len(allowed)
        k = max(1, min(k, limit))
        knobs = self._knobs(nprobe, ef_search)
        if allowed is not None:
            allowed = np.ascontiguousarray(allowed, dtype=np.int64)
        if self._exact_flat or (allowed is not None and len(allowed) < FILTER_APPROX_FRACTION * len(self)):
            with _threads(1 if len(queries) == 1 else None):
                return self._scan(queries, k, allowed, excluded)
        selector = self._selector(allowed, excluded)
        with _threads(1 if len(queries) == 1 else None):
            if self._refine is not None:
                scores, ids = self._refine_search(queries, k, knobs, selector)
            else:
                scores, ids = self.index.search(queries, k, params=self._params(knobs, selector))
            short = np.flatnonzero((ids < 0).any(axis=1))
            if len(short):
                scores[short], ids[short] = self._scan(queries[short], k, allowed, excluded)
        return scores, ids

    def _selector(self, allowed: np.ndarray | None, excluded: np.ndarray | None):
        """The FAISS ID selector for ``allowed`` ids, or all but ``excluded`` and dead-marked ones; None: all."""
        import faiss

        if allowed is not None:
            return faiss.IDSelectorBatch(allowed)
        parts = []
        if excluded is not None and len(excluded):
            batch = faiss.IDSelectorBatch(np.ascontiguousarray(excluded, dtype=np.int64))
            parts.append(faiss.IDSelectorNot(batch))
            parts[-1].keep = batch  # the SWIG proxy does not own what it points to
        if self._dead:
            parts.append(faiss.IDSelectorRange(*_LIVE))
        if len(parts) == 2:
            both = faiss.IDSelectorAnd(parts[0], parts[1])
            both.keep = parts
            return both
        return parts[0] if parts else None

    def stored_ids(self) -> np.ndarray:
        """Every live id in the index, in FAISS order."""
        import faiss

        if self._idmap is not None:
            ids = self._id_map().copy()
            return ids[ids >= 0]
        if self._ivf is not None:
            lists, parts = self._ivf.invlists, []
            for list_no in range(self._ivf.nlist):
                size = lists.list_size(list_no)
                if size:
                    parts.append(faiss.rev_swig_ptr(lists.get_ids(list_no), size).copy())
            return np.concatenate(parts) if parts else np.zeros(0, np.int64)
        return self.vectors()[0]

    def _knobs(self, nprobe: int | None, ef_search: int | None) -> dict:
        knobs = dict(self.search_defaults)
        if nprobe is not None:
            if self._ivf is None:
                raise IndexTypeError(f"nprobe applies to IVF indexes; this one is {self._described()}")
            knobs["nprobe"] = int(nprobe)
        if ef_search is not None:
            if self._hnsw is None:
                raise IndexTypeError(f"ef-search applies to HNSW indexes; this one is {self._described()}")
            knobs["efSearch"] = int(ef_search)
        return knobs

    def _described(self) -> str:
        built = self.factory or "not trained yet"
        return self.kind if self.kind == built else f"{self.kind} ({built})"

    def _params(self, knobs: dict, selector) -> "faiss.SearchParameters | None":
        import faiss

        if self._ivf is not None and not self.buffering:
            params = faiss.SearchParametersIVF(nprobe=min(int(knobs.get("nprobe", 1)), self._ivf.nlist))
            if selector is not None:
                params.sel = selector
            if isinstance(self.index, faiss.IndexPreTransform):
                return faiss.SearchParametersPreTransform(index_params=params)
            return params
        if self._hnsw is not None:
            params = faiss.SearchParametersHNSW(efSearch=int(knobs.get("efSearch", HNSW_EF_SEARCH)))
        elif selector is None:
            return None
        else:
            params = faiss.SearchParameters()
        if selector is not None:
            params.sel = selector
        return params

    def _refine_search(self, queries: np.ndarray, k: int, knobs: dict, selector) -> tuple[np.ndarray, np.ndarray]:
        """IVF-PQ candidates (``k_factor`` x k), re-ranked with the exact vectors.

        IndexRefine passes only its base index's parameters on, so the selector is translated to FAISS
        positions here and the positions mapped back to row ids.
        """
        import faiss

        base = faiss.SearchParametersIVF(nprobe=min(int(knobs["nprobe"]), self._ivf.nlist))
        if selector is not None:
            translated = faiss.IDSelectorTranslated(self._idmap.id_map, selector)
            base.sel = translated
        params = faiss.IndexRefineSearchParameters(k_factor=float(knobs["k_factor"]), base_index_params=base)
        scores, positions = self._refine.search(queries, k, params=params)
        return scores, self._ids_at(positions)

    def _ids_at(self, positions: np.ndarray) -> np.ndarray:
        return np.where(positions >= 0, self._id_map()[np.maximum(positions, 0)], -1)

    def _scan(self, queries: np.ndarray, k: int, allowed: np.ndarray | None,
              excluded: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Every live (allowed) vector scored against the queries: exact for lossless storage."""
        import faiss

        selector = self._selector(allowed, excluded)
        if self._exact_flat:
            return self._exact_scan(queries, k, selector)
        if self._storage is not None:
            params = None
            if selector is not None:
                translated = faiss.IDSelectorTranslated(self._idmap.id_map, selector)
                params = faiss.SearchParameters(sel=translated)
            scores, positions = self._storage.search(queries, k, params=params)
            return scores, self._ids_at(positions)
        if self._ivf is not None:
            return self.index.search(queries, k, params=self._params({"nprobe": self._ivf.nlist}, selector))
        return self.index.search(queries, k, params=self._params(self.search_defaults, selector))

    def _exact_scan(self, queries: np.ndarray, k: int, selector) -> tuple[np.ndarray, np.ndarray]:
        """The k best of a flat index, scored in float64 (rounded to float32): the same score for the same
        vector, whatever its position and however many queries share the call.

        A float32 scan picks the candidates (FAISS's, one matrix product for a batch, see :func:`_one_pass`; or
        torch's, see :func:`use_torch_scans`); each candidate is then scored again exactly. A float32 score lies
        within :func:`~semsearch.mining.rounding_margin` of the exact one, so a vector left out can beat the k-th
        exact score only when the last candidate's float32 score comes within twice that of it; then the row
        asks for twice as many.
        """
        import faiss

        from .mining import rounding_margin

        flat = self._storage
        total = int(flat.ntotal)
        if total == 0:
            return np.zeros((len(queries), k), np.float32), np.full((len(queries), k), -1, np.int64)
        params = None if selector is None else \
            faiss.SearchParameters(sel=faiss.IDSelectorTranslated(self._idmap.id_map, selector))
        stored = faiss.rev_swig_ptr(flat.get_xb(), total * self.dimension).reshape(total, self.dimension)
        exact64 = queries.astype(np.float64)
        error = rounding_margin("float32", self.dimension)
        want = min(total, k + _RESCORE_EXTRA)
        out_scores = np.zeros((len(queries), k), np.float32)
        out_ids = np.full((len(queries), k), -1, np.int64)
        rows = np.arange(len(queries))
        while len(rows):
            if _TORCH is not None and selector is None:
                rough, positions = _torch_candidates(stored, queries[rows], want)
            else:
                with _one_pass(len(rows), self.dimension, total):
                    rough, positions = flat.search(queries[rows], want, params=params)
            found = positions >= 0
            exact = np.full(positions.shape, -np.inf)
            exact[found] = np.einsum("ij,ij->i", stored[positions[found]].astype(np.float64),
                                     exact64[rows][np.nonzero(found)[0]])
            exact = exact.astype(np.float32)
            ids = self._ids_at(positions)
            order = np.lexsort((np.where(found, ids, np.iinfo(np.int64).max), -exact.astype(np.float64)), axis=1)
            exact, ids = np.take_along_axis(exact, order, 1), np.take_along_axis(ids, order, 1)
            kth = exact[:, min(k, want) - 1]
            # FAISS returned every candidate it had (fewer than asked), or the ones it left out score lower
            done = ~found[:, -1] | (want >= total) | (rough[:, -1] + 2 * error < kth)
            keep = min(k, want)
            out_scores[rows[done], :keep] = np.where(np.isfinite(exact[done, :keep]), exact[done, :keep], 0)
            out_ids[rows[done], :keep] = np.where(np.isfinite(exact[done, :keep]), ids[done, :keep], -1)
            rows, want = rows[~done], min(total, want * 2)
        return out_scores, out_ids

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """All live ``(ids, vectors)``, ids ascending (for mining and checks without re-encoding).

        Exact for lossless types (flat, HNSW over flat storage, IVF-Flat); decoded from the codes for the others.
        """
        import faiss

        if self._idmap is not None:
            ids = self._id_map().copy()
            if isinstance(self._storage, faiss.IndexFlat):
                data = faiss.rev_swig_ptr(self._storage.get_xb(), len(ids) * self.dimension)
                data = data.reshape(len(ids), self.dimension)
            elif self._storage is not None:
                data = self._storage.reconstruct_n(0, len(ids))
            else:
                data = np.stack([self.index.reconstruct(int(i)) for i in ids]) if len(ids) else \
                    np.zeros((0, self.dimension), np.float32)
        elif self._ivf is not None:
            ids, data = self._ivf_vectors()
        else:
            raise IndexTypeError(f"cannot list the vectors of a {self.factory} index")
        live = np.flatnonzero(ids >= 0)
        order = live[np.argsort(ids[live], kind="stable")]
        return ids[order], np.array(data[order], dtype=np.float32)

    def _ivf_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        ivf, lists = self._ivf, self._ivf.invlists
        width = lists.code_size
        coarse = ivf.coarse_code_size()
        all_ids, all_codes = [], []
        for list_no in range(ivf.nlist):
            size = lists.list_size(list_no)
            if not size:
                continue
            all_ids.append(faiss.rev_swig_ptr(lists.get_ids(list_no), size).copy())
            codes = faiss.rev_swig_ptr(lists.get_codes(list_no), size * width).reshape(size, width)
            if self._plain_ivf_flat:
                all_codes.append(codes.copy())
                continue
            prefix = np.frombuffer(np.array([list_no], dtype="<u8").tobytes()[:coarse], dtype=np.uint8)
            all_codes.append(np.hstack([np.broadcast_to(prefix, (size, coarse)), codes]))
        if not all_ids:
            return np.zeros(0, np.int64), np.zeros((0, self.dimension), np.float32)
        ids, codes = np.concatenate(all_ids), np.ascontiguousarray(np.vstack(all_codes))
        if self._plain_ivf_flat:
            return ids, codes.view(np.float32)
        return ids, self.index.sa_decode(codes)
