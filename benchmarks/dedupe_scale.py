"""Benchmark: partitioned dedupe against the exact miner at 100k and 1M documents, and the largest that fits.

    python benchmarks/dedupe_scale.py           # the full run; writes benchmarks/results/dedupe-scale.md
    python benchmarks/dedupe_scale.py --quick   # small sizes (a few minutes): checks the script, writes nothing
    python benchmarks/dedupe_scale.py --help    # sizes, sets, sample sizes, the big case

Sets (384-d float32 unit vectors, seeded, built once into benchmarks/.cache/):
  clustered  synthetic: topics of about 1,000 documents (cosine to the topic centre 0.58-0.74, so two documents
             of a topic score 0.3-0.6), 30% of the documents perturbed copies of another of their chunk of
             1M (cosine to it about 0.78-0.999); made a million rows at a time, so 10M fits in memory
  realish    mining.py's set: every real all-MiniLM-L6-v2 sentence embedding (41,073), then perturbed copies
             of them (benchmarks/_data.py `realish`, cosine 0.71-0.98 to the source)

For each set and size, each step in a fresh subprocess (wall, CPU and peak memory are that process's):
  partitioned  semsearch.partitioned.mine_partitioned with its defaults (√n cells, spill 3, margin 0.3)
  exact        semsearch.mining.mine_pairs, the whole run while n <= --exact-full; above it, --exact-rows / 2
               and --exact-rows random rows mined against all n rows (mine_pairs with split): their difference
               is the cost per row, the estimate fixed cost + per-row cost × (n-1)/2: an extrapolation,
               marked as such in the table
  recall       found / exact pairs: over all pairs when exact ran in full; above that, over the pairs of
               --recall-rows sampled documents (their exact partners from a float32 scan of all rows,
               re-scored exactly), the measure `semsearch dedupe --partitioned` prints
The big case (--big, default 10,000,000 clustered) runs partitioned only, if the matrix takes at most half of
the memory available; otherwise the largest halving of it that does, and the table says so.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _data  # noqa: E402

RESULTS = _data.ROOT / "benchmarks" / "results" / "dedupe-scale.md"
THRESHOLD = 0.8
CHUNK = 1_000_000
D = 384


# ----------------------------------------------------------------------------------------------- data
def clustered_file(n: int, seed: int = 0) -> Path:
    """The clustered synthetic set of size n as .npy (written a million rows at a time)."""
    path = _data.CACHE / f"clustered-{n}.npy"
    if path.is_file():
        return path
    _data.CACHE.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    topics = max(1, n // 1000)
    centres = rng.standard_normal((topics, D)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    tmp = path.with_suffix(".tmp.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, D))
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        dups = int(0.3 * m)
        base = m - dups
        x = centres[rng.integers(0, topics, base)] + _unit(rng.standard_normal((base, D), dtype=np.float32)) * \
            rng.uniform(0.9, 1.4, (base, 1)).astype(np.float32)
        x = _unit(x)
        y = x[rng.integers(0, base, dups)] + _unit(rng.standard_normal((dups, D), dtype=np.float32)) * \
            rng.uniform(0.05, 0.8, (dups, 1)).astype(np.float32)
        out[start:start + m] = np.vstack([x, _unit(y)])[rng.permutation(m)]
    out.flush()
    del out
    os.replace(tmp, path)
    return path


def realish_file(n: int, real_limit: int | None) -> Path:
    """mining.py's real-ish set of size n (from the first ``real_limit`` real sentences in --quick)."""
    suffix = f"-r{real_limit}" if real_limit else ""
    path = _data.CACHE / f"realish-{n}{suffix}.npy"
    if not path.is_file():
        np.save(path, _data.realish(real_vectors(real_limit), n))
    return path


def real_vectors(limit: int | None) -> np.ndarray:
    if limit is None:
        return _data.real_embeddings()[1]
    path = _data.CACHE / f"real-minilm-first{limit}.npy"
    if not path.is_file():
        from semsearch.encoder import Encoder

        print(f"embedding the first {limit} unique sentences (cached) ...", file=sys.stderr)
        _data.CACHE.mkdir(parents=True, exist_ok=True)
        np.save(path, Encoder.load(device="cpu").encode(_data.unique_sentences()[:limit], batch_size=64))
    return np.load(path)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ----------------------------------------------------------------------------------------------- children
def peak_rss_mb() -> float:
    """VmHWM: peak resident memory of this process image (mapped matrix pages included), MB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(step: str, matrix: str, out: str, options: dict) -> None:
    """One measured step in this fresh process; prints a JSON line, saves pairs (as codes) to ``out``."""
    import torch  # noqa: F401  (imported before the clock starts)

    from semsearch.mining import mine_pairs
    from semsearch.partitioned import mine_partitioned

    x = np.load(matrix, mmap_mode="r" if options.get("mmap") else None)
    n = len(x)
    base = peak_rss_mb()
    result: dict = {"n": n}
    if step == "exact-sample":
        return exact_sample(x, options["rows"], base)
    wall, cpu = time.perf_counter(), time.process_time()
    if step == "partitioned":
        pairs, cells = mine_partitioned(x, THRESHOLD, spill=options.get("spill"))
        result["note"] = cells.describe(n)
        result["comparisons"] = cells.comparisons
    elif step == "exact":
        pairs = mine_pairs(x, THRESHOLD)
        result["note"] = f"{pairs.dtype} blocks of {pairs.chunk_size}"
    else:
        raise SystemExit(f"unknown step {step}")
    result.update(wall=time.perf_counter() - wall, cpu=time.process_time() - cpu, peak_mb=peak_rss_mb(),
                  base_mb=base, pairs=len(pairs))
    np.save(out, pairs.left * n + pairs.right)
    print(json.dumps(result))


def exact_sample(x: np.ndarray, rows: int, base: float) -> None:
    """The exact miner's cost at n from two samples: rows/2 and rows random rows mined against all n rows.

    Each sampled row costs n comparisons; the whole triangle is (n − 1)/2 such rows. The two runs give the
    cost per row (their difference) apart from the fixed cost of a run (preparing the n-row matrix), so the
    estimate is fixed + per-row × (n − 1)/2 rather than a plain multiple of one run.
    """
    from semsearch.mining import mine_pairs

    n = len(x)
    mine_pairs(np.ascontiguousarray(x[:4096]), THRESHOLD)  # warm-up off the clock: dtype probe, first kernels
    times = []
    for count in (rows // 2, rows):
        chosen = np.sort(np.random.default_rng(count).choice(n, count, replace=False))
        stacked = np.vstack([x[chosen], x])  # prepared off the clock
        wall, cpu = time.perf_counter(), time.process_time()
        pairs = mine_pairs(stacked, THRESHOLD, split=count)
        times.append((count, time.perf_counter() - wall, time.process_time() - cpu))
        del stacked
    (r1, w1, c1), (r2, w2, c2) = times
    result = {"n": n, "peak_mb": peak_rss_mb(), "base_mb": base, "pairs": 0,
              "note": f"{r1:,} and {r2:,} rows × {n:,} ({w1:.1f} s, {w2:.1f} s), {pairs.dtype} blocks of "
                      f"{pairs.chunk_size}"}
    for key, t1, t2 in (("wall", w1, w2), ("cpu", c1, c2)):
        per_row = (t2 - t1) / (r2 - r1)
        if per_row <= 0:  # noise swamped the difference: scale the larger run instead
            result[key] = t2 * (n - 1) / 2 / r2
        else:
            result[key] = max(0.0, t1 - per_row * r1) + per_row * (n - 1) / 2
    print(json.dumps(result))


def recall_child(matrix: str, found: str, exact: str | None, options: dict) -> None:
    """Recall of the partitioned pairs: against all exact pairs, or over sampled documents' pairs."""
    from semsearch.mining import exact_scores
    from semsearch.similarity import normalise_rows

    x = np.load(matrix, mmap_mode="r")
    n = len(x)
    codes = np.load(found)
    if exact is not None:
        truth = np.load(exact)
        hit = np.isin(truth, codes)
        print(json.dumps({"scope": "all pairs", "exact": int(len(truth)), "found": int(hit.sum()),
                          "false": int((~np.isin(codes, truth)).sum())}))
        return
    rows = np.sort(np.random.default_rng(2).choice(n, min(n, options["recall_rows"]), replace=False))
    sample = normalise_rows(x[rows])
    partners: list[np.ndarray] = []
    for start in range(0, n, 1 << 18):  # a float32 scan of all rows, slack for rounding, exact re-scoring
        block = normalise_rows(x[start:start + (1 << 18)])
        r, c = np.nonzero(sample @ block.T >= THRESHOLD - 1e-4)
        a, b = rows[r], c.astype(np.int64) + start
        a, b = a[a != b], b[a != b]
        keep = exact_scores(x, a, b) >= THRESHOLD
        partners.append(np.minimum(a[keep], b[keep]) * n + np.maximum(a[keep], b[keep]))
    truth = np.unique(np.concatenate(partners))
    hit = np.isin(truth, codes)
    print(json.dumps({"scope": f"pairs of {len(rows):,} sampled documents", "exact": int(len(truth)),
                      "found": int(hit.sum())}))


def spawn(*args: str) -> dict:
    started = time.perf_counter()
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(args[:2])} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["load"] = load
    result["process_s"] = time.perf_counter() - started
    return result


# ----------------------------------------------------------------------------------------------- cases
def run_set(name: str, path: Path, args) -> list[dict]:
    n = len(np.load(path, mmap_mode="r"))
    mmap = json.dumps({"mmap": n > CHUNK, "spill": args.spill})
    work = _data.CACHE / "dedupe-scale"
    work.mkdir(parents=True, exist_ok=True)
    found = work / f"{name}-{n}-partitioned.npy"
    rows = []
    part = spawn("--child", "partitioned", str(path), str(found), mmap)
    rows.append({"set": name, "method": "partitioned", **part})
    print(f"  {name} n={n:,} partitioned: {part['wall']:.1f} s, {part['pairs']:,} pairs, "
          f"peak {part['peak_mb']:.0f} MB", file=sys.stderr)
    if n > args.partitioned_only_above:
        recall = spawn("--recall", str(path), str(found), "-", json.dumps({"recall_rows": args.recall_rows}))
        rows[-1]["recall"] = recall
        return rows
    if n <= args.exact_full:
        truth = work / f"{name}-{n}-exact.npy"
        exact = spawn("--child", "exact", str(path), str(truth), mmap)
        exact["extrapolated"] = False
        recall = spawn("--recall", str(path), str(found), str(truth), "{}")
    else:
        exact = spawn("--child", "exact-sample", str(path), "-", json.dumps({"rows": min(n, args.exact_rows)}))
        exact["extrapolated"] = True
        recall = spawn("--recall", str(path), str(found), "-", json.dumps({"recall_rows": args.recall_rows}))
    rows.append({"set": name, "method": "exact", **exact})
    rows[0]["recall"] = recall
    print(f"  {name} n={n:,} exact: {exact['wall']:.1f} s{' (sample)' if exact['extrapolated'] else ''}; "
          f"recall {recall['found']:,}/{recall['exact']:,}", file=sys.stderr)
    return rows


def fits(n: int) -> bool:
    with open("/proc/meminfo") as fh:
        available = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("MemAvailable:"))
    return n * D * 4 <= 0.5 * available


# ----------------------------------------------------------------------------------------------- report
def setup_lines(args) -> list[str]:
    import torch
    from importlib.metadata import version

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               "unknown CPU")
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    return [f"- Machine: {cpu}, {os.cpu_count()} cores, {memory:.0f} GiB RAM, no GPU; Linux {platform.release()}; "
            f"load average at the start {' / '.join(f'{v:.1f}' for v in args.load_at_start)}.",
            f"- Python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"numpy {np.__version__}, faiss {version('faiss-cpu')}.",
            f"- Threshold {THRESHOLD}. Partitioned: `mine_partitioned` "
            + ("defaults" if args.spill is None else f"defaults but `spill={args.spill}`")
            + " (√n k-means cells, 10 rounds on 32 points per cell, spill up to "
            f"{3 if args.spill is None else args.spill} cells within 0.3 of the proven border distance, exact miner "
            "per cell over the pairs with a document at home there). "
            "Exact: `mine_pairs` (bfloat16 blocks where faster, float64 re-scoring).",
            f"- Each step runs once in a fresh subprocess that loads the matrix from .npy (memory-mapped above "
            f"{CHUNK:,} rows); time covers mining only. Peak = the process's VmHWM (Python, torch, the matrix, "
            "mapped pages included); base = VmHWM once the matrix is loaded.",
            f"- Exact above {args.exact_full:,} documents is **extrapolated**: {args.exact_rows // 2:,} and "
            f"{args.exact_rows:,} random rows mined against all rows; their difference gives the cost per row, "
            "the estimate is the fixed cost + per-row cost × (n−1)/2 (the whole triangle); its peak memory is "
            "that run's (the matrix plus a stacked copy of it with the sampled rows). Recall above that size is "
            "over the pairs of "
            f"{args.recall_rows:,} sampled documents (found / exact), as `semsearch dedupe --partitioned` prints it."]


def report(rows: list[dict], args, notes: list[str]) -> list[str]:
    lines = ["# Partitioned vs exact dedupe (issue 16)", "",
             "Produced by `python benchmarks/dedupe_scale.py` (seeded). Setup first; wall times on this shared "
             "2-core VM depend on what else ran (load averages given); CPU seconds are steadier.", "",
             *setup_lines(args), "",
             "| set | n | method | wall s | CPU s | peak MB | base MB | pairs | recall vs exact | exact / partitioned "
             "wall | notes | load at start |",
             "|---|---:|---|---:|---:|---:|---:|---:|---|---:|---|---|"]
    by_case: dict[tuple, dict] = {}
    for row in rows:
        by_case.setdefault((row["set"], row["n"]), {})[row["method"]] = row
    for (name, n), case in by_case.items():
        part, exact = case.get("partitioned"), case.get("exact")
        for method, row in (("partitioned", part), ("exact", exact)):
            if row is None:
                continue
            wall, cpu = row["wall"], row["cpu"]
            mark = " (extrapolated)" if row.get("extrapolated") else ""
            recall = ""
            if method == "partitioned" and "recall" in row:
                r = row["recall"]
                recall = f"{r['found'] / max(1, r['exact']):.4f} ({r['found']:,}/{r['exact']:,}, {r['scope']})"
                if r.get("false"):
                    recall += f"; {r['false']} false pairs!"
            ratio = ""
            if method == "partitioned" and exact is not None:
                ratio = f"{exact['wall'] / row['wall']:.1f}×" + \
                    (" (extrapolated exact)" if exact.get("extrapolated") else "")
            pairs = f"{row['pairs']:,}" if method == "partitioned" or not row.get("extrapolated") else "—"
            lines.append(f"| {name} | {n:,} | {method}{mark} | {wall:,.1f} | {cpu:,.1f} | {row['peak_mb']:,.0f} | "
                         f"{row['base_mb']:,.0f} | {pairs} | {recall} | {ratio} | {row.get('note', '')} | "
                         f"{row['load']} |")
    lines += ["", *notes, "", f"Load average after: {' / '.join(f'{v:.1f}' for v in os.getloadavg())}.", ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes; writes nothing")
    parser.add_argument("--sets", nargs="+", default=["clustered", "realish"], choices=["clustered", "realish"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[100_000, 1_000_000])
    parser.add_argument("--exact-full", type=int, default=100_000, help="largest n for a whole exact run")
    parser.add_argument("--exact-rows", type=int, default=16_384, help="sampled rows of the exact extrapolation")
    parser.add_argument("--recall-rows", type=int, default=2_000, help="sampled documents: recall above --exact-full")
    parser.add_argument("--big", type=int, default=10_000_000, help="clustered, partitioned only (0: skip)")
    parser.add_argument("--spill", type=int, default=None,
                        help="cells a document may spill to (default: the library's); results go to "
                             "dedupe-scale-spill<S>.md")
    parser.add_argument("--big-only", action="store_true", help="only the big case (no 100k/1M sets)")
    parser.add_argument("--child", nargs=4, metavar=("STEP", "MATRIX", "OUT", "OPTIONS"), help=argparse.SUPPRESS)
    parser.add_argument("--recall", nargs=4, metavar=("MATRIX", "FOUND", "EXACT", "OPTIONS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.load_at_start = os.getloadavg()
    if args.child:
        step, matrix, out, options = args.child
        return child(step, matrix, out, json.loads(options))
    if args.recall:
        matrix, found, exact, options = args.recall
        return recall_child(matrix, found, None if exact == "-" else exact, json.loads(options))
    real_limit = None
    if args.quick:
        args.sizes, args.exact_full, args.exact_rows, args.recall_rows, args.big = [20_000, 60_000], 20_000, 2_048, \
            300, 120_000
        real_limit = 1_000
    args.partitioned_only_above = max(args.sizes)
    rows: list[dict] = []
    notes: list[str] = []
    for name in ([] if args.big_only else args.sets):
        for n in args.sizes:
            path = clustered_file(n) if name == "clustered" else realish_file(n, real_limit)
            rows.extend(run_set(name, path, args))
    if args.big:
        n = args.big
        while n > max(args.sizes) and not fits(n):
            notes.append(f"- {n:,} clustered vectors ({n * D * 4 / 2**30:.1f} GiB) take more than half the memory "
                         "available: halved.")
            n //= 2
        if n > max(args.sizes):
            rows.extend(run_set("clustered", clustered_file(n), args))
    lines = report(rows, args, notes)
    print("\n".join(lines))
    if not args.quick:
        out = RESULTS if args.spill is None else RESULTS.with_name(f"dedupe-scale-spill{args.spill}.md")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(lines), encoding="utf-8")
        print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
