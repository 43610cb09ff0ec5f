"""Exhaustive near-duplicate mining on embedding matrices: every pair with cosine >= a threshold.

Pure functions on vectors (no model, no index): :func:`mine_pairs` finds the pairs, :func:`find_clusters`
groups them with union-find, :func:`plan_keep` picks one document to keep per group.

How :func:`mine_pairs` stays exact, fast and bounded in memory:

* The rows are normalised once and copied in a low precision (bfloat16 on CPUs that multiply it fast,
  float16 on CUDA, float32 otherwise). Square blocks ``chunk × chunk`` of the upper triangle only (column
  block >= row block) are multiplied; memory is one block, never ``n × n``.
* Each block is thresholded at ``threshold - margin``, where ``margin`` bounds the rounding error of the
  low-precision product for unit vectors (:func:`rounding_margin`): no true pair can fall below it.
* The few candidates are re-scored exactly (float64 dot products of the float32 vectors, divided by their
  float64 norms) and kept when that exact score is >= ``threshold``. Reported scores are therefore exact
  and the result does not depend on the chunk size, the device or the precision used for the search.
* With ``top_k``, each document keeps only its ``k`` best partners (ties: smaller position first); a
  pair is reported when either of its documents keeps it, the rule of sentence-transformers' paraphrase
  mining, but computed exactly and never past the threshold.

Pairs come out once each (``left < right``), without self-pairs, ordered by score descending, then by
``left``, then ``right`` (positions in the input matrix).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np

from .errors import SemsearchError, choice
from .similarity import cosine, inverse_norms

if TYPE_CHECKING:
    import torch

#: The default cosine threshold, for all-MiniLM-L6-v2 embeddings. Chosen on the STS benchmark's train and
#: dev splits (7,249 scored pairs): the cosine that best separates pairs whose gold score is >= 4.0
#: ("equivalent up to unimportant details") from the rest, by F1, is 0.795; rounded to 0.80. On the
#: held-out test split it gives precision 0.63, recall 0.71 (F1 0.66). STSb pairs were picked to be related,
#: so this is the line between "the same content" and "on the same topic", the question dedupe asks.
#: ``python benchmarks/mining.py --only threshold`` redoes the measurement. Other models need their own.
DEFAULT_THRESHOLD = 0.80

_UNIT_ROUNDOFF = {"float32": 2.0 ** -24, "bfloat16": 2.0 ** -8, "float16": 2.0 ** -11}
# Exact scores are rounded to 12 decimals: identical vectors then score exactly 1.0 (float64 rounding
# would leave 0.9999999999999998 and a threshold of 1 would miss them), far below any threshold's meaning.
_DECIMALS = 12
_CPU_BLOCK_CAP = 4096   # rows per block on CPU: larger blocks gain nothing and cost memory
_GPU_BLOCK_CAP = 32768


class Keep(str, Enum):
    """Which document of a group of duplicates to keep."""

    FIRST = "first"      # the earliest (corpus order, or row-id order of an index)
    LONGEST = "longest"  # the longest text (ties: the earliest)


@dataclass(frozen=True)
class Pair:
    """Two documents (positions, ``left < right``) and their cosine similarity."""

    left: int
    right: int
    score: float


@dataclass(frozen=True)
class Pairs:
    """All pairs with cosine >= ``threshold``, as parallel arrays in output order."""

    left: np.ndarray     # int64, positions, left < right
    right: np.ndarray    # int64
    scores: np.ndarray   # float64, exact cosine of the float32 vectors
    threshold: float
    n: int               # documents mined
    top_k: int | None = None
    candidates: int = 0  # pairs re-scored exactly (>= threshold - margin): what the fast search let through
    dtype: str = "float32"  # precision of the block search
    chunk_size: int = 0

    def __len__(self) -> int:
        return len(self.scores)

    def __iter__(self) -> Iterator[Pair]:
        for left, right, score in zip(self.left.tolist(), self.right.tolist(), self.scores.tolist()):
            yield Pair(left, right, score)

    def __getitem__(self, item: int) -> Pair:
        return Pair(int(self.left[item]), int(self.right[item]), float(self.scores[item]))


@dataclass(frozen=True)
class Group:
    """One connected component of the pair graph, with the document kept for it."""

    representative: int
    members: np.ndarray  # int64 positions of the other documents, by score to the representative, desc
    scores: np.ndarray   # float64 cosine of each member to the representative (may be < threshold in a chain)
    links: np.ndarray    # int64: for each member, the partner of its best-scoring pair
    link_scores: np.ndarray  # float64: that pair's score (>= threshold)

    @property
    def size(self) -> int:
        return 1 + len(self.members)


@dataclass(frozen=True)
class KeepPlan:
    """Which documents to keep and which to drop: one representative per group, all singletons kept."""

    groups: list[Group]
    kept: np.ndarray          # int64 positions, ascending
    dropped: np.ndarray       # int64 positions, ascending
    duplicate_of: np.ndarray  # int64: the representative of each dropped document
    scores: np.ndarray        # float64: its cosine to that representative
    keep: Keep = Keep.FIRST


# ----------------------------------------------------------------------------------------------- checks
def check_threshold(threshold: float) -> float:
    threshold = float(threshold)
    if not -1.0 <= threshold <= 1.0:  # also refuses NaN
        raise SemsearchError(f"threshold must be a cosine between -1 and 1, got {threshold}")
    return threshold


def _check_positive(name: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise SemsearchError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _as_matrix(embeddings) -> np.ndarray:
    if hasattr(embeddings, "detach"):  # a torch tensor
        embeddings = embeddings.detach().float().cpu().numpy()
    matrix = np.asarray(embeddings)
    if matrix.ndim != 2:
        if matrix.size == 0:
            return np.zeros((0, 0), dtype=np.float32)
        raise SemsearchError(f"embeddings must be a 2-d matrix (documents × dimensions), got shape {matrix.shape}")
    if not np.issubdtype(matrix.dtype, np.floating):
        raise SemsearchError(f"embeddings must be floating point, got {matrix.dtype}")
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    if matrix.size and not np.isfinite(matrix).all():
        row = int(np.argwhere(~np.isfinite(matrix))[0, 0])
        raise SemsearchError(f"embeddings hold NaN or infinity (first at row {row})")
    return matrix


# ----------------------------------------------------------------------------------------------- memory
def available_memory(device: "torch.device | str | None" = None) -> int:
    """Bytes free for mining: CUDA free device memory, else MemAvailable of /proc/meminfo."""
    import torch

    device = torch.device(device or "cpu")
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 2 << 30


def auto_chunk_size(n: int, device: "torch.device | str | None" = None, itemsize: int = 2) -> int:
    """Rows per block so that one block and its temporaries take a bounded share of free memory.

    A block holds ``chunk²`` scores plus, at worst, a boolean mask and a copy of its candidate rows:
    about ``2·itemsize + 1`` bytes per score. CPU: an eighth of MemAvailable, at most 4096 rows;
    CUDA: half the free device memory, at most 32768 rows.
    """
    import torch

    device = torch.device(device or "cpu")
    share = 0.5 if device.type == "cuda" else 0.125
    cap = _GPU_BLOCK_CAP if device.type == "cuda" else _CPU_BLOCK_CAP
    chunk = int(math.sqrt(share * available_memory(device) / (2 * itemsize + 1)))
    chunk = max(256, min(cap, chunk) // 256 * 256)
    return max(1, min(n, chunk))


def rounding_margin(dtype: str, dimension: int) -> float:
    """A bound on |low-precision dot product − exact| for unit vectors, with a 25 % safety factor.

    Inputs rounded to ``dtype`` (relative error u each) change a product of unit vectors by at most
    (2u + u²)·Σ|x_i·y_i| <= 2u + u² (Cauchy–Schwarz); float32 accumulation adds <= d·2⁻²⁴; rounding the
    result to ``dtype`` adds <= u. bfloat16: 0.0147, float16: 0.0019, float32: 3e-5 (d = 384).
    """
    u = _UNIT_ROUNDOFF[dtype]
    return 1.25 * (2 * u + u * u + dimension * 2.0 ** -24 + u) + 1e-6


def _fast_dtype(device: "torch.device") -> str:
    """float16 on CUDA; on CPU bfloat16 when it multiplies faster than float32 here (AVX512-BF16, AMX)."""
    import time

    import torch

    if device.type == "cuda":
        return "float16"
    global _CPU_DTYPE
    if _CPU_DTYPE is None:
        a, b = torch.randn(512, 384), torch.randn(2048, 384)
        timings = {}
        for name in ("float32", "bfloat16"):
            x, y = a.to(getattr(torch, name)), b.to(getattr(torch, name))
            x @ y.T  # warm-up
            started = time.perf_counter()
            for _ in range(3):
                x @ y.T
            timings[name] = time.perf_counter() - started
        _CPU_DTYPE = "bfloat16" if timings["bfloat16"] < 0.7 * timings["float32"] else "float32"
    return _CPU_DTYPE


_CPU_DTYPE: str | None = None
_DEVICE_PATH_ON_CPU = False  # tests set it to run the CUDA code path (torch operations) on a CPU


# ----------------------------------------------------------------------------------------------- mining
def mine_pairs(embeddings, threshold: float = DEFAULT_THRESHOLD, *, top_k: int | None = None,
               chunk_size: int | None = None, device: str | None = None, dtype: str | None = None,
               progress: Callable[[int], None] | None = None, max_pairs: int | None = None,
               split: int | None = None) -> Pairs:
    """Every pair of rows of ``embeddings`` whose cosine similarity is >= ``threshold``.

    Args:
        embeddings: ``(n, d)`` float matrix (numpy or torch); rows need not be normalised (zero rows
            score 0 with everything).
        threshold: cosine in [-1, 1].
        top_k: keep only each document's ``k`` best partners (a pair stays when either side keeps it).
        chunk_size: rows (and columns) per block; default from free memory (:func:`auto_chunk_size`).
        device: ``"cpu"``, ``"cuda"``...; default CUDA when available.
        dtype: precision of the block search (``"float32"``, ``"bfloat16"``, ``"float16"``); default the
            fastest for the device. The result is the same for every choice.
        progress: called with the number of pairs compared after each block (they sum to n(n−1)/2).
        max_pairs: refuse (raise) rather than exceed this many pairs; default from free memory. This is
            a guard against running out of memory, never a silent cap.
        split: only the pairs ``(i, j)`` with ``i < split <= j``: two blocks stacked, mined against each
            other and not within themselves (distributed block-pair mining).
    """
    import torch

    threshold = check_threshold(threshold)
    top_k = _check_positive("top_k", top_k)
    chunk_size = _check_positive("chunk size", chunk_size)
    if dtype is not None and dtype not in _UNIT_ROUNDOFF:
        raise SemsearchError(f"dtype must be one of {', '.join(_UNIT_ROUNDOFF)}, got {dtype!r}")
    matrix = _as_matrix(embeddings)
    n = len(matrix)
    if split is not None and not 0 <= split <= n:
        raise SemsearchError(f"split must lie between 0 and {n}, got {split}")
    torch_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    empty = np.zeros(0, dtype=np.int64)
    if n < 2 or split in (0, n):
        return Pairs(empty, empty, np.zeros(0), threshold, n, top_k, 0, dtype or "float32", chunk_size or n)
    if dtype is None:  # small inputs: float32 is instant, skip the probe
        dtype = "float32" if n < 2048 and torch_device.type == "cpu" else _fast_dtype(torch_device)
    itemsize = 4 if dtype == "float32" else 2
    chunk = min(n, chunk_size or auto_chunk_size(n, torch_device, itemsize))
    if max_pairs is None:
        max_pairs = max(1 << 20, available_memory("cpu") // 2 // 40)  # ~40 bytes per pair while sorting

    previous = None
    if torch_device.type == "cuda":  # keep fp16 reductions in fp32 so rounding_margin holds
        previous = torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction
        torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
    try:
        with torch.inference_mode():
            try:
                miner = _run(matrix, threshold, top_k, chunk, torch_device, dtype, max_pairs, progress, split=split)
            except _MarginExceeded:  # this backend rounds worse than assumed: search in float32 instead
                dtype = "float32"
                miner = _run(matrix, threshold, top_k, chunk, torch_device, dtype, max_pairs, progress,
                             check=False, split=split)
    finally:
        if previous is not None:
            torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = previous
    left, right, scores = miner.result()
    return Pairs(left, right, scores, threshold, n, top_k, miner.candidates, dtype, chunk)


class _MarginExceeded(Exception):
    pass


def _run(matrix, threshold, top_k, chunk, device, dtype, max_pairs, progress, check=True,
         split: int | None = None) -> "_BlockMiner":
    miner = _BlockMiner(matrix, threshold, top_k, chunk, device, dtype, max_pairs)
    miner.checked = not check
    n = len(matrix)
    row_stop = n if split is None else split
    for start in range(0, row_stop, chunk):
        for column in range(start if split is None else split, n, chunk):
            compared = miner.block(start, column, row_stop)
            if progress is not None:
                progress(compared)
        miner.maybe_prune()
    return miner


_LOWER: dict[str, "torch.Tensor"] = {}


def _lower_triangle(r: int, device: "torch.device") -> "torch.Tensor":
    """An ``r × r`` (or larger) mask of the diagonal and below; kept for the next run when small (16 MB at
    most): many runs on small matrices (partitioned mining, one per cell) would otherwise rebuild it each time."""
    import torch

    mask = _LOWER.get(str(device))
    if mask is not None and mask.shape[0] >= r:
        return mask
    mask = torch.ones(r, r, dtype=torch.bool, device=device).tril_()
    if r <= _CPU_BLOCK_CAP:
        _LOWER[str(device)] = mask
    return mask


class _BlockMiner:
    """The state of one :func:`mine_pairs` run: the low-precision copy, the exact norms, the pairs so far.

    After each block's matrix product and row maximum (large, multi-threaded torch operations), the few
    rows holding candidates are handled in numpy on CPU: small torch operations each pay a parallel-region
    start-up that, on a busy machine, costs milliseconds. On CUDA everything stays on the device.
    """

    def __init__(self, matrix: np.ndarray, threshold: float, top_k: int | None, chunk: int,
                 device: "torch.device", dtype: str, max_pairs: int) -> None:
        import torch

        self.n, self.d = matrix.shape
        self.threshold, self.top_k, self.chunk, self.max_pairs = threshold, top_k, chunk, max_pairs
        self.device, self.dtype = device, dtype
        self.cpu = device.type == "cpu" and not _DEVICE_PATH_ON_CPU
        self.exact = matrix  # float32, as given
        self.inverse_norms = inverse_norms(matrix)
        self.low = torch.empty(self.n, self.d, dtype=getattr(torch, dtype), device=device)
        step = max(1, (1 << 20) // max(1, self.d))  # slices: no n × d temporaries in float64
        for s in range(0, self.n, step):
            unit = matrix[s:s + step].astype(np.float64) * self.inverse_norms[s:s + step, None]
            self.low[s:s + step] = torch.from_numpy(unit).to(device=device, dtype=self.low.dtype)
        if not self.cpu:
            self.exact_device = torch.from_numpy(matrix).to(device)
            self.inverse_device = torch.from_numpy(self.inverse_norms).to(device)
        self.margin = rounding_margin(dtype, self.d)
        self.floor = threshold - self.margin
        self.int_dtype = torch.int32 if dtype == "float32" else torch.int16
        # Non-negative floats sort like their bit patterns: compare integers, a cheaper pass than floats.
        # Block scores lie on the low-precision grid, so "score >= floor" is "score >= floor rounded to
        # the grid" whichever way the rounding goes (up: the same test; down: a looser one).
        self.bits = None
        if self.floor > 0:
            self.bits = int(torch.tensor(self.floor, dtype=self.low.dtype).view(self.int_dtype))
        self.lower = None  # cached strict-lower-triangle mask of a full diagonal block
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.count = 0
        self.candidates = 0
        self.prune_at = max(1 << 20, 4 * self.n * top_k) if top_k else None
        self.checked = False

    def block(self, start: int, column: int, row_stop: int | None = None) -> int:
        """Search rows [start, start+chunk) (not past ``row_stop``) against columns [column, column+chunk);
        returns pairs compared."""
        import torch

        rows = slice(start, start + self.chunk if row_stop is None else min(start + self.chunk, row_stop))
        scores = self.low[rows] @ self.low[column:column + self.chunk].T
        r, c = scores.shape
        diagonal = column == start
        if diagonal:  # only j > i: blank the diagonal and below
            if self.lower is None or self.lower.shape[0] < r:
                self.lower = _lower_triangle(r, self.device)
            scores.masked_fill_(self.lower[:r, :c], float("-inf"))
        if not self.checked:
            self._check_rounding(scores, start, column)
        rows, cols = self._candidates_cpu(scores) if self.cpu else self._candidates_device(scores)
        if len(rows):
            left, right = rows + start, cols + column
            exact = self._rescore(left, right)
            keep = exact >= self.threshold
            self.candidates += len(exact)
            if keep.any():
                self._add(left[keep], right[keep], exact[keep])
        return r * (r - 1) // 2 if diagonal else r * c

    def _as_float32(self, bits: np.ndarray) -> np.ndarray:
        """Float32 values of low-precision numbers given by their bit patterns (exact conversion)."""
        if self.dtype == "float32":
            return bits.view(np.float32)
        if self.dtype == "bfloat16":  # bfloat16 is the upper half of a float32
            return (bits.astype(np.int32) << 16).view(np.float32)
        return bits.view(np.float16).astype(np.float32)

    def _candidates_cpu(self, scores: "torch.Tensor") -> tuple[np.ndarray, np.ndarray]:
        """(row, column) of every score >= floor in the block (numpy after the row maximum)."""
        ints = scores.view(self.int_dtype)
        if self.bits is not None:
            hot = np.flatnonzero(ints.amax(dim=1).numpy() >= self.bits)
        else:
            hot = np.flatnonzero(scores.amax(dim=1).float().numpy() >= self.floor)
        if not len(hot):
            return hot, hot
        sub = ints.numpy()[hot]
        mask = (sub >= self.bits) if self.bits is not None else (self._as_float32(sub) >= self.floor)
        if self.top_k is not None and int(mask.sum()) > (len(hot) + sub.shape[1]) * self.top_k:
            mask &= self._top_k_mask(self._as_float32(sub), mask)
        rows, cols = np.nonzero(mask)
        return hot[rows], cols.astype(np.int64)

    def _top_k_mask(self, values: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Within a dense block: candidates among their row's or column's k best (with the rounding margin).

        A document's k-th best score within one block is a lower bound of its k-th best overall; what
        falls below it (less twice the margin, for rounding on both sides) on both sides can never be kept.
        """
        values = np.where(mask, values, np.float32(-np.inf))
        r, c = values.shape
        kr, kc = min(self.top_k, c), min(self.top_k, r)
        row_kth = np.partition(values, c - kr, axis=1)[:, c - kr] - 2 * self.margin
        col_kth = np.partition(values, r - kc, axis=0)[r - kc, :] - 2 * self.margin
        return (values >= row_kth[:, None]) | (values >= col_kth[None, :])

    def _candidates_device(self, scores: "torch.Tensor") -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_candidates_cpu` with torch operations, for CUDA."""
        import torch

        if self.bits is not None:
            hot = torch.nonzero(scores.view(self.int_dtype).amax(dim=1) >= self.bits).flatten()
        else:
            hot = torch.nonzero(scores.amax(dim=1) >= self.floor).flatten()
        if hot.numel() == 0:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty
        sub = scores.index_select(0, hot)
        mask = (sub.view(self.int_dtype) >= self.bits) if self.bits is not None else (sub >= self.floor)
        if self.top_k is not None and int(mask.sum()) > (len(hot) + sub.shape[1]) * self.top_k:
            values = torch.where(mask, sub.float(), torch.full_like(sub, float("-inf"), dtype=torch.float32))
            k = self.top_k
            row_kth = values.topk(min(k, values.shape[1]), dim=1).values[:, -1:] - 2 * self.margin
            col_kth = values.topk(min(k, values.shape[0]), dim=0).values[-1:, :] - 2 * self.margin
            mask &= (values >= row_kth) | (values >= col_kth)
        where = torch.nonzero(mask)
        return hot[where[:, 0]].cpu().numpy(), where[:, 1].cpu().numpy()

    def _check_rounding(self, scores: "torch.Tensor", start: int, column: int) -> None:
        """Verify on sample entries of the first block that the fast product stays within the margin."""
        r, c = scores.shape
        rng = np.random.default_rng(0)
        i, j = rng.integers(0, r, 256), rng.integers(0, c, 256)
        if self.cpu:
            fast = self._as_float32(scores.view(self.int_dtype).numpy()[i, j]).astype(np.float64)
        else:
            import torch

            index = torch.from_numpy(i * c + j).to(self.device)
            fast = scores.flatten().index_select(0, index).double().cpu().numpy()
        valid = np.isfinite(fast)
        exact = self._rescore(i[valid] + start, j[valid] + column, rounded=False)
        self.checked = len(exact) > 0
        error = float(np.abs(fast[valid] - exact).max()) if len(exact) else 0.0
        if error > self.margin:  # a backend that accumulates in low precision: never lose a pair
            raise _MarginExceeded(f"{self.dtype} block product off by {error:.2e} > margin {self.margin:.2e}")

    def _rescore(self, left: np.ndarray, right: np.ndarray, rounded: bool = True) -> np.ndarray:
        """Exact cosine: float64 dot products of the float32 rows over float64 norms, in slices."""
        out = np.empty(len(left), dtype=np.float64)
        step = max(1, (1 << 20) // max(1, self.d))
        for s in range(0, len(left), step):
            a, b = left[s:s + step], right[s:s + step]
            if self.cpu:
                dots = np.einsum("ij,ij->i", self.exact[a].astype(np.float64), self.exact[b].astype(np.float64))
            else:
                import torch

                ta, tb = torch.from_numpy(a).to(self.device), torch.from_numpy(b).to(self.device)
                rows_a = self.exact_device.index_select(0, ta).double()
                dots = (rows_a * self.exact_device.index_select(0, tb).double()).sum(dim=1).cpu().numpy()
            out[s:s + step] = dots * self.inverse_norms[a] * self.inverse_norms[b]
        return np.clip(np.round(out, _DECIMALS), -1.0, 1.0) if rounded else out

    def _add(self, left: np.ndarray, right: np.ndarray, scores: np.ndarray) -> None:
        self.parts.append((left.astype(np.int64), right.astype(np.int64), scores))
        self.count += len(scores)
        if self.top_k is None and self.count > self.max_pairs:
            raise SemsearchError(
                f"more than {self.max_pairs:,} pairs have cosine >= {self.threshold} (memory would run out "
                f"before the end); raise the threshold, or cap each document with top_k")

    def maybe_prune(self) -> None:
        """With top_k: drop pairs neither document can keep any more, when they pile up."""
        if self.top_k is None or self.count <= self.prune_at:
            return
        left, right, scores = self._concat()
        keep = select_top_k(left, right, scores, self.top_k)
        self.parts = [(left[keep], right[keep], scores[keep])]
        self.count = int(keep.sum())
        self.prune_at = max(self.prune_at, 2 * self.count)

    def _concat(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self.parts:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
        left, right, scores = (np.concatenate(p) for p in zip(*self.parts))
        return left, right, scores

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        left, right, scores = self._concat()
        if self.top_k is not None:
            keep = select_top_k(left, right, scores, self.top_k)
            left, right, scores = left[keep], right[keep], scores[keep]
        order = np.lexsort((right, left, -scores))
        return left[order], right[order], scores[order]


def exact_scores(embeddings, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Exact cosine (float64) of the given pairs of rows, as :func:`mine_pairs` reports them."""
    matrix = _as_matrix(embeddings)
    left, right = np.asarray(left, dtype=np.int64), np.asarray(right, dtype=np.int64)
    out = np.empty(len(left), dtype=np.float64)
    step = max(1, (1 << 24) // max(1, matrix.shape[1]))
    for s in range(0, len(left), step):
        out[s:s + step] = cosine(matrix[left[s:s + step]], matrix[right[s:s + step]])
    return np.clip(np.round(out, _DECIMALS), -1.0, 1.0)


def select_top_k(left: np.ndarray, right: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the pairs that one of their documents ranks among its ``k`` best.

    Each document orders its pairs by score descending, then by partner position; a pair is kept when its
    rank is < k for either document. Adding pairs never raises a rank, so this is safe to apply to a
    partial set (pruning) and exact on the full one.
    """
    m = len(scores)
    if m == 0:
        return np.zeros(0, dtype=bool)
    doc = np.concatenate([left, right])
    partner = np.concatenate([right, left])
    score = np.concatenate([scores, scores])
    order = np.lexsort((partner, -score, doc))
    sorted_doc = doc[order]
    starts = np.flatnonzero(np.r_[True, sorted_doc[1:] != sorted_doc[:-1]])
    sizes = np.diff(np.r_[starts, len(sorted_doc)])
    rank = np.arange(len(sorted_doc)) - np.repeat(starts, sizes)
    keep = np.zeros(m, dtype=bool)
    chosen = order[rank < k]
    keep[chosen % m] = True
    return keep


# ----------------------------------------------------------------------------------------------- clusters
def find_clusters(pairs: Pairs) -> list[np.ndarray]:
    """Connected components of the pair graph (union-find), each as sorted positions, ordered by first member.

    Documents in no pair are not listed.
    """
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    for a, b in zip(pairs.left.tolist(), pairs.right.tolist()):
        parent.setdefault(a, a)
        parent.setdefault(b, b)
        ra, rb = find(a), find(b)
        if ra != rb:
            if rb < ra:
                ra, rb = rb, ra
            parent[rb] = ra  # the smaller position is the root: a root is its component's first member
    groups: dict[int, list[int]] = {}
    for x in parent:
        groups.setdefault(find(x), []).append(x)
    return [np.array(sorted(groups[root]), dtype=np.int64) for root in sorted(groups)]


def plan_keep(pairs: Pairs, embeddings, keep: Keep | str = Keep.FIRST,
              lengths: Sequence[int] | None = None,
              similarity: Callable[[np.ndarray, int], np.ndarray] | None = None) -> KeepPlan:
    """Group the pairs, keep one representative per group (and every document in no pair), drop the rest.

    ``keep="longest"`` needs ``lengths`` (text length of every document). Each dropped document comes with
    its exact cosine to the representative and its best pair (a chain can join documents that are not
    near-duplicates of the representative themselves). ``similarity(members, representative)`` replaces that
    cosine of rows of ``embeddings`` (documents of several vectors: see :func:`document_pairs`).
    """
    keep = choice(Keep, keep, "keep rule")
    if keep is Keep.LONGEST and lengths is None:
        raise SemsearchError("keep='longest' needs the text lengths of the documents")
    matrix = _as_matrix(embeddings) if pairs.n and similarity is None else np.zeros((pairs.n, 0), np.float32)
    if len(matrix) != pairs.n:
        raise SemsearchError(f"the pairs were mined from {pairs.n} documents but {len(matrix)} embeddings were given")
    best_partner: dict[int, tuple[float, int]] = {}
    for a, b, s in zip(pairs.left.tolist(), pairs.right.tolist(), pairs.scores.tolist()):
        # pairs are in output order, so the first seen per document is its best (ties: smaller partner)
        best_partner.setdefault(a, (s, b))
        best_partner.setdefault(b, (s, a))
    groups: list[Group] = []
    dropped, duplicate_of, drop_scores = [], [], []
    for component in find_clusters(pairs):
        if keep is Keep.LONGEST:
            lens = np.asarray([lengths[i] for i in component])
            representative = int(component[np.argmax(lens)])  # argmax: first of the longest
        else:
            representative = int(component[0])
        members = component[component != representative]
        scores = similarity(members, representative) if similarity is not None else \
            cosine(matrix[members], matrix[representative])
        order = np.lexsort((members, -scores))
        members, scores = members[order], scores[order]
        links = np.array([best_partner[m][1] for m in members.tolist()], dtype=np.int64)
        link_scores = np.array([best_partner[m][0] for m in members.tolist()], dtype=np.float64)
        groups.append(Group(representative, members, scores, links, link_scores))
        dropped.extend(members.tolist())
        duplicate_of.extend([representative] * len(members))
        drop_scores.extend(scores.tolist())
    order = np.argsort(np.asarray(dropped, dtype=np.int64), kind="stable")
    dropped_arr = np.asarray(dropped, dtype=np.int64)[order]
    kept = np.setdiff1d(np.arange(pairs.n, dtype=np.int64), dropped_arr)
    return KeepPlan(groups, kept, dropped_arr, np.asarray(duplicate_of, dtype=np.int64)[order],
                    np.asarray(drop_scores, dtype=np.float64)[order], keep)


def document_pairs(pairs: Pairs, owners: np.ndarray, documents: int) -> Pairs:
    """Pairs of documents from pairs of their vectors (``owners[i]``: the document of vector ``i``): a document
    pair scores as its best vector pair, pairs inside one document go. Exact when ``pairs`` holds every vector
    pair >= the threshold (a document pair is >= it exactly when some pair of its vectors is). ``top_k`` is
    applied to the documents' pairs."""
    owners = np.asarray(owners, dtype=np.int64)
    a, b = owners[pairs.left], owners[pairs.right]
    left, right = np.minimum(a, b), np.maximum(a, b)
    keep = left != right
    left, right, scores = left[keep], right[keep], pairs.scores[keep]
    order = np.lexsort((-scores, right, left))  # per document pair, its best score first
    left, right, scores = left[order], right[order], scores[order]
    first = np.r_[True, (left[1:] != left[:-1]) | (right[1:] != right[:-1])] if len(left) else np.zeros(0, bool)
    left, right, scores = left[first], right[first], scores[first]
    if pairs.top_k is not None:
        chosen = select_top_k(left, right, scores, pairs.top_k)
        left, right, scores = left[chosen], right[chosen], scores[chosen]
    order = np.lexsort((right, left, -scores))
    return Pairs(left[order], right[order], scores[order], pairs.threshold, documents, pairs.top_k, pairs.candidates,
                 pairs.dtype, pairs.chunk_size)


def max_pair_similarity(embeddings, owners: np.ndarray) -> Callable[[np.ndarray, int], np.ndarray]:
    """``similarity(members, representative)`` for :func:`plan_keep`: each member document's best cosine between
    one of its vectors and one of the representative's."""
    matrix = _as_matrix(embeddings)
    owners = np.asarray(owners, dtype=np.int64)

    def similarity(members: np.ndarray, representative: int) -> np.ndarray:
        rep_rows = matrix[owners == representative]
        out = np.empty(len(members), dtype=np.float64)
        for i, member in enumerate(np.asarray(members).tolist()):
            rows = matrix[owners == member]
            out[i] = max(float(cosine(rows, r).max()) for r in rep_rows)
        return np.clip(np.round(out, _DECIMALS), -1.0, 1.0)

    return similarity


__all__ = ["DEFAULT_THRESHOLD", "document_pairs", "max_pair_similarity",
           "Keep", "Pair", "Pairs", "Group", "KeepPlan", "mine_pairs", "select_top_k",
           "find_clusters", "plan_keep", "exact_scores", "auto_chunk_size", "available_memory", "rounding_margin",
           "check_threshold"]
