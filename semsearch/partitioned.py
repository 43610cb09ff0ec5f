"""Partitioned near-duplicate mining: k-means cells, a spill over cell borders, the exact miner per cell.

The recipe of SemDeDup (Abbas et al., 2023), with the border handled. Exhaustive mining costs ``n²/2`` dot
products; near-duplicates are close, so only documents of one region need comparing:

1. **Cells.** Spherical k-means (FAISS; 10 rounds on a seeded sample of 32 rows per cell) gives ``C`` centroids.
2. **Spill.** Each document joins its nearest cell ``a`` and, up to ``spill`` cells in all, the next cells
   ``j`` it lies near the border of: ``s_a − s_j <= margin · r · |c_a − c_j|``, where ``s`` are cosines
   to the unit centroids and ``r = √(2(1−t))`` is the distance of two unit vectors at the threshold ``t``.
   Why: if ``cos(x, y) >= t`` and ``y``'s nearest cell is ``b``, then ``x`` lies within ``r`` of ``b``'s side
   of the bisector of ``c_a`` and ``c_b``, which is ``s_a − s_b <= r · |c_a − c_b|``. With ``margin = 1``
   and an unbounded spill every pair therefore meets in a cell: the result is exact. In 384 dimensions
   that bound admits nearly every cell, so the default margin is a share of it and the spill is capped;
   what that costs in recall is measured (``semsearch dedupe --partitioned`` prints it).
3. **Mining.** :func:`semsearch.mining.mine_pairs` (exact, bounded memory) runs inside each cell on the
   original float32 rows, over the pairs with at least one document *at home* there (the cell is its
   nearest): the home documents among themselves and against the spilled ones, never spilled against
   spilled. That loses nothing the spill was there to find: a pair whose documents live in different cells
   ``a`` and ``b`` is found in ``b`` when the document from ``a`` spilled into it, which is the case the
   border test above proves. A pair found in several cells is kept once, with the exhaustive miner's score.

Cost: about ``Σ h²/2 + h·s`` dot products for a cell of ``h`` home and ``s`` spilled documents (``n²(2m−1)/(2C)``
for balanced cells and ``m`` cells per document, where mining whole cells would cost ``n²m²/(2C)``)
plus ``n·C`` for the assignment; :func:`default_partitions` takes ``C = √n``, so ``O(n^1.5)`` in all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from .errors import SemsearchError
from .mining import DEFAULT_THRESHOLD, Pairs, _as_matrix, check_threshold, mine_pairs
from .similarity import normalise_rows

#: Most cells one document joins (its nearest and the next ones it lies near the border of).
DEFAULT_SPILL = 3
#: Share of the proven border distance within which a document spills (1: complete when the spill is unbounded).
DEFAULT_MARGIN = 0.3
#: Below this many documents the default is one cell: the exhaustive search, exact and instant.
SMALL = 4096
_TRAIN_POINTS_PER_CELL = 32  # k-means sample and rounds: the spill covers rough borders (measured: same recall as
_KMEANS_ITERATIONS = 10     # 64 points and 20 rounds to 5e-4 on real-ish data, half the time)
_SMALL_CELL = 4096  # cells with fewer documents are mined single-threaded, several at once


def default_partitions(n: int) -> int:
    """Cells for ``n`` documents: ``√n`` (cells of about ``√n`` documents), or 1 below :data:`SMALL`."""
    return 1 if n < SMALL else round(math.sqrt(n))


@dataclass(frozen=True)
class Partition:
    """Which documents each cell holds, and what the spill did."""

    cells: list[np.ndarray]  # int64 positions per cell: its home documents, ascending, then the spilled ones,
                             # ascending; cells with fewer than 2 documents or none at home left out
    homes: list[int]         # how many of each cell's documents are at home (the cell is their nearest)
    partitions: int          # k-means centroids
    spill: int               # most cells a document may join
    margin: float            # share of the proven border distance used
    memberships: int         # documents summed over cells (n when nothing spilled)
    capped: int              # documents near the border of more cells than the spill let them join
    complete: bool           # margin >= 1 and every cell examined for every document: no pair can be missed

    @property
    def largest(self) -> int:
        return max((len(c) for c in self.cells), default=0)

    @property
    def comparisons(self) -> int:
        """Dot products the cell mining costs: per cell, home with home and home with spilled."""
        return sum(cell_comparisons(len(c), h) for c, h in zip(self.cells, self.homes))

    def describe(self, n: int) -> str:
        if self.partitions == 1:
            return "partitioned, one cell (too few documents to split): exhaustive"
        spread = f"{self.memberships / n:.2f} on average" if n else "no documents"
        capped = "; complete: no pair can be missed" if self.complete and not self.capped else \
            f", {self.capped:,} capped" if self.capped else ""
        return (f"partitioned, {self.partitions:,} k-means cells, up to {self.spill} per document ({spread}{capped}), "
                f"largest cell {self.largest:,}")


def partition(embeddings: np.ndarray, threshold: float = DEFAULT_THRESHOLD, *, partitions: int | None = None,
              spill: int | None = None, margin: float = DEFAULT_MARGIN, seed: int = 0) -> Partition:
    """Cells of the rows of ``embeddings``: k-means, then each row's nearest cell and those it borders.

    Rows are normalised a slice at a time (no normalised copy of the whole matrix is made, so a memory-mapped
    matrix larger than memory can be partitioned).
    """
    threshold = check_threshold(threshold)
    n, d = embeddings.shape
    partitions = default_partitions(n) if partitions is None else _positive("partitions", partitions)
    spill = DEFAULT_SPILL if spill is None else _positive("spill", spill)
    if not margin >= 0:
        raise SemsearchError(f"the spill margin must be >= 0, got {margin}")
    partitions = max(1, min(partitions, n))
    spill = min(spill, partitions)
    if partitions == 1:
        everyone = np.arange(n, dtype=np.int64)
        return Partition([everyone] if n >= 2 else [], [n] if n >= 2 else [], 1, spill, margin, n, 0, True)
    centroids = _kmeans(embeddings, partitions, seed)
    gram = centroids @ centroids.T
    reach = margin * math.sqrt(max(0.0, 2 * (1 - threshold)))  # margin · r
    look = min(partitions, spill + 1)  # one beyond the spill: was a document capped?
    home: list[list[np.ndarray]] = [[] for _ in range(partitions)]
    spilled: list[list[np.ndarray]] = [[] for _ in range(partitions)]
    memberships = capped = 0
    step = 1 << 14
    for start in range(0, n, step):
        sims, cells = _nearest(normalise_rows(embeddings[start:start + step]), centroids, look)
        nearest = cells[:, :1]
        border = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * gram[nearest, cells]))  # |c_a − c_j|
        near = (sims[:, :1] - sims) <= reach * border + 1e-5  # float32 slack: include rather than miss
        near[:, 0] = True
        if look > spill:
            capped += int(near[:, spill].sum())
            near, cells = near[:, :spill], cells[:, :spill]
        rows, ranks = np.nonzero(near)
        memberships += len(rows)
        for members, chosen_rows, chosen_ranks in ((home, rows[ranks == 0], ranks[ranks == 0]),
                                                   (spilled, rows[ranks > 0], ranks[ranks > 0])):
            chosen = cells[chosen_rows, chosen_ranks]
            order = np.argsort(chosen, kind="stable")  # rows ascend within a cell
            chosen, positions = chosen[order], chosen_rows[order].astype(np.int64) + start
            bounds = np.flatnonzero(np.diff(chosen)) + 1
            if len(chosen):
                for cell, part in zip(chosen[np.r_[0, bounds]].tolist(), np.split(positions, bounds)):
                    members[cell].append(part)
    cells_out, homes = [], []
    for at_home, away in zip(home, spilled):
        count = sum(len(p) for p in at_home)
        if count and count + sum(len(p) for p in away) >= 2:
            cells_out.append(np.concatenate(at_home + away))
            homes.append(count)
    return Partition(cells_out, homes, partitions, spill, margin, memberships, capped,
                     complete=margin >= 1 and spill == partitions)


def cell_comparisons(size: int, home: int) -> int:
    """Pairs mined in a cell of ``size`` documents, ``home`` of them at home: home-home and home-spilled."""
    return home * (home - 1) // 2 + home * (size - home)


def _nearest(rows: np.ndarray, centroids: np.ndarray, look: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``look`` most similar centroids, best first: ``(cosines, cells)``.

    One float32 matrix product through torch's GEMM, which ran this faster than FAISS's flat search on this
    project's CPUs (``benchmarks/results/flat-scan.md`` compares the two on search). The cosines differ from
    FAISS's by float32 rounding, which the border test's slack absorbs."""
    import torch

    with torch.inference_mode():
        sims, cells = torch.topk(torch.from_numpy(rows) @ torch.from_numpy(centroids).T, look, dim=1)
    return sims.numpy(), cells.numpy().astype(np.int64)


def _kmeans(embeddings: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Unit centroids of spherical k-means on a seeded sample of the (normalised) rows."""
    import faiss

    n, d = embeddings.shape
    points = min(n, _TRAIN_POINTS_PER_CELL * k)
    rows = slice(None) if points == n else np.sort(np.random.default_rng(seed).choice(n, points, replace=False))
    sample = normalise_rows(embeddings[rows])
    kmeans = faiss.Kmeans(d, k, niter=_KMEANS_ITERATIONS, seed=seed, spherical=True, verbose=False,
                          min_points_per_centroid=1, max_points_per_centroid=_TRAIN_POINTS_PER_CELL)
    kmeans.train(sample)
    return normalise_rows(kmeans.centroids)


def mine_cells(embeddings: np.ndarray, cells: Iterable[np.ndarray], threshold: float, *,
               homes: Iterable[int] | None = None, chunk_size: int | None = None, device: str | None = None,
               dtype: str | None = None,
               progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """``(left, right, scores, candidates)``: the exact pairs >= ``threshold`` within each cell, each pair once.

    ``homes``: how many of each cell's first documents are at home (see :class:`Partition`); only pairs with one
    of them are mined. None: every document of a cell is.
    Positions are rows of ``embeddings`` (``left < right``), in no particular order.
    """
    return _mine_cells(_as_matrix(embeddings), cells, threshold, homes=homes, chunk_size=chunk_size, device=device,
                       dtype=dtype, progress=progress)


def _mine_cells(matrix: np.ndarray, cells: Iterable[np.ndarray], threshold: float, *,
                homes: Iterable[int] | None = None, chunk_size: int | None,
                device: str | None, dtype: str | None,
                progress: Callable[[int], None] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Large cells one after the other on every torch thread; small ones side by side, one thread each.

    A small cell's product takes milliseconds, about what torch's threads cost to start and join on a busy
    machine (measured: 66 ms for a 900-row cell on 2 threads, 13 ms on 1, with the cores shared), so small
    cells run in a pool of single-threaded workers instead.
    """
    import torch

    n = len(matrix)
    cells = list(cells)
    homes = [len(c) for c in cells] if homes is None else list(homes)

    def mine(i: int) -> tuple[np.ndarray, np.ndarray, int]:
        cell, home = cells[i], homes[i]
        parts = []
        if home >= 2:  # home with home
            parts.append((cell[:home], mine_pairs(matrix[cell[:home]], threshold, chunk_size=chunk_size,
                                                  device=device, dtype=dtype)))
        if 0 < home < len(cell):  # home with spilled
            parts.append((cell, mine_pairs(matrix[cell], threshold, chunk_size=chunk_size, device=device,
                                           dtype=dtype, split=home)))
        if progress is not None:
            progress(cell_comparisons(len(cell), home))
        codes = [np.minimum(rows[f.left], rows[f.right]) * n + np.maximum(rows[f.left], rows[f.right])
                 for rows, f in parts]
        scores = [f.scores for _, f in parts]
        return (np.concatenate([np.zeros(0, np.int64)] + codes), np.concatenate([np.zeros(0)] + scores),
                sum(f.candidates for _, f in parts))

    results: dict[int, tuple[np.ndarray, np.ndarray, int]] = {}
    gpu = device is not None and not str(device).startswith("cpu") or device is None and torch.cuda.is_available()
    small = [i for i, c in enumerate(cells) if len(c) < _SMALL_CELL and not gpu]
    for i in sorted(set(range(len(cells))) - set(small)):
        results[i] = mine(i)
    if small:
        from concurrent.futures import ThreadPoolExecutor

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                for i, result in zip(small, pool.map(mine, small)):
                    results[i] = result
        finally:
            torch.set_num_threads(threads)
    parts = [results[i] for i in range(len(cells))]
    codes = np.concatenate([np.zeros(0, np.int64)] + [p[0] for p in parts])
    scores = np.concatenate([np.zeros(0)] + [p[1] for p in parts])
    return (*_unique_pairs(codes, scores, n), sum(p[2] for p in parts))


def _unique_pairs(codes: np.ndarray, scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    codes, first = np.unique(codes, return_index=True)
    return codes // max(n, 1), codes % max(n, 1), scores[first]


def mine_partitioned(embeddings, threshold: float = DEFAULT_THRESHOLD, *, partitions: int | None = None,
                     spill: int | None = None, margin: float = DEFAULT_MARGIN, seed: int = 0,
                     chunk_size: int | None = None,
                     device: str | None = None, dtype: str | None = None,
                     progress: Callable[[int], None] | None = None) -> tuple[Pairs, Partition]:
    """Pairs with cosine >= ``threshold`` found within k-means cells, and the partition that found them.

    Every reported pair is a true one with its exact score (as :func:`~semsearch.mining.mine_pairs` gives
    it); pairs may be missed unless ``partition.complete``. Pairs come out in mining order (score descending,
    then positions).
    """
    threshold = check_threshold(threshold)
    matrix = _as_matrix(embeddings)
    n = len(matrix)
    cells = partition(matrix, threshold, partitions=partitions, spill=spill, margin=margin, seed=seed)
    left, right, scores, candidates = _mine_cells(matrix, cells.cells, threshold, homes=cells.homes,
                                                  chunk_size=chunk_size, device=device, dtype=dtype, progress=progress)
    return ordered_pairs(left, right, scores, threshold, n, candidates), cells


def ordered_pairs(left: np.ndarray, right: np.ndarray, scores: np.ndarray, threshold: float, n: int,
                  candidates: int = 0, top_k: int | None = None) -> Pairs:
    """:class:`~semsearch.mining.Pairs` in the miner's output order (score descending, then left, then right)."""
    order = np.lexsort((right, left, -scores))
    return Pairs(left[order], right[order], scores[order], threshold, n, top_k, candidates)


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise SemsearchError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


__all__ = ["DEFAULT_SPILL", "DEFAULT_MARGIN", "Partition", "default_partitions", "partition", "cell_comparisons",
           "mine_cells",
           "mine_partitioned", "ordered_pairs"]
