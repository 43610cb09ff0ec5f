"""Benchmark: how an exact flat scan picks its candidates, quiet and beside a CPU hog.

    python benchmarks/flat_scan.py           # writes benchmarks/results/flat-scan.md
    python benchmarks/flat_scan.py --quick   # 20k vectors, 3 repeats; writes nothing

Stored vectors: the 100,000 all-MiniLM-L6-v2 document vectors `benchmarks/serve.py` caches (random unit
vectors in --quick); queries: its held-out query vectors (random in --quick). Each cell is the median of the
repeats of one call asking for k = 19 (10 + the re-scoring's extra), in this process:

  FAISS per query   IndexFlatIP.search at FAISS's defaults: below 333 queries it reads every vector once per query
  FAISS, 1k blocks  one matrix product (BLAS threshold lowered), FAISS's default blocks of 1,024 stored vectors
  FAISS, one pass   what VectorStore does (`semsearch.vectors._one_pass`): one product in blocks of up to 32 MB
  torch             `semsearch.vectors._torch_candidates` (`use_torch_scans`, what `semsearch serve` uses)
  store             VectorStore.search end to end (candidates, float64 re-scoring), FAISS and torch; the two
                    return the same ids and scores (checked here on every query)

"beside a CPU hog": two processes spinning on the two cores for the whole measurement.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _data  # noqa: E402
from _report import cpu_model, load_average, versions  # noqa: E402

RESULTS = _data.ROOT / "benchmarks" / "results" / "flat-scan.md"
K = 19
BATCHES = (1, 8, 64)


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def vectors(quick: bool) -> tuple[np.ndarray, np.ndarray, str]:
    docs, queries = _data.CACHE / "serve-docs-100000.npy", _data.CACHE / "serve-queries-1000.npy"
    if not quick and docs.is_file() and queries.is_file():
        return (np.ascontiguousarray(np.load(docs), dtype=np.float32),
                np.ascontiguousarray(np.load(queries)[:max(BATCHES)], dtype=np.float32),
                "100,000 all-MiniLM-L6-v2 document vectors and 64 query vectors from benchmarks/.cache (serve.py)")
    if not quick:
        raise SystemExit("run benchmarks/serve.py once first (it caches the vectors), or use --quick")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20_000 + max(BATCHES), 384)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x[max(BATCHES):], x[:max(BATCHES)], "20,000 random unit vectors (--quick)"


def median_ms(call, repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return 1000 * float(np.median(times))


def measure(stored: np.ndarray, queries: np.ndarray, repeats: int) -> dict[str, list[float]]:
    import faiss

    from semsearch import vectors as v

    flat = faiss.IndexFlatIP(stored.shape[1])
    flat.add(stored)
    store = v.VectorStore.create(stored.shape[1], "flat")
    store.add(np.arange(len(stored), dtype=np.int64), stored)
    defaults = faiss.cvar.distance_compute_blas_threshold, faiss.cvar.distance_compute_blas_database_bs

    def faiss_blocks(q):
        faiss.cvar.distance_compute_blas_threshold = 1
        try:
            flat.search(q, K)
        finally:
            faiss.cvar.distance_compute_blas_threshold = defaults[0]

    def faiss_one_pass(q):
        with v._one_pass(len(q), stored.shape[1], len(stored)):
            flat.search(q, K)

    def store_torch(q):
        v.use_torch_scans()
        try:
            return store.search(q, 10)
        finally:
            v.use_torch_scans(False)

    v.use_torch_scans()  # torch imported before the clock starts
    v.use_torch_scans(False)
    rows: dict[str, list[float]] = {name: [] for name in
                                    ("FAISS per query", "FAISS, 1k blocks", "FAISS, one pass", "torch",
                                     "store, FAISS", "store, torch")}
    for n in BATCHES:
        q = queries[:n]
        rows["FAISS per query"].append(median_ms(lambda: flat.search(q, K), repeats))
        rows["FAISS, 1k blocks"].append(median_ms(lambda: faiss_blocks(q), repeats) if n > 1 else float("nan"))
        rows["FAISS, one pass"].append(median_ms(lambda: faiss_one_pass(q), repeats) if n > 1 else float("nan"))
        v.use_torch_scans()
        rows["torch"].append(median_ms(lambda: v._torch_candidates(stored, q, K), repeats))
        v.use_torch_scans(False)
        rows["store, FAISS"].append(median_ms(lambda: store.search(q, 10), repeats))
        rows["store, torch"].append(median_ms(lambda: store_torch(q), repeats))
        by_faiss, by_torch = store.search(q, 10), store_torch(q)
        assert all(np.array_equal(a, b) for a, b in zip(by_faiss, by_torch)), "torch and FAISS scans differ"
    assert (faiss.cvar.distance_compute_blas_threshold, faiss.cvar.distance_compute_blas_database_bs) == defaults
    return rows


def table(rows: dict[str, list[float]]) -> list[str]:
    lines = ["| candidates | " + " | ".join(f"{n} {'query' if n == 1 else 'queries'} ms" for n in BATCHES) + " |",
             "|---|" + "---:|" * len(BATCHES)]
    for name, cells in rows.items():
        lines.append(f"| {name} | " + " | ".join("—" if c != c else f"{c:,.1f}" for c in cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    stored, queries, described = vectors(args.quick)
    load_before = load_average()
    quiet = measure(stored, queries, repeats)
    hog = [multiprocessing.Process(target=_spin, args=(600.0,), daemon=True) for _ in range(2)]
    for process in hog:
        process.start()
    try:
        busy = measure(stored, queries, repeats)
    finally:
        for process in hog:
            process.terminate()
            process.join()
    lines = ["# Exact flat scans: how the candidates are picked", "",
             "Produced by `python benchmarks/flat_scan.py`. Setup first.", "",
             f"- Machine: {cpu_model()}; load average before {load_before}, after {load_average()}; "
             "nothing else ran beside it (the load after includes the benchmark's own hog).",
             f"- Software: {versions(('semsearch', 'faiss-cpu', 'torch', 'numpy'))}.",
             f"- Vectors: {described}; k = {K}; median of {repeats} calls; FAISS and torch on all cores.", "",
             "## Quiet", "", *table(quiet), "", "## Beside a CPU hog (two spinning processes)", "", *table(busy), "",
             "The store rows return identical ids and scores with either candidate picker (asserted on every batch).",
             ""]
    print("\n".join(lines))
    if not args.quick:
        RESULTS.write_text("\n".join(lines), encoding="utf-8")
        print(f"wrote {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
