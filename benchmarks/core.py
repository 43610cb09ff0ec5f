"""Core-path benchmark: encode and index throughput, warm query latency and recall against peers, the same
latency with every core busy, and a cold ``semsearch query``.

Each semsearch measure is taken beside its references in the same run, on the same data:

* encode throughput: ``Encoder.load(backend="onnx").encode`` vs sentence-transformers ``encode`` (same model
  folder, batch 32, fp32), over all unique STSb sentences (train + dev + test), and the max abs difference;
* index throughput: ``index_corpus`` of the same sentences, as a fraction of our pure encode throughput;
* warm query latency and recall@10 at two index sizes, one query at a time, semsearch (``Index.search``,
  onnx backend, exact flat) beside sentence-transformers + FAISS ``IndexFlatIP``, txtai (its defaults) and
  chromadb (its defaults), queries interleaved; recall@10 against exact search over the same vectors;
* the same at the first size while one busy process per core runs (started and stopped here, bounded);
* cold query: ``semsearch query`` in a new process, median of N, beside ``python -c "import torch"``, the
  same command with ``--backend torch``, and a ``-X importtime`` summary of the onnx one.

Usage::

    python benchmarks/core.py            # full run, writes benchmarks/results/core.md (see the README for time)
    python benchmarks/core.py --quick    # small sizes, to check the script; writes nothing by default

Needs the test and bench extras (sentence-transformers, txtai, chromadb). Document vectors (ours, equal to
sentence-transformers' to 1e-5) and txtai's built indexes are cached under ``benchmarks/.cache/``
(git-ignored); nothing that is timed reads the cache.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import multiprocessing
import os
import random
import re
import shutil
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import cpu_model, load_average, versions  # noqa: E402

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
CORE_PACKAGES = ("torch", "transformers", "sentence-transformers", "onnxruntime", "tokenizers", "faiss-cpu",
                    "numpy", "txtai", "chromadb", "semsearch")
HOG_LIMIT_S = 900  # a busy process ends by itself after this, whatever happens to the script


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
    real: list[str]  # real sentences for the latency indexes: STSb, then SNLI, none of them a query
    queries: list[str]  # SNLI test hypotheses that are in no index
    warmup: list[str]

    def documents(self, size: int, real_cap: int | None = None) -> list[str]:
        """``size`` documents: the real sentences first, then two-sentence documents made of them.

        There are about 40k distinct real sentences; past them each document joins two real sentences drawn
        with a fixed seed (real text, real vectors, not random fillers: an approximate index's recall on
        them means something).
        """
        real = self.real[: min(size, real_cap or len(self.real))]
        rng = random.Random(SEED)
        joined = [f"{real[rng.randrange(len(real))]} {real[rng.randrange(len(real))]}" for _ in range(size - len(real))]
        return real + joined


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
    real = [t for t in dict.fromkeys(stsb + snli) if t not in taken]
    return Data(stsb, real, picked[n_warmup:], picked[:n_warmup])


def cached_embeddings(encoder, texts: Sequence[str]) -> np.ndarray:
    """Our encoder's vectors for ``texts``, from ``benchmarks/.cache/`` when an earlier run made them."""
    key = hashlib.sha256(json.dumps([encoder.spec.to_dict(), list(texts)]).encode()).hexdigest()[:16]
    path = CACHE / f"embeddings-{len(texts)}-{key}.npy"
    if path.is_file():
        return np.load(path)
    print(f"  encoding {len(texts)} documents for the latency indexes (cached for later runs) ...", file=sys.stderr)
    vectors = encoder.encode(texts, batch_size=BATCH_SIZE, show_progress=sys.stderr.isatty())
    CACHE.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp.npy")
    np.save(temporary, vectors)
    os.replace(temporary, path)
    return vectors


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
    latency: list[tuple[str, ...]] = field(default_factory=list)
    hog: list[tuple[str, ...]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    importtime: list[str] = field(default_factory=list)

    def add(self, measure: str, ours: str, reference: str, ratio: str, goal: str) -> None:
        self.rows.append((measure, ours, reference, ratio, goal))
        print(f"  {measure}: {ours} | {reference} | {ratio} | {goal}", file=sys.stderr)


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


# ---------------------------------------------------------------------------------------------- throughput
def throughput(data: Data, encode_n: int, repeats: int, results: Results, workdir: Path):
    from sentence_transformers import SentenceTransformer

    from semsearch.api import index_corpus
    from semsearch.encoder import Encoder, bundled_model_path

    sentences = data.stsb[:encode_n]
    corpus = workdir / "stsb.jsonl"
    with corpus.open("w", encoding="utf-8") as fh:
        for i, text in enumerate(sentences):
            fh.write(json.dumps({"id": f"stsb-{i}", "text": text}, ensure_ascii=False) + "\n")

    ours = Encoder.load(backend="onnx")  # exports the graph first if the cache has none (not timed)
    reference = SentenceTransformer(str(bundled_model_path()), device="cpu")
    warm = data.stsb[-256:]
    ours.encode(warm, batch_size=BATCH_SIZE, show_progress=False)
    reference.encode(warm, batch_size=BATCH_SIZE, show_progress_bar=False)

    times: dict[str, list[float]] = {"reference": [], "ours": [], "index": []}
    out: dict[str, np.ndarray] = {}
    for r in range(repeats):  # interleaved, so a burst of load from elsewhere hits all three alike
        print(f"  throughput repeat {r + 1}/{repeats} over {len(sentences)} sentences ...", file=sys.stderr)
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

    ref_rate, our_rate, index_rate = (best_rate(len(sentences), times[k]) for k in ("reference", "ours", "index"))
    results.add("Encode throughput, sentences/s (onnx backend vs sentence-transformers fp32)", f"{our_rate:.0f}",
                f"{ref_rate:.0f}", f"{our_rate / ref_rate:.2f}", f"≥ 1.5 ({verdict(our_rate >= 1.5 * ref_rate)})")
    results.add("`index` throughput, docs/s (vs our pure encode)", f"{index_rate:.0f}", f"{our_rate:.0f}",
                f"{index_rate / our_rate:.2f}", f"≥ 0.9 ({verdict(index_rate >= 0.9 * our_rate)})")
    results.add("Vectors: max abs diff vs sentence-transformers", f"{diff:.1e} ({out['ours'].dtype})", "", "",
                f"≤ 1e-5 ({verdict(diff <= 1e-5)})")
    results.notes.append(
        "Throughput runs (s), in order — " + "; ".join(
            f"{name}: " + ", ".join(f"{t:.1f}" for t in ts) for name, ts in times.items()))
    del reference
    return ours


# ---------------------------------------------------------------------------------------------- systems
class Semsearch:
    name = "semsearch (onnx, exact flat)"

    def __init__(self, path: Path, ours, texts: list[str], vectors: np.ndarray) -> None:
        from semsearch.corpus import Record
        from semsearch.index import Index, IndexWriter

        records = [Record(text=t, id=f"doc-{i}", line=i + 1) for i, t in enumerate(texts)]
        with IndexWriter(path, PrecomputedEncoder(ours.spec, dict(zip(texts, vectors)))) as writer:
            writer.add(records, chunk_size=8192)
        # No query cache: the hog phase asks the same queries again, and must encode them again.
        self.index = Index.open(path, query_cache=0)
        self.index.use_encoder(ours)

    def search(self, query: str) -> list[int]:
        return [int(hit.id[4:]) for hit in self.index.search(query, k=K)[0]]

    def close(self) -> None:
        self.index.close()


class PrecomputedEncoder:
    """Stands in for the real encoder while *building* an index: same spec, the real vectors looked up.

    The manifest records the real model; every query is embedded by the real encoder.
    """

    def __init__(self, spec, table: dict[str, np.ndarray]) -> None:
        self.spec = spec
        self.table = table

    @property
    def dimension(self) -> int:
        return self.spec.dimension

    def encode(self, texts: Sequence[str], **_) -> np.ndarray:
        return np.stack([self.table[t] for t in texts]).astype(np.float32)


class SentenceTransformersFaiss:
    name = "sentence-transformers + FAISS flat"

    def __init__(self, model, texts: list[str], vectors: np.ndarray) -> None:
        import faiss

        self.model, self.texts = model, texts
        self.flat = faiss.IndexFlatIP(vectors.shape[1])
        self.flat.add(vectors)

    def search(self, query: str) -> list[int]:
        vector = self.model.encode(query, convert_to_numpy=True, show_progress_bar=False)
        _, ids = self.flat.search(vector.reshape(1, -1), K)
        hits = [int(i) for i in ids[0]]
        _ = [self.texts[i] for i in hits]  # the texts, as the others return them
        return hits

    def close(self) -> None:
        pass


class Txtai:
    name = "txtai (defaults)"

    def __init__(self, model_path: Path, texts: list[str]) -> None:
        """txtai's own pipeline end to end: it embeds the documents itself (cached between runs, not timed)."""
        from importlib.metadata import version

        from txtai import Embeddings

        key = hashlib.sha256(json.dumps([version("txtai"), str(model_path), texts]).encode()).hexdigest()[:16]
        folder = CACHE / f"txtai-{len(texts)}-{key}"
        self.embeddings = Embeddings(path=str(model_path), content=True)
        if (folder / "config.json").is_file() or (folder / "config").exists():
            self.embeddings.load(str(folder))
        else:
            print(f"  txtai embeds {len(texts)} documents itself (cached for later runs) ...", file=sys.stderr)
            self.embeddings.index([(i, text, None) for i, text in enumerate(texts)])
            CACHE.mkdir(parents=True, exist_ok=True)
            partial = folder.with_name(folder.name + ".tmp")
            shutil.rmtree(partial, ignore_errors=True)  # ours: an earlier run's unfinished save
            self.embeddings.save(str(partial))
            os.replace(partial, folder)
        build = self.embeddings.config.get("build", {}).get("settings", {})
        self.components = f"{self.embeddings.config.get('backend', '?')} {build.get('components', '')}".strip()

    def search(self, query: str) -> list[int]:
        return [int(hit["id"]) for hit in self.embeddings.search(query, K)]

    def close(self) -> None:
        self.embeddings.close()


class Chroma:
    name = "chromadb (defaults)"

    def __init__(self, model_dir: Path, texts: list[str], vectors: np.ndarray, workdir: Path) -> None:
        """chromadb in memory, documents added with our vectors; queries embedded by its own default function.

        Its default function runs all-MiniLM-L6-v2 on onnxruntime from a downloaded archive; offline, we lay
        out the same files (the model folder's tokenizer files and our exported ``model.onnx``) where it reads
        them, so its own code (tokenising padded to 256, its session, its pooling) runs unchanged.
        """
        import chromadb
        from chromadb.config import Settings
        from chromadb.utils.embedding_functions import ONNXMiniLM_L6_V2

        from semsearch.onnx_export import export_model

        files = workdir / "chroma-model"
        (files / "onnx").mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "special_tokens_map.json", "tokenizer_config.json", "tokenizer.json", "vocab.txt"):
            if not (files / "onnx" / name).exists():
                os.symlink(model_dir / name, files / "onnx" / name)
        if not (files / "onnx" / "model.onnx").exists():
            os.symlink(export_model(model_dir).path, files / "onnx" / "model.onnx")

        class LocalMiniLM(ONNXMiniLM_L6_V2):
            DOWNLOAD_PATH = files

        client = chromadb.EphemeralClient(Settings(anonymized_telemetry=False))
        name = f"bench-{len(texts)}-{os.getpid()}"
        self.collection = client.create_collection(name, embedding_function=LocalMiniLM(), metadata={"hnsw:space": "cosine"})
        step = min(5000, client.get_max_batch_size())
        for start in range(0, len(texts), step):
            stop = start + step
            self.collection.add(ids=[str(i) for i in range(start, min(stop, len(texts)))],
                                embeddings=vectors[start:stop], documents=texts[start:stop])
        self.client = client

    def search(self, query: str) -> list[int]:
        found = self.collection.query(query_texts=[query], n_results=K, include=["documents", "distances"])
        return [int(i) for i in found["ids"][0]]

    def close(self) -> None:
        self.client.delete_collection(self.collection.name)


# ---------------------------------------------------------------------------------------------- latency
def exact_top_k(query_vectors: np.ndarray, vectors: np.ndarray) -> list[set[int]]:
    scores = query_vectors @ vectors.T
    top = np.argpartition(-scores, K - 1, axis=1)[:, :K]
    return [set(map(int, row)) for row in top]


def time_queries(systems: list, queries: list[str], warmup: list[str]) -> tuple[dict[str, list[float]], dict[str, list[list[int]]]]:
    """Per system, the latency of each query (ms) and its hits; systems take turns query by query."""
    for query in warmup:
        for system in systems:
            system.search(query)
    times: dict[str, list[float]] = {s.name: [] for s in systems}
    hits: dict[str, list[list[int]]] = {s.name: [] for s in systems}
    for n, query in enumerate(queries):  # rotate who goes first, so no one always follows the same neighbour
        for system in systems[n % len(systems):] + systems[: n % len(systems)]:
            start = time.perf_counter()
            found = system.search(query)
            times[system.name].append((time.perf_counter() - start) * 1000)
            hits[system.name].append(found)
    return times, hits


def latency(args, data: Data, ours, results: Results, workdir: Path) -> tuple[Path, dict[str, float]]:
    from sentence_transformers import SentenceTransformer

    from semsearch.encoder import bundled_model_path

    model_dir = bundled_model_path()
    sizes = [int(s) for s in args.sizes.split(",")]
    reference_model = SentenceTransformer(str(model_dir), device="cpu")
    query_vectors = ours.encode(data.queries)
    first_index, quiet_p95 = None, {}
    for size in sizes:
        texts = data.documents(size, args.real_docs)
        vectors = cached_embeddings(ours, texts)
        n_real = min(size, args.real_docs or len(data.real), len(data.real))
        results.notes.append(f"{size:,}-document index: {n_real:,} real sentences, {size - n_real:,} two-sentence "
                             "documents (two real sentences joined, seeded).")
        print(f"  building the {size:,}-document indexes ...", file=sys.stderr)
        path = workdir / f"latency-{size}"
        systems = [Semsearch(path, ours, texts, vectors), SentenceTransformersFaiss(reference_model, texts, vectors)]
        if not args.no_peers:
            systems += [Txtai(model_dir, texts), Chroma(model_dir, texts, vectors, workdir)]
        first_index = first_index or path
        truth = exact_top_k(query_vectors, vectors)
        print(f"  timing {len(data.queries)} queries at {size:,} documents ...", file=sys.stderr)
        times, hits = time_queries(systems, data.queries, data.warmup)
        label = f"{size // 1000}k" if size % 1000 == 0 else str(size)
        for system in systems:
            p50, p95 = percentiles(times[system.name])
            recall = np.mean([len(truth[i] & set(h)) / K for i, h in enumerate(hits[system.name])])
            extra = f" ({system.components})" if isinstance(system, Txtai) else ""
            results.latency.append((label, system.name + extra, f"{p50:.2f}", f"{p95:.2f}", f"{recall:.3f}"))
            print(f"  {label} {system.name}: p50 {p50:.2f} p95 {p95:.2f} ms, recall@10 {recall:.3f}", file=sys.stderr)
            if size == sizes[0]:
                quiet_p95[system.name] = p95
        ours50 = percentiles(times[systems[0].name])[0]
        if size == 10_000:
            results.add("Query p50 at 10k docs, ms (warm, exact, k=10)", f"{ours50:.2f}", "", "",
                        f"≤ 3 ms ({verdict(ours50 <= 3)})")
        if size == sizes[0] and args.hog_queries:
            hog(args, systems, data, results, quiet_p95, label)
        for system in systems:
            system.close()
    return first_index, quiet_p95


# ---------------------------------------------------------------------------------------------- CPU hog
def _burn(deadline: float) -> None:
    while time.time() < deadline:
        pass


def hog(args, systems: list, data: Data, results: Results, quiet_p95: dict[str, float], label: str) -> None:
    """The same single queries while one busy process per core runs (all stopped before this returns)."""
    cores = os.cpu_count() or 1
    context = multiprocessing.get_context("fork")
    busy = [context.Process(target=_burn, args=(time.time() + HOG_LIMIT_S,), daemon=True) for _ in range(cores)]
    queries = data.queries[: args.hog_queries]
    print(f"  {len(queries)} queries at {label} with {cores} busy processes ...", file=sys.stderr)
    for process in busy:
        process.start()
    try:
        time.sleep(1.0)  # let the scheduler spread them
        load = os.getloadavg()[0]
        times, _ = time_queries(systems, queries, data.warmup[:3])
    finally:
        for process in busy:
            process.terminate()
        for process in busy:
            process.join(timeout=10)
    for system in systems:
        p50, p95 = percentiles(times[system.name])
        ratio = p95 / quiet_p95[system.name]
        goal = f"≤ 3x ({verdict(ratio <= 3)})" if system is systems[0] else ""
        results.hog.append((system.name, f"{quiet_p95[system.name]:.2f}", f"{p50:.2f}", f"{p95:.2f}", f"{ratio:.1f}x", goal))
        print(f"  hog {system.name}: p50 {p50:.2f} p95 {p95:.2f} ms ({ratio:.1f}x quiet p95)", file=sys.stderr)
    results.notes.append(f"CPU hog: {cores} processes spinning in Python, one per core, started and stopped by the "
                         f"script (each ends by itself after {HOG_LIMIT_S} s at most); 1-min load average 1 s in: "
                         f"{load:.1f}; {len(queries)} queries per system.")


# ---------------------------------------------------------------------------------------------- cold start
def _semsearch_command() -> list[str]:
    exe = Path(sys.executable).with_name("semsearch")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "semsearch"]


def cold_query(index_path: Path, query: str, runs: int, results: Results) -> None:
    ours = _semsearch_command() + ["query", "--index", str(index_path), query]
    commands = {
        "onnx": ours,
        "torch": ours + ["--backend", "torch"],
        "import torch": [sys.executable, "-c", "import torch"],
    }
    for argv in commands.values():  # page cache warm, and the graph already exported
        subprocess.run(argv, capture_output=True, text=True)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, argv in commands.items():
            start = time.perf_counter()
            done = subprocess.run(argv, capture_output=True, text=True)
            times[name].append(time.perf_counter() - start)
            if done.returncode != 0:
                sys.exit(f"benchmarks/core.py: {' '.join(argv)} failed:\n{done.stderr}")
    onnx_s, torch_s, bare_s = (statistics.median(times[n]) for n in commands)
    results.add(f"Cold `semsearch query` on the first index, s (median of {runs}, page cache warm)", f"{onnx_s:.2f}",
                f"{bare_s:.2f} (`python -c \"import torch\"`)", f"{bare_s / onnx_s:.2f}",
                f"≤ 0.8 s ({verdict(onnx_s <= 0.8)})")
    results.add(f"Cold `semsearch query --backend torch`, s (median of {runs})", f"{torch_s:.2f}", "", "", "")
    results.importtime = importtime_summary(ours)


def importtime_summary(argv: list[str], top: int = 12) -> list[str]:
    """The slowest top-level imports of a cold query (``python -X importtime``), cumulative microseconds."""
    command = [sys.executable, "-X", "importtime", "-m", "semsearch"] + argv[argv.index("query"):]
    done = subprocess.run(command, capture_output=True, text=True)
    rows = []
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if match and len(match.group(3)) <= 1:  # top level: imported by the program, not by another module
            rows.append((int(match.group(2)), match.group(4)))
    total = sum(us for us, _ in rows)
    lines = [f"all top-level imports: {total / 1e6:.2f} s; torch imported: "
             f"{'yes' if re.search(r'[|] +torch$', done.stderr, re.M) else 'no'}; transformers imported: "
             f"{'yes' if re.search(r'[|] +transformers$', done.stderr, re.M) else 'no'}"]
    lines += [f"{us / 1000:8.1f} ms  {name}" for us, name in sorted(rows, reverse=True)[:top]]
    return lines


# ---------------------------------------------------------------------------------------------- report
def render(args, data: Data, results: Results, load_before: str, load_after: str, encode_n: int) -> str:
    import torch

    from semsearch.onnx_backend import default_threads

    lines = ["# Core-path benchmark" + (" (quick run: small sizes, not for comparison)" if args.quick else ""), ""]
    busiest = max(float(load_before.split(" / ")[0]), float(load_after.split(" / ")[0]))
    if busiest > 0.5 * (os.cpu_count() or 1):
        lines += [f"> **Busy machine** (1-min load average up to {busiest:.1f} on {os.cpu_count()} cores): timings"
                  " are inflated and noisy; rerun on a quiet machine before quoting them.", ""]
    lines += [
        "## Setup",
        "",
        f"- Run: {datetime.now(timezone.utc).isoformat(timespec='seconds')}, `python benchmarks/core.py"
        + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "") + "`",
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores; CPU only",
        f"- Load average (1/5/15 min) before: {load_before}; after: {load_after} (the CPU-hog phase is inside this"
        " window and raises the later figures)",
        f"- {versions(CORE_PACKAGES)}",
        f"- Model: all-MiniLM-L6-v2, the bundled copy ({args.spec_line}); fp32 everywhere; batch size {BATCH_SIZE}",
        f"- Threads: semsearch (onnx) one intra-op thread per batch, batches over {default_threads()} worker threads;"
        f" sentence-transformers and txtai: torch, {torch.get_num_threads()} threads; chromadb: its onnxruntime"
        " session's default (all cores)",
        f"- Encode / index data: {encode_n:,} unique STSb sentences (train + dev + test, first-seen order)",
        f"- Queries: {len(data.queries)} SNLI test hypotheses (seed {SEED}) in no index, after {len(data.warmup)}"
        " warm-up queries; one query at a time, the systems taking turns query by query",
        "",
        "What each timing includes:",
        "",
        "- **Encode**: `Encoder.encode(texts, batch_size=32)` on the onnx backend vs"
        " `SentenceTransformer.encode(texts, batch_size=32)`, models loaded and warmed up first; tokenising, padding,"
        " forward, pooling, normalising, copy to numpy. Best of the repeats.",
        "- **Index**: `semsearch.api.index_corpus(jsonl, path, encoder=warm_encoder)` — reading the JSONL, hashes,"
        " encoding, FAISS and SQLite writes, commit. Model load excluded. Best of the repeats.",
        "- **Query**: semsearch: `Index.open(path, query_cache=0)` once, then `index.search(text, k=10)`: encode,"
        " FAISS exact flat search, SQLite fetch of the hits. sentence-transformers: `encode(text)` + FAISS"
        " `IndexFlatIP` + texts from a list. txtai: `Embeddings(path=model, content=True)` with its defaults, its own"
        " embeddings of the documents, `search(text, 10)` (its SQLite content store included). chromadb: in-memory"
        " client, its default HNSW (cosine), documents added with our vectors, `query(query_texts=[text],"
        " n_results=10)` with its default embedding function (onnxruntime, inputs padded to 256 tokens).",
        "- **Recall@10**: share of the exact top 10 (brute force over the same document vectors with our query"
        " vectors) that each system returns.",
        "- **Cold query**: wall time of `semsearch query --index PATH TEXT` in a new process (Python start, imports,"
        " model files, onnxruntime session, index open, one search, printing) on the first latency index, page"
        " cache warm, the graph already exported; beside `python -c \"import torch\"` and the same command with"
        " `--backend torch`.",
        "",
        "## Results",
        "",
        "| Measure | semsearch | Reference | Ratio (> 1: semsearch better) | Goal |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {' | '.join(row)} |" for row in results.rows]
    lines += ["", "### Warm query latency and recall, one query at a time", "",
              "| Documents | System | p50 ms | p95 ms | recall@10 vs exact |", "|---|---|---:|---:|---:|"]
    lines += [f"| {' | '.join(row)} |" for row in results.latency]
    if results.hog:
        lines += ["", "### The same with every core busy", "",
                  "| System | quiet p95 ms | busy p50 ms | busy p95 ms | busy p95 / quiet p95 | Goal |",
                  "|---|---:|---:|---:|---:|---|"]
        lines += [f"| {' | '.join(row)} |" for row in results.hog]
    if results.importtime:
        lines += ["", "### Where a cold `semsearch query` spends its imports (`python -X importtime`)", "", "```"]
        lines += results.importtime + ["```"]
    lines += ["", "Notes:", ""] + [f"- {note}" for note in results.notes]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, to check that the script works")
    parser.add_argument("--encode-n", type=int, help="sentences for the throughput runs [all unique STSb]")
    parser.add_argument("--sizes", help="comma-separated index sizes for query latency [10000,100000]")
    parser.add_argument("--real-docs", type=int, help="cap on real sentences in the latency indexes [all]")
    parser.add_argument("--queries", type=int, help="timed queries per size [300]")
    parser.add_argument("--warmup", type=int, help="warm-up queries [30]")
    parser.add_argument("--repeats", type=int, help="throughput repeats, best kept [2]")
    parser.add_argument("--hog-queries", type=int, help="queries with every core busy, 0 to skip [150]")
    parser.add_argument("--cold-runs", type=int, help="cold query runs, median kept [5]")
    parser.add_argument("--no-peers", action="store_true", help="leave out txtai and chromadb")
    parser.add_argument("--threads", type=int,
                        help="torch threads and SEMSEARCH_THREADS, for every side [each library's default]")
    parser.add_argument("--out", type=Path, help=f"markdown file to write [{RESULTS.relative_to(ROOT)}; quick: none]")
    args = parser.parse_args(argv)
    quick = {"encode_n": 400, "sizes": "1000,3000", "real_docs": 2000, "queries": 30, "warmup": 5,
             "repeats": 1, "hog_queries": 15, "cold_runs": 2}
    full = {"encode_n": None, "sizes": "10000,100000", "real_docs": None, "queries": 300, "warmup": 30,
            "repeats": 2, "hog_queries": 150, "cold_runs": 5}
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    out = args.out or (None if args.quick else RESULTS)

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = os.environ["SEMSEARCH_THREADS"] = str(args.threads)
    load_before = load_average()
    data = load_data(args.queries, args.warmup)
    encode_n = min(args.encode_n or len(data.stsb), len(data.stsb))
    results = Results()
    with tempfile.TemporaryDirectory(prefix="semsearch-bench-") as tmp:
        workdir = Path(tmp)
        print("encode and index throughput ...", file=sys.stderr)
        ours = throughput(data, encode_n, args.repeats, results, workdir)
        spec = ours.spec
        args.spec_line = (f"{spec.pooling.value} pooling, normalised, {spec.dimension}-d, max length {spec.max_length},"
                          f" fingerprint {spec.fingerprint[:19]}")
        print("warm query latency ...", file=sys.stderr)
        first_index, _ = latency(args, data, ours, results, workdir)
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
