"""Serving benchmark (issue 15): `semsearch serve` under concurrent clients, quiet and while another process
indexes, beside Chroma's HTTP server on the same documents, model and clients.

Setup, as the results file states it:

* documents: ``--docs`` (100,000) texts: the unique STSb + SNLI sentences (less the queries), then seeded
  pairs of them joined with a space; ids ``doc0...``; embedded by the bundled all-MiniLM-L6-v2 (384-d). The
  index is built once (from precomputed vectors when ``index_corpus(..., embeddings=)`` exists, else by
  encoding) and cached in ``benchmarks/.cache/``; every run works on a fresh copy. ``auto`` index type: exact
  flat search at this size.
* queries: the last ``--queries`` (2,000) unique real sentences, in no document; each request is one query,
  ``k=10``, cycling through them. The server runs with ``--query-cache 0`` so no answer comes from a cache.
* clients: ``N`` coroutines in this process (asyncio + aiohttp, keep-alive connections) sending requests back
  to back for ``--duration`` seconds; latency is request to parsed response. An error is any exception or a
  status other than 200. The load generator shares the cores with the server, so it must be light; the
  tables give the CPU share it took.
* semsearch: ``semsearch serve --port 0 --query-cache 0`` (batching at its defaults: 2 ms, 64 texts), and,
  to show what batching buys, the same server with ``--max-batch 1`` (one query per forward pass).
* Chroma: ``chroma run --path ... --host 127.0.0.1`` with the same ids, texts and vectors in a collection
  with cosine space (Chroma's default HNSW, approximate). Chroma's server does not embed text: its clients
  embed queries themselves, so here the query vectors are computed once before the clock starts and the
  requests carry them (``/query`` with ``query_embeddings``). Chroma's timings therefore exclude the model's
  forward pass that semsearch's include.
* while indexing: for each N, ``semsearch index NEW.jsonl --index <the served copy>`` adds ``--new`` (10,000)
  new documents in another process; the clients run from its start to its end. Then a probe searches for
  one of the new documents (``filters: ["id=..."]``) every 20 ms and reports how long after the command
  finished it became searchable.

Usage::

    python benchmarks/serve.py                # full run, writes benchmarks/results/serve.md
    python benchmarks/serve.py --quick        # 2,000 documents, 1 and 4 clients, 3 s: prints, writes nothing
    python benchmarks/serve.py --no-chroma    # without the reference

Needs the shared data beside the checkout, the serve extra and, for Chroma, the bench extra
(``pip install -e '.[serve,bench]'``).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import cpu_model, load_average, versions  # noqa: E402
from _data import CACHE, unique_sentences  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SERVE_PACKAGES = ("semsearch", "torch", "faiss-cpu", "fastapi", "uvicorn", "aiohttp", "chromadb")
RESULTS = ROOT / "benchmarks" / "results" / "serve.md"
SEED = 0
K = 10
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT),
       "ANONYMIZED_TELEMETRY": "False"}


# ---------------------------------------------------------------------------------------------- data
@dataclass
class Corpus:
    docs: list[str]
    new: list[str]
    queries: list[str]


def make_corpus(n_docs: int, n_new: int, n_queries: int) -> Corpus:
    """Real sentences first, then seeded pairs of them; the queries are real sentences held out."""
    real = unique_sentences()
    queries, pool = real[-n_queries:], real[:-n_queries]
    rng = np.random.default_rng(SEED)
    singles = pool[:n_docs]
    pairs = rng.integers(0, len(pool), size=(n_docs - len(singles) + n_new, 2))
    joined = [f"{pool[a]} {pool[b]}" for a, b in pairs.tolist()]
    extra = n_docs - len(singles)
    return Corpus(docs=singles + joined[:extra], new=joined[extra:], queries=queries)


def write_jsonl(path: Path, texts: list[str], prefix: str) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for i, text in enumerate(texts):
            fh.write(json.dumps({"id": f"{prefix}{i}", "text": text, "n": i}) + "\n")
    return path


def encode_cached(name: str, texts: list[str]) -> np.ndarray:
    """Vectors of ``texts`` by the bundled model, computed once and kept in benchmarks/.cache/."""
    CACHE.mkdir(parents=True, exist_ok=True)
    vectors_file, texts_file = CACHE / f"{name}.npy", CACHE / f"{name}.txt"
    if vectors_file.is_file() and texts_file.is_file() and texts_file.read_text(encoding="utf-8") == "\n".join(texts):
        return np.load(vectors_file)
    from semsearch.encoder import Encoder

    print(f"embedding {len(texts):,} texts once ({name}, cached in {CACHE}) ...", file=sys.stderr)
    vectors = Encoder.load(device="cpu", backend="auto").encode(texts, batch_size=64, show_progress=True)
    np.save(vectors_file, vectors)
    texts_file.write_text("\n".join(texts), encoding="utf-8")
    return vectors


def base_index(corpus: Corpus) -> Path:
    """The index of the documents, built once in benchmarks/.cache/ (never timed)."""
    from semsearch.api import index_corpus

    n = len(corpus.docs)
    folder = CACHE / f"serve-index-{n}"
    if (folder / "manifest.json").is_file():
        return folder
    CACHE.mkdir(parents=True, exist_ok=True)
    building = CACHE / f"serve-index-{n}.building"
    shutil.rmtree(building, ignore_errors=True)
    source = write_jsonl(CACHE / f"serve-docs-{n}.jsonl", corpus.docs, "doc")
    started = time.perf_counter()
    if "embeddings" in inspect.signature(index_corpus).parameters:
        index_corpus(source, building, embeddings=encode_cached(f"serve-docs-{n}", corpus.docs))
    else:  # before index_corpus takes precomputed vectors: encode while indexing
        print(f"indexing {n:,} documents once (cached in {folder}) ...", file=sys.stderr)
        index_corpus(source, building)
    print(f"  built in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    building.rename(folder)
    return folder


def stored_vectors(index_folder: Path) -> tuple[list[str], list[str], np.ndarray]:
    """Ids, texts and vectors of every document of an index (what Chroma gets), in row-id order."""
    from semsearch.index import Index

    with Index.open(index_folder) as index:
        rowids, vectors = index.stored_vectors()  # short documents: one vector each, ids = row ids
        docs = index.fetch_rowids(rowids.tolist())
        rows = [docs[r] for r in rowids.tolist()]
        return [d.id for d in rows], [d.text for d in rows], np.asarray(vectors, dtype=np.float32)


# ---------------------------------------------------------------------------------------------- servers
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A server subprocess; its stderr goes to a log file."""

    def __init__(self, command: list[str], log: Path) -> None:
        self.log = log
        self._log_fh = log.open("w")
        self.process = subprocess.Popen(command, env=ENV, stdout=self._log_fh, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def wait_for(self, pattern: str, timeout: float = 300) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.log.read_text(errors="replace"))
            if found:
                return found
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise SystemExit(f"server did not start; its log ({self.log}):\n{self.log.read_text(errors='replace')[-3000:]}")

    def problems(self, limit: int = 5) -> list[str]:
        """The first warning and error lines of its log (uvicorn's and semsearch's)."""
        lines = self.log.read_text(errors="replace").splitlines()
        return [line.strip()[:300] for line in lines
                if re.search(r"\b(ERROR|WARNING|Traceback|Exception)\b|^(error|warning):", line)][:limit]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(30)
        self._log_fh.close()


def start_semsearch(index: Path, logs: Path, *extra: str) -> tuple[Server, str]:
    server = Server([sys.executable, "-m", "semsearch", "serve", "--index", str(index), "--port", "0",
                     "--query-cache", "0", *extra], logs / f"semsearch-serve{''.join(extra).replace('-', '_')}.log")
    url = server.wait_for(r"at (http://127\.0\.0\.1:\d+)/").group(1)
    return server, url


def start_chroma(path: Path, logs: Path) -> tuple[Server, int]:
    chroma = shutil.which("chroma", path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    if chroma is None:
        raise SystemExit("chroma not found: pip install -e '.[bench]' (or run with --no-chroma)")
    port = free_port()
    server = Server([chroma, "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)],
                    logs / "chroma.log")
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=2).status_code == 200:
                return server, port
        except httpx.HTTPError:
            pass
        if server.process.poll() is not None:
            break
        time.sleep(0.2)
    server.stop()
    raise SystemExit(f"chroma did not start; its log: {server.log}")


def chroma_collection(port: int, ids: list[str], texts: list[str], vectors: np.ndarray) -> str:
    """The collection holding the documents (loaded once per Chroma folder); returns its id."""
    import chromadb

    client = chromadb.HttpClient(host="127.0.0.1", port=port)
    collection = client.get_or_create_collection("bench", metadata={"hnsw:space": "cosine"}, embedding_function=None)
    if collection.count() != len(ids):
        client.delete_collection("bench")
        collection = client.create_collection("bench", metadata={"hnsw:space": "cosine"}, embedding_function=None)
        step = min(client.get_max_batch_size(), 5000)
        started = time.perf_counter()
        for start in range(0, len(ids), step):
            end = start + step
            collection.add(ids=ids[start:end], embeddings=vectors[start:end], documents=texts[start:end],
                           metadatas=[{"n": i} for i in range(start, min(end, len(ids)))])
        print(f"  chroma: {len(ids):,} documents loaded in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return str(collection.id)


# ---------------------------------------------------------------------------------------------- load
@dataclass
class Run:
    engine: str
    clients: int
    seconds: float
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    errors: int = 0
    error_examples: list[str] = field(default_factory=list)
    texts_per_call: float | None = None  # semsearch: query texts per encoder call
    client_cpu: float = 0.0  # CPU seconds the load generator (this process) spent driving the level

    @property
    def qps(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        return float(np.percentile(np.array(self.latencies) * 1000, q))


def semsearch_request(url: str):
    def build(query: str, i: int):
        return f"{url}/search", {"query": query, "k": K}

    def ok(body: dict) -> bool:
        return len(body["results"][0]["hits"]) == K

    return build, ok


def chroma_request(port: int, collection: str, query_vectors: np.ndarray):
    url = (f"http://127.0.0.1:{port}/api/v2/tenants/default_tenant/databases/default_database/collections/"
           f"{collection}/query")
    rows = [v.tolist() for v in query_vectors]

    def build(query: str, i: int):
        return url, {"query_embeddings": [rows[i % len(rows)]], "n_results": K,
                     "include": ["documents", "metadatas", "distances"]}

    def ok(body: dict) -> bool:
        return len(body["ids"][0]) == K

    return build, ok


def describe(exc: BaseException, after: float) -> str:
    """An exception and what caused it (the client library wraps the socket error), and how long it waited."""
    parts, seen = [], exc
    while seen is not None and len(parts) < 4:
        parts.append(f"{type(seen).__name__}: {seen}".rstrip(": "))
        seen = seen.__cause__ or seen.__context__
    return " <- ".join(parts) + f" (after {after:.2f} s)"


async def _drive(engine: str, request, queries: list[str], clients: int, stop: Callable[[], bool],
                 max_seconds: float) -> Run:
    import aiohttp

    build, ok = request
    run = Run(engine, clients, 0.0)
    counter = iter(range(10**12))
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as http:
        started, cpu_started = time.perf_counter(), time.process_time()
        deadline = started + max_seconds

        async def client() -> None:
            while not stop() and time.perf_counter() < deadline:
                i = next(counter)
                url, body = build(queries[i % len(queries)], i)
                sent = time.perf_counter()
                try:
                    async with http.post(url, json=body) as response:
                        text = await response.text()
                    good = response.status == 200 and ok(json.loads(text))
                    problem = f"HTTP {response.status}: {text[:200]}"
                except Exception as exc:  # noqa: BLE001 - every failure counts as an error
                    good, problem = False, describe(exc, time.perf_counter() - sent)
                if good:
                    run.latencies.append(time.perf_counter() - sent)
                else:
                    run.errors += 1
                    if len(run.error_examples) < 3:
                        run.error_examples.append(problem)

        await asyncio.gather(*(client() for _ in range(clients)))
        run.seconds = time.perf_counter() - started
        run.client_cpu = time.process_time() - cpu_started
    return run


def drive(engine: str, request, queries: list[str], clients: int, seconds: float) -> Run:
    return asyncio.run(_drive(engine, request, queries, clients, lambda: False, seconds))


def warm_up(request, queries: list[str]) -> None:
    drive("warm-up", request, queries[::-1], 2, 2.0)


def batching_counters(url: str) -> tuple[int, int]:
    import httpx

    batching = httpx.get(f"{url}/info", timeout=30).json()["server"]["batching"]
    return batching["encoder_calls"], batching["queries"]


def quiet_sweep(engine: str, request, queries: list[str], levels: list[int], seconds: float,
                url: str | None = None) -> list[Run]:
    runs = []
    warm_up(request, queries)
    for clients in levels:
        before = batching_counters(url) if url else None
        run = drive(engine, request, queries, clients, seconds)
        if url:
            after = batching_counters(url)
            calls = after[0] - before[0]
            run.texts_per_call = (after[1] - before[1]) / calls if calls else None
        runs.append(run)
        print(f"  {engine:<28} {clients:>3} clients: {run.qps:7.1f} QPS, p50 {run.percentile(50):7.1f} ms, "
              f"p99 {run.percentile(99):7.1f} ms, {run.errors} errors", file=sys.stderr)
    return runs


@dataclass
class WriteRun:
    run: Run
    index_seconds: float
    index_returncode: int
    visible_after: float | None  # seconds from the command's end until a new document was found
    index_tail: str = ""


def while_indexing(url: str, index: Path, corpus: Corpus, queries: list[str], clients: int, work: Path,
                   nice: int, max_seconds: float) -> WriteRun:
    """Clients run from the start to the end of a `semsearch index` of the new documents in another process."""
    prefix = f"new{clients}-"
    source = write_jsonl(work / f"{prefix}docs.jsonl", corpus.new, prefix)
    probe_id = f"{prefix}{len(corpus.new) - 1}"
    command = [sys.executable, "-m", "semsearch", "index", str(source), "--index", str(index), "-q"]
    if nice:
        command = ["nice", "-n", str(nice), *command]
    log = work / f"{prefix}index.log"
    request = semsearch_request(url)

    async def main() -> WriteRun:
        import httpx

        with log.open("w") as log_fh:
            started = time.perf_counter()
            process = subprocess.Popen(command, env=ENV, stdout=log_fh, stderr=subprocess.STDOUT)
            finished: list[float] = []

            def stop() -> bool:
                if not finished and process.poll() is not None:
                    finished.append(time.perf_counter())
                return bool(finished)

            run = await _drive("semsearch while indexing", request, queries, clients, stop, max_seconds)
            if not finished:  # the time bound ran out first
                process.wait()
                finished.append(time.perf_counter())
        visible = None
        if process.returncode == 0:
            async with httpx.AsyncClient(timeout=30) as http:
                deadline = time.perf_counter() + 60
                while time.perf_counter() < deadline:
                    response = await http.post(f"{url}/search", json={"query": corpus.new[-1], "k": 1,
                                                                      "filters": [f"id={probe_id}"]})
                    if response.status_code == 200 and response.json()["results"][0]["hits"]:
                        visible = time.perf_counter() - finished[0]
                        break
                    await asyncio.sleep(0.02)
        return WriteRun(run, finished[0] - started, process.returncode, visible,
                        log.read_text(errors="replace")[-500:])

    result = asyncio.run(main())
    print(f"  while indexing, {clients:>3} clients: {result.run.qps:7.1f} QPS, p50 {result.run.percentile(50):7.1f} ms,"
          f" p99 {result.run.percentile(99):7.1f} ms, {result.run.errors} errors; index {result.index_seconds:.0f} s,"
          f" searchable after {result.visible_after if result.visible_after is not None else float('nan'):.2f} s",
          file=sys.stderr)
    return result


# ---------------------------------------------------------------------------------------------- report
def fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None or value != value else f"{value:,.{digits}f}"


def cpu_share(run: Run) -> str:
    """The load generator's CPU time as a share of the machine's cores over the level."""
    return f"{100 * run.client_cpu / (run.seconds * (os.cpu_count() or 1)):.0f}%" if run.seconds else "—"


def render(args, quiet: list[Run], writes: list[WriteRun], load_before: str, load_after: str,
           command: str, server_problems: list[str]) -> str:
    lines = ["# Serving: `semsearch serve` under concurrent clients, beside Chroma's HTTP server", "",
             f"Command: `{command}`", "", "## Setup", "",
             f"- Machine: {cpu_model()}, {os.cpu_count()} cores; load average (1/5/15 min) before {load_before}, "
             f"after {load_after}. Server, clients and the indexing process share these cores.",
             f"- Software: {versions(SERVE_PACKAGES)}.",
             f"- Documents: {args.docs:,} (unique STSb + SNLI sentences, then seeded pairs of them), embedded by the "
             "bundled all-MiniLM-L6-v2 (384-d); semsearch index type `auto` (exact flat at this size).",
             f"- Queries: {args.queries:,} held-out real sentences, one per request, k={K}; "
             "`--query-cache 0`, so every query is embedded.",
             f"- Clients: N asyncio coroutines (aiohttp, keep-alive), back to back, {args.duration:g} s per level after "
             "a 2 s warm-up; latency = request sent to response parsed; error = exception or status ≠ 200 or "
             "fewer than k hits.",
             "- semsearch: `semsearch serve --query-cache 0` (batching: up to 64 texts, 2 ms wait); "
             "\"no batching\" is the same server with `--max-batch 1`.",
             "- Chroma: `chroma run` with the same ids, texts and vectors (cosine HNSW, its defaults). Its server "
             "does not embed: query vectors are computed before the clock starts and sent with each request, so "
             "Chroma's latencies **exclude** the model's forward pass that semsearch's include.",
             f"- While indexing: `semsearch index` of {args.new:,} new documents in another process"
             + (f" (under `nice -n {args.index_nice}`)" if args.index_nice else "")
             + "; clients run from its start to its end; then a probe searches for the last new document "
             "(filter `id=...`) every 20 ms.", ""]
    lines += ["## Quiet", "", "| server | clients | requests | errors | QPS | p50 ms | p99 ms | texts per forward pass | "
              "load generator CPU |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for run in quiet:
        lines.append(f"| {run.engine} | {run.clients} | {len(run.latencies) + run.errors:,} | {run.errors} | "
                     f"{fmt(run.qps)} | {fmt(run.percentile(50))} | {fmt(run.percentile(99))} | "
                     f"{fmt(run.texts_per_call, 2) if run.texts_per_call else '—'} | {cpu_share(run)} |")
    ours = {r.clients: r for r in quiet if r.engine == "semsearch"}
    if writes:
        lines += ["", "## While `semsearch index` adds documents in another process", "",
                  "| clients | requests | errors | QPS | p50 ms | p99 ms | p99 / quiet p99 | index run s | "
                  "new documents searchable after s | load generator CPU |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for w in writes:
            quiet_p99 = ours[w.run.clients].percentile(99) if w.run.clients in ours else float("nan")
            lines.append(f"| {w.run.clients} | {len(w.run.latencies) + w.run.errors:,} | {w.run.errors} | "
                         f"{fmt(w.run.qps)} | {fmt(w.run.percentile(50))} | {fmt(w.run.percentile(99))} | "
                         f"{fmt(w.run.percentile(99) / quiet_p99, 2)} | {fmt(w.index_seconds)} | "
                         f"{fmt(w.visible_after, 2)} | {cpu_share(w.run)} |")
    lines += ["", "## Goals", ""]
    if 1 in ours and 16 in ours:
        ratio = ours[16].qps / ours[1].qps if ours[1].qps else float("nan")
        lines.append(f"- QPS at 16 clients ≥ 3× QPS at 1 client: {ratio:.2f}× — {'met' if ratio >= 3 else 'not met'}.")
    errors = sum(r.errors for r in quiet if r.engine.startswith("semsearch")) + sum(w.run.errors for w in writes)
    lines.append(f"- 0 errors (semsearch, quiet and while indexing): {errors} — {'met' if errors == 0 else 'not met'}.")
    if writes:
        worst = max(w.run.percentile(99) / ours[w.run.clients].percentile(99) for w in writes if w.run.clients in ours)
        lines.append(f"- p99 while indexing ≤ 3× quiet p99: worst {worst:.2f}× — {'met' if worst <= 3 else 'not met'}.")
        seen = [w.visible_after for w in writes]
        slowest = max((s for s in seen if s is not None), default=float("nan"))
        met = all(s is not None and s <= 2 for s in seen)
        lines.append(f"- New documents searchable within 2 s of the command finishing: slowest {slowest:.2f} s — "
                     f"{'met' if met else 'not met'}.")
    examples = [e for r in quiet for e in r.error_examples] + [e for w in writes for e in w.run.error_examples]
    if examples:
        lines += ["", "First errors: " + "; ".join(f"`{e}`" for e in examples[:5])]
    lines += ["", "semsearch server log, warnings and errors: "
              + ("; ".join(f"`{p}`" for p in server_problems) if server_problems else "none.")]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 documents, 1 and 4 clients, 3 s; writes nothing")
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--new", type=int, default=10_000, help="documents added while clients run")
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--clients", default="1,4,16,64", help="comma-separated client counts")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per quiet level")
    parser.add_argument("--max-write-seconds", type=float, default=900.0, help="bound on one indexing phase")
    parser.add_argument("--index-nice", type=int, default=0, help="run the indexing process under nice -n N")
    parser.add_argument("--no-chroma", action="store_true")
    parser.add_argument("--no-baseline", action="store_true", help="skip the --max-batch 1 server")
    parser.add_argument("--no-writes", action="store_true", help="skip the while-indexing phase")
    parser.add_argument("--out", type=Path, default=None, help=f"results file [default: {RESULTS}; --quick: none]")
    args = parser.parse_args(argv)
    if args.quick:
        args.docs, args.new, args.queries, args.duration = 2_000, 300, 200, 3.0
        args.clients = "1,4"
    out = args.out if args.out is not None else (None if args.quick else RESULTS)
    levels = [int(c) for c in args.clients.split(",")]
    command = "python benchmarks/serve.py " + " ".join(argv if argv is not None else sys.argv[1:])
    load_before = load_average()

    corpus = make_corpus(args.docs, args.new, args.queries)
    cached = base_index(corpus)
    work = Path(tempfile.mkdtemp(prefix="semsearch-serve-bench-"))
    quiet: list[Run] = []
    writes: list[WriteRun] = []
    server_problems: list[str] = []
    try:
        served = work / "index"
        shutil.copytree(cached, served)
        server, url = start_semsearch(served, work)
        try:
            print(f"semsearch at {url} ({args.docs:,} documents)", file=sys.stderr)
            quiet += quiet_sweep("semsearch", semsearch_request(url), corpus.queries, levels, args.duration, url)
            if not args.no_writes:
                for clients in levels:
                    writes.append(while_indexing(url, served, corpus, corpus.queries, clients, work, args.index_nice,
                                                 args.max_write_seconds))
        finally:
            server.stop()
            server_problems += server.problems()
        if not args.no_baseline:
            baseline_copy = work / "index-baseline"
            shutil.copytree(cached, baseline_copy)
            server, url = start_semsearch(baseline_copy, work, "--max-batch", "1")
            try:
                quiet += quiet_sweep("semsearch, no batching", semsearch_request(url), corpus.queries, levels,
                                     args.duration, url)
            finally:
                server.stop()
        if not args.no_chroma:
            ids, texts, vectors = stored_vectors(cached)
            query_vectors = encode_cached(f"serve-queries-{args.queries}", corpus.queries)
            chroma_dir = CACHE / f"serve-chroma-{args.docs}"
            chroma, port = start_chroma(chroma_dir, work)
            try:
                collection = chroma_collection(port, ids, texts, vectors)
                quiet += quiet_sweep("Chroma (vectors sent)", chroma_request(port, collection, query_vectors),
                                     corpus.queries, levels, args.duration)
            finally:
                chroma.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = render(args, quiet, writes, load_before, load_average(), command, server_problems)
    print(report)
    if out is not None:
        out.write_text(report, encoding="utf-8")
        print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
