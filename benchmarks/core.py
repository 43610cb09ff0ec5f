"""Core-path benchmark: encode and index throughput, warm query latency, cold query time.

Each semsearch measure is taken beside its reference in the same run, on the same data:

* encode throughput: ``Encoder.encode`` vs sentence-transformers ``encode`` (same model folder, batch 32),
  over all unique STSb sentences (train + dev + test);
* index throughput: ``index_corpus`` of the same sentences (JSONL read, hashing, encoding, FAISS and
  SQLite writes, commit with fsync and checksums), as a fraction of our pure encode throughput;
* warm query latency at two index sizes: ``Index.open(path).search(text, k=10)``, one query at a time,
  vs sentence-transformers ``encode`` + FAISS ``IndexFlatIP`` + texts from a Python list;
* cold query: the wall time of one ``semsearch query`` process, beside ``python -c "import torch, transformers"``.

Usage::

    python benchmarks/core.py            # full run, writes benchmarks/results/core.md (minutes)
    python benchmarks/core.py --quick    # small sizes, to check the script; writes nothing by default

Embeddings used to *build* the latency indexes are cached under ``benchmarks/.cache/`` (git-ignored);
nothing that is timed reads the cache.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
STSB_FILES = [DATA / "stsb" / f"stsb-en-{split}.csv" for split in ("train", "dev", "test")]
SNLI_FILES = [DATA / "nli" / name for name in ("snli-validation.tsv", "snli-test.tsv")]
QUERY_FILE = DATA / "nli" / "snli-test.tsv"
CACHE = ROOT / "benchmarks" / ".cache"
RESULTS = ROOT / "benchmarks" / "results" / "core.md"
SEED = 0
BATCH_SIZE = 32
K = 10


# ---------------------------------------------------------------------------------------------- data
def read_stsb() -> list[str]:
    """All unique STSb sentences, train then dev then test, in first-seen order."""
    sentences: list[str] = []
    for path in STSB_FILES:
        with path.open(newline="", encoding="utf-8") as fh:
            for row in csv.reader(fh):
                sentences += row[:2]
    return list(dict.fromkeys(sentences))


def read_snli(path: Path, column: str) -> list[str]:
    with path.open(newline="", encoding="utf-8") as fh:
        return [row[column] for row in csv.DictReader(fh, delimiter="\t")]


@dataclass
class Data:
    stsb: list[str]  # encode / index throughput set
    documents: list[str]  # real documents for the latency indexes: STSb, then SNLI sentences
    queries: list[str]  # SNLI test hypotheses that are in no index
    warmup: list[str]


def load_data(n_queries: int, n_warmup: int) -> Data:
    missing = [p for p in STSB_FILES + SNLI_FILES if not p.is_file()]
    if missing:
        sys.exit(f"benchmarks/core.py: needs {missing[0]} (the shared data folder beside the checkout)")
    stsb = read_stsb()
    snli: list[str] = []
    for path in SNLI_FILES:
        snli += read_snli(path, "premise") + read_snli(path, "hypothesis")
    in_stsb = set(stsb)
    candidates = [q for q in dict.fromkeys(read_snli(QUERY_FILE, "hypothesis")) if q not in in_stsb]
    picked = random.Random(SEED).sample(candidates, n_queries + n_warmup)
    taken = set(picked)
    documents = [t for t in dict.fromkeys(stsb + snli) if t not in taken]
    return Data(stsb, documents, picked[n_warmup:], picked[:n_warmup])


def filler_vectors(count: int, dimension: int, seed: int = SEED) -> np.ndarray:
    """Random unit vectors that stand in for documents we do not spend minutes encoding.

    Only used to grow an index past the real sentences we have: FAISS flat search scans every vector, so
    its cost depends on the count and the dimension, not on the values. A random direction in 384-d scores
    about 0 ± 0.05 against any query, so fillers seldom reach a top 10 and the hits stay real documents.
    """
    vectors = np.random.default_rng(seed).standard_normal((count, dimension), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def cached_embeddings(encoder, texts: Sequence[str]) -> np.ndarray:
    """Our encoder's vectors for ``texts``, from ``benchmarks/.cache/`` when an earlier run made them."""
    key = hashlib.sha256(json.dumps([encoder.spec.to_dict(), list(texts)]).encode()).hexdigest()[:16]
    path = CACHE / f"embeddings-{len(texts)}-{key}.npy"
    if path.is_file():
        return np.load(path)
    print(f"  encoding {len(texts)} documents for the latency indexes (cached for later runs) ...", file=sys.stderr)
    vectors = encoder.encode(texts, batch_size=BATCH_SIZE, show_progress=sys.stderr.isatty())
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


class PrecomputedEncoder:
    """Stands in for the real encoder while *building* a latency index: same spec, vectors looked up.

    The manifest records the real model, so ``Index.search`` later loads and runs the real encoder.
    """

    def __init__(self, spec, table: dict[str, np.ndarray]) -> None:
        self.spec = spec
        self.table = table

    @property
    def dimension(self) -> int:
        return self.spec.dimension

    def encode(self, texts: Sequence[str], **_) -> np.ndarray:
        return np.stack([self.table[t] for t in texts]).astype(np.float32)


def build_latency_index(path: Path, encoder, texts: list[str], vectors: np.ndarray, size: int):
    """An index of ``size`` documents: the real ones first, then filler (see :func:`filler_vectors`)."""
    from semsearch.corpus import Record
    from semsearch.index import IndexWriter

    real = min(size, len(texts))
    table = dict(zip(texts[:real], vectors[:real]))
    fillers = size - real
    filler_texts = [f"filler document {i}: no text was encoded for this vector" for i in range(fillers)]
    table.update(zip(filler_texts, filler_vectors(fillers, encoder.dimension)))
    records = [Record(text=t, id=f"real-{i}", line=i + 1) for i, t in enumerate(texts[:real])]
    records += [Record(text=t, id=f"filler-{i}", line=real + i + 1) for i, t in enumerate(filler_texts)]
    with IndexWriter(path, PrecomputedEncoder(encoder.spec, table)) as writer:
        writer.add(records, chunk_size=8192)
    return real, fillers


# ---------------------------------------------------------------------------------------------- timing
def best_rate(count: int, seconds: list[float]) -> float:
    """Items per second of the fastest repeat (on a shared machine, noise only ever slows a run down)."""
    return count / min(seconds)


def percentiles(ms: list[float]) -> tuple[float, float]:
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@dataclass
class Results:
    rows: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, measure: str, ours: str, reference: str, ratio: str, goal: str) -> None:
        self.rows.append((measure, ours, reference, ratio, goal))
        print(f"  {measure}: {ours} | {reference} | {ratio}", file=sys.stderr)


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def throughput(data: Data, encode_n: int, repeats: int, results: Results, workdir: Path):
    from sentence_transformers import SentenceTransformer

    from semsearch.api import index_corpus
    from semsearch.encoder import Encoder, bundled_model_path

    sentences = data.stsb[:encode_n]
    corpus = workdir / "stsb.jsonl"
    with corpus.open("w", encoding="utf-8") as fh:
        for i, text in enumerate(sentences):
            fh.write(json.dumps({"id": f"stsb-{i}", "text": text}, ensure_ascii=False) + "\n")

    ours = Encoder.load(device="cpu")
    reference = SentenceTransformer(str(bundled_model_path()), device="cpu")
    warm = data.stsb[-256:]
    ours.encode(warm, batch_size=BATCH_SIZE, show_progress=False)
    reference.encode(warm, batch_size=BATCH_SIZE, show_progress_bar=False)

    times: dict[str, list[float]] = {"reference": [], "ours": [], "index": []}
    for r in range(repeats):  # interleaved, so a burst of load from elsewhere hits all three alike
        print(f"  throughput repeat {r + 1}/{repeats} over {len(sentences)} sentences ...", file=sys.stderr)
        out = {}
        runs = {
            "reference": lambda: out.__setitem__("ref", reference.encode(
                sentences, batch_size=BATCH_SIZE, show_progress_bar=False, convert_to_numpy=True)),
            "ours": lambda: out.__setitem__("ours", ours.encode(sentences, batch_size=BATCH_SIZE, show_progress=False)),
        }
        for name in (runs if r % 2 == 0 else reversed(runs)):  # alternate which encoder goes first
            times[name].append(timed(runs[name]))
        target = workdir / f"throughput-{r}"
        times["index"].append(timed(lambda: index_corpus(corpus, target, encoder=ours, batch_size=BATCH_SIZE)))
    diff = float(np.abs(out["ours"] - out["ref"]).max())
    dtype = out["ours"].dtype

    ref_rate, our_rate, index_rate = (best_rate(len(sentences), times[k]) for k in ("reference", "ours", "index"))
    results.add("Encode throughput, sentences/s", f"{our_rate:.0f}", f"{ref_rate:.0f}",
                f"{our_rate / ref_rate:.2f}", f"≥ 1.0 ({verdict(our_rate >= ref_rate)})")
    results.add("`index` throughput, docs/s (vs our pure encode)", f"{index_rate:.0f}", f"{our_rate:.0f}",
                f"{index_rate / our_rate:.2f}", f"≥ 0.9 ({verdict(index_rate >= 0.9 * our_rate)})")
    results.add("Vectors: max abs diff vs sentence-transformers", f"{diff:.1e} ({dtype})", "", "",
                f"≤ 1e-5 ({verdict(diff <= 1e-5)})")
    results.notes.append(
        "Throughput runs (s), in order — " + "; ".join(
            f"{name}: " + ", ".join(f"{t:.1f}" for t in ts) for name, ts in times.items()))
    del reference
    return ours


def latency(data: Data, ours, sizes: list[int], real_cap: int | None, results: Results, workdir: Path) -> Path:
    import faiss
    from sentence_transformers import SentenceTransformer

    from semsearch.encoder import bundled_model_path
    from semsearch.index import Index

    texts = data.documents[: real_cap or None][: max(sizes)]
    vectors = cached_embeddings(ours, texts)
    reference_model = SentenceTransformer(str(bundled_model_path()), device="cpu")
    first_path = None
    for size in sizes:
        path = workdir / f"latency-{size}"
        first_path = first_path or path
        real, fillers = build_latency_index(path, ours, texts, vectors, size)
        results.notes.append(f"{size:,}-document index: {real:,} real sentences (encoded), "
                             f"{fillers:,} filler vectors (`filler_vectors`: random unit vectors, not encoded).")
        flat = faiss.IndexFlatIP(ours.dimension)
        flat.add(np.concatenate([vectors[:real], filler_vectors(fillers, ours.dimension)]))
        doc_texts = texts[:real] + [f"filler {i}" for i in range(fillers)]

        def reference_search(query: str) -> list[str]:
            q = reference_model.encode(query, convert_to_numpy=True, show_progress_bar=False)
            _, ids = flat.search(q.reshape(1, -1), K)
            return [doc_texts[i] for i in ids[0]]

        index = Index.open(path)
        for query in data.warmup:  # the first search loads the index's encoder
            index.search(query, k=K)
            reference_search(query)
        mine, theirs = [], []
        for n, query in enumerate(data.queries):  # interleaved, alternating which goes first
            pair = [(mine, lambda: index.search(query, k=K)), (theirs, lambda: reference_search(query))]
            for bucket, fn in (pair if n % 2 == 0 else pair[::-1]):
                bucket.append(timed(fn) * 1000)
        index.close()
        (m50, m95), (r50, r95) = percentiles(mine), percentiles(theirs)
        label = f"{size // 1000}k" if size % 1000 == 0 else str(size)
        goal50 = f"≤ 8 ms ({verdict(m50 <= 8)})" if size == 10_000 else ""
        results.add(f"Query p50 at {label} docs, ms (warm, k={K})", f"{m50:.2f}", f"{r50:.2f}",
                    f"{r50 / m50:.2f}", goal50)
        results.add(f"Query p95 at {label} docs, ms", f"{m95:.2f}", f"{r95:.2f}", f"{r95 / m95:.2f}", "")
    return first_path


def cold_query(index_path: Path, query: str, runs: int, results: Results) -> None:
    exe = Path(sys.executable).with_name("semsearch")
    command = [str(exe)] if exe.is_file() else [sys.executable, "-m", "semsearch"]
    ours = command + ["query", "--index", str(index_path), query]
    bare = [sys.executable, "-c", "import torch, transformers"]
    mine, imports = [], []
    for _ in range(runs):
        for bucket, argv in ((imports, bare), (mine, ours)):
            start = time.perf_counter()
            done = subprocess.run(argv, capture_output=True, text=True)
            bucket.append(time.perf_counter() - start)
            if done.returncode != 0:
                sys.exit(f"benchmarks/core.py: {' '.join(argv)} failed:\n{done.stderr}")
    ours_s, bare_s = statistics.median(mine), statistics.median(imports)
    results.add(f"Cold `semsearch query`, s (median of {runs})", f"{ours_s:.2f}",
                f"{bare_s:.2f} (`import torch, transformers`)", f"+{ours_s - bare_s:.2f} s over the imports", "")


# ---------------------------------------------------------------------------------------------- report
def load_average() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = [f"Python {platform.python_version()}"]
    for package in ("torch", "transformers", "sentence-transformers", "faiss-cpu", "numpy", "semsearch"):
        try:
            parts.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            pass
    import sqlite3

    parts.append(f"SQLite {sqlite3.sqlite_version}")
    return ", ".join(parts)


def render(args, data: Data, results: Results, load_before: str, load_after: str, encode_n: int) -> str:
    import torch

    lines = [
        "# Core-path benchmark" + (" (quick run: small sizes, not for comparison)" if args.quick else ""),
        "",
    ]
    busiest = max(float(load_before.split(" / ")[0]), float(load_after.split(" / ")[0]))
    if busiest > 0.5 * (os.cpu_count() or 1):
        lines += [f"> **Busy machine** (1-min load average up to {busiest:.1f} on {os.cpu_count()} cores): timings"
                  " are inflated and noisy; rerun on a quiet machine before quoting them.", ""]
    lines += [
        "## Setup",
        "",
        f"- Run: {datetime.now(timezone.utc).isoformat(timespec='seconds')}, `python benchmarks/core.py"
        + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "") + "`",
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores; torch threads {torch.get_num_threads()}; CPU only",
        f"- Load average (1/5/15 min) before: {load_before}; after: {load_after}"
        " (other work on the machine slows runs down; both sides are timed interleaved)",
        f"- {versions()}",
        f"- Model: all-MiniLM-L6-v2, the bundled copy ({args.spec_line}); fp32; batch size {BATCH_SIZE} for both",
        f"- Encode / index data: {encode_n:,} unique STSb sentences (train + dev + test, first-seen order);"
        " both encoders sort by length before batching",
        f"- Queries: {len(data.queries)} SNLI test hypotheses (seed {SEED}) in no index, after {len(data.warmup)}"
        " warm-up queries; one query at a time",
        "",
        "What each timing includes:",
        "",
        "- **Encode**: `Encoder.encode(texts, batch_size=32)` vs `SentenceTransformer.encode(texts, batch_size=32)`,"
        " models loaded and warmed up first; tokenising, padding, forward, pooling, normalising, copy to numpy."
        " Best of the repeats.",
        "- **Index**: `semsearch.api.index_corpus(jsonl, path, encoder=warm_encoder)` — reading the JSONL, content"
        " hashes, encoding, FAISS adds, SQLite inserts, commit (fsync, checksums, manifest). Model load excluded,"
        " as in pure encode. Best of the repeats.",
        "- **Query (semsearch)**: `Index.open(path)` once, then `index.search(text, k=10)` per query: encode the"
        " query, FAISS `IDMap2,Flat` search, SQLite fetch of the hits. Reference: sentence-transformers"
        " `encode(text)` + FAISS `IndexFlatIP` search + texts from a Python list, same vectors, same queries."
        " The two alternate query by query.",
        "- **Cold query**: wall time of `semsearch query --index PATH TEXT` in a new process (Python start, imports,"
        " model load, index open, one search, printing) on the first latency index, page cache warm; beside"
        " `python -c \"import torch, transformers\"` in the same run. transformers imports lazily, so that floor"
        " leaves out what loading a BERT pulls in (`modeling_bert`, `torch._dynamo`, `torch.distributed.tensor`, ...).",
        "",
        "## Results",
        "",
        "| Measure | semsearch | Reference | Ratio (> 1: semsearch better) | Goal |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {' | '.join(row)} |" for row in results.rows]
    lines += ["", "Notes:", ""] + [f"- {note}" for note in results.notes]
    lines += ["- Measured elsewhere with the same model (issue 2), for context: txtai 9.5 ms, "
              "sentence-transformers + FAISS flat 11.4 ms, chromadb 11.5 ms per warm query at 10k documents."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, to check that the script works")
    parser.add_argument("--encode-n", type=int, help="sentences for the throughput runs [all unique STSb]")
    parser.add_argument("--sizes", help="comma-separated index sizes for query latency [10000,100000]")
    parser.add_argument("--real-docs", type=int, help="cap on real documents in the latency indexes [all]")
    parser.add_argument("--queries", type=int, help="timed queries [300]")
    parser.add_argument("--warmup", type=int, help="warm-up queries [30]")
    parser.add_argument("--repeats", type=int, help="throughput repeats, best kept [2]")
    parser.add_argument("--cold-runs", type=int, help="cold query runs, median kept [3]")
    parser.add_argument("--threads", type=int,
                        help="torch threads for both sides (and OMP_NUM_THREADS for the cold runs) [torch's default]")
    parser.add_argument("--out", type=Path, help=f"markdown file to write [{RESULTS.relative_to(ROOT)}; quick: none]")
    args = parser.parse_args(argv)
    quick = {"encode_n": 1000, "sizes": "1000,10000", "real_docs": 3000, "queries": 50, "warmup": 10,
             "repeats": 1, "cold_runs": 1}
    full = {"encode_n": None, "sizes": "10000,100000", "real_docs": None, "queries": 300, "warmup": 30,
            "repeats": 2, "cold_runs": 3}
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    out = args.out or (None if args.quick else RESULTS)

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # for the cold-query processes
    load_before = load_average()
    data = load_data(args.queries, args.warmup)
    encode_n = min(args.encode_n or len(data.stsb), len(data.stsb))
    sizes = [int(s) for s in args.sizes.split(",")]
    results = Results()
    with tempfile.TemporaryDirectory(prefix="semsearch-bench-") as tmp:
        workdir = Path(tmp)
        print("encode and index throughput ...", file=sys.stderr)
        ours = throughput(data, encode_n, args.repeats, results, workdir)
        spec = ours.spec
        args.spec_line = (f"{spec.pooling.value} pooling, normalised, {spec.dimension}-d, max length {spec.max_length},"
                          f" fingerprint {spec.fingerprint[:19]}")
        print("warm query latency ...", file=sys.stderr)
        first_index = latency(data, ours, sizes, args.real_docs, results, workdir)
        print("cold query ...", file=sys.stderr)
        cold_query(first_index, data.queries[0], args.cold_runs, results)
    report = render(args, data, results, load_before, load_average(), encode_n)
    print(report)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report)
        print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
