"""Write-cost benchmark: what a small write, a one-id delete and a compaction cost, before and after segments.

Setup, for each case (1,000,000 documents flat; 100,000 documents hnsw and ivf):

* the same documents and the same precomputed 384-d vectors (clustered synthetic unit vectors, seeded; texts
  "synthetic document N ..."), declared as made by the bundled all-MiniLM-L6-v2;
* **after** (this tree): built with ``semsearch index CORPUS --embeddings vectors.npy``;
* **before** (the seed's code, commit ``ac60391``, checked out into a temporary worktree and run with that
  tree first on ``PYTHONPATH``): built through its own ``IndexWriter`` with an encoder that looks the same
  precomputed vectors up (the seed cannot read embeddings), so both indexes hold identical vectors.

Timed, each as a whole ``semsearch`` process (python start, imports, model load where needed, the work, exit),
median of ``--repeats``: a cold ``semsearch query`` (page cache warm), ``semsearch index`` of 10 new real-text
documents (encoded by the real model), ``semsearch delete --id`` of one id, and (after only) ``semsearch
compact``. Disk: bytes the folder grew by for the 10-document write. Then, at 100k flat in one process, the
warm query p50 with 1 segment vs 20 segments vs the 20 compacted into 1 (same queries, query cache off).

    python benchmarks/writes.py --prepare     # builds the pristine indexes once (untimed, cached)
    python benchmarks/writes.py               # writes benchmarks/results/writes.md
    python benchmarks/writes.py --quick       # small sizes, checks the script, writes nothing
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "writes.md"
CACHE = ROOT / "benchmarks" / ".cache" / "writes"
BEFORE_COMMIT = "ac60391"
DIM = 384
SEED = 0
NEW_DOCS = [
    "How do I reset a forgotten password on the web portal?",
    "The quarterly report shows revenue growth in the northern region.",
    "Boiling pasta needs plenty of salted water and a large pot.",
    "A lighthouse keeper recorded the storm in his logbook.",
    "Solar panels convert sunlight into electricity with photovoltaic cells.",
    "The museum opens a new exhibition of medieval maps next week.",
    "Regular stretching reduces the risk of running injuries.",
    "The train to the airport leaves every fifteen minutes.",
    "Compilers translate source code into machine instructions.",
    "A small bakery on the corner sells sourdough bread.",
]


def clustered_vectors(n: int, seed: int = SEED, clusters: int = 1000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, DIM)).astype(np.float32)
    out = np.empty((n, DIM), np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        labels = rng.integers(0, clusters, stop - start)
        block = centres[labels] + 0.6 * rng.normal(size=(stop - start, DIM)).astype(np.float32)
        out[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def write_corpus(path: Path, n: int) -> None:
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": f"d{i}", "text": f"synthetic document {i} about topic {i % 997}",
                                 "group": i % 10}) + "\n")


LOOKUP_ENCODER = r'''
import sys, numpy as np
sys.path.insert(0, {before!r})
from semsearch.encoder import Encoder
from semsearch.index import IndexWriter
from semsearch.corpus import read_records
real = Encoder.load()
vectors = np.load({vectors!r}, mmap_mode="r")
class Lookup:
    spec = real.spec
    dimension = real.spec.dimension
    tokenizer = None
    def encode(self, texts, batch_size=32, show_progress=None):
        return np.stack([vectors[int(t.split()[2])] for t in texts]).astype(np.float32)
with IndexWriter({index!r}, Lookup(), index_type={kind!r}, expected_count={n}) as w:
    w.add(read_records({corpus!r}), chunk_size=20000)
'''


def run(args: list[str], env: dict, repeats: int = 1) -> tuple[float, str]:
    """Median wall seconds of a whole process; the last run's stderr."""
    times, err = [], ""
    for _ in range(repeats):
        started = time.perf_counter()
        # cwd: outside any checkout, or `python -m semsearch` would import the tree it stands in, not PYTHONPATH's
        done = subprocess.run(args, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(map(str, args))} failed: {done.stderr.strip()[-800:]}")
        err = done.stderr
    return statistics.median(times), err


def folder_bytes(path: Path) -> int:
    """Bytes of the index's files; SQLite's -shm/-wal companions are left out (transient: a read-only query
    process leaves them behind and the next writer's close removes them)."""
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file() and not p.name.endswith(("-shm", "-wal")))


def semsearch(env_tree: Path | None) -> tuple[list[str], dict]:
    """How to run one version's command line: this tree's, or the seed's from its worktree."""
    env = dict(os.environ)
    env["HF_HUB_OFFLINE"] = "1"
    if env_tree is not None:
        env["PYTHONPATH"] = str(env_tree)
    else:
        env.pop("PYTHONPATH", None)
    return [sys.executable, "-m", "semsearch"], env


def prepared(label: str, kind: str, n: int, version: str, before_tree: Path) -> tuple[Path, float]:
    """The pristine index of a case, built once into benchmarks/.cache/writes/ (its build time is kept beside
    it); every timed run works on a fresh copy."""
    CACHE.mkdir(parents=True, exist_ok=True)
    vectors_file, corpus = CACHE / f"vectors-{n}.npy", CACHE / f"corpus-{n}.jsonl"
    if not vectors_file.exists():
        np.save(vectors_file, clustered_vectors(n))
        write_corpus(corpus, n)
    folder = CACHE / f"{label}-{n}-{version}"
    stamp = folder.with_suffix(".json")
    if stamp.exists() and folder.exists():
        return folder, json.loads(stamp.read_text())["build_s"]
    if folder.exists():
        shutil.rmtree(folder)
    command, env = semsearch(before_tree if version == "before" else None)
    started = time.perf_counter()
    if version == "after":
        run(command + ["index", str(corpus), "--index", str(folder), "-q", "--index-type", kind,
                       "--embeddings", str(vectors_file)], env)
    else:
        script = LOOKUP_ENCODER.format(before=str(before_tree), vectors=str(vectors_file), index=str(folder),
                                       kind=kind, n=n, corpus=str(corpus))
        run([sys.executable, "-c", script], env)
    build = time.perf_counter() - started
    stamp.write_text(json.dumps({"build_s": build}))
    return folder, build


def measure_case(label: str, kind: str, n: int, work: Path, before_tree: Path, repeats: int, rows: list) -> None:
    new_docs = work / "new.jsonl"
    new_docs.write_text("".join(json.dumps({"id": f"new{i}", "text": t}) + "\n" for i, t in enumerate(NEW_DOCS)))
    for version, tree in (("before", before_tree), ("after", None)):
        pristine, build = prepared(label, kind, n, version, before_tree)
        command, env = semsearch(tree)
        code = subprocess.run([sys.executable, "-c", "import semsearch; print(semsearch.__file__)"], env=env,
                              capture_output=True, text=True, cwd=tempfile.gettempdir()).stdout.strip()
        assert code.startswith(str(tree or ROOT)), f"{version} runs {code}"  # the version meant, nothing else
        index = work / f"{label}-{version}"
        shutil.copytree(pristine, index)
        size = folder_bytes(index)
        query, _ = run(command + ["query", "a lighthouse in a storm", "--index", str(index), "-k", "10"], env,
                       repeats)
        grown = folder_bytes(index)
        write, _ = run(command + ["index", str(new_docs), "--index", str(index), "-q"], env)
        grown = folder_bytes(index) - grown
        delete, _ = run(command + ["delete", "--index", str(index), "--id", "d5"], env)
        compact = None
        if version == "after":
            compact, _ = run(command + ["compact", "--index", str(index)], env)
        query_after, _ = run(command + ["query", "a lighthouse in a storm", "--index", str(index), "-k", "10"],
                             env, repeats)
        rows.append({"case": label, "version": version, "n": n, "type": kind, "build_s": build, "size": size,
                     "query_s": query, "write_s": write, "write_bytes": grown, "delete_s": delete,
                     "compact_s": compact, "query_after_s": query_after})
        print(json.dumps(rows[-1]), flush=True)
        shutil.rmtree(index)


def segment_query_cost(work: Path, n: int, segments: int, queries: int) -> dict:
    """Warm p50 at n flat documents: one segment, `segments` segments, and those compacted into one."""
    from semsearch.api import index_corpus
    from semsearch.encoder import Encoder
    from semsearch.index import Index, compact

    vectors = clustered_vectors(n, seed=1)
    corpus = work / f"seg-{n}.jsonl"
    write_corpus(corpus, n)
    lines = corpus.read_text().splitlines()
    one, many = work / "one-segment", work / "many-segments"
    for folder in (one, many):
        if folder.exists():
            shutil.rmtree(folder)
    index_corpus(corpus, one, embeddings=vectors)
    step = n // segments
    for part in range(segments):
        piece = work / "piece.jsonl"
        piece.write_text("\n".join(lines[part * step:(part + 1) * step]) + "\n")
        index_corpus(piece, many, embeddings=vectors[part * step:(part + 1) * step])
    encoder = Encoder.load(backend="auto")
    texts = [f"query number {i} about topic {i % 97}" for i in range(queries)]

    def p50(folder: Path) -> tuple[float, int]:
        with Index.open(folder, query_cache=0) as index:
            index.use_encoder(encoder)
            for text in texts[:20]:
                index.search(text, k=10)
            times = []
            for text in texts:
                started = time.perf_counter()
                index.search(text, k=10)
                times.append(time.perf_counter() - started)
            return statistics.median(times) * 1000, len(index.manifest.segments)

    out = {}
    out["one_ms"], out["one_segments"] = p50(one)
    out["many_ms"], out["many_segments"] = p50(many)
    compact(many)
    out["compacted_ms"], out["compacted_segments"] = p50(many)
    with Index.open(one) as a, Index.open(many) as b:
        a.use_encoder(encoder)
        b.use_encoder(encoder)
        same = all([h.id for h in x] == [h.id for h in y]
                   for x, y in zip(a.search(texts[:50], k=10), b.search(texts[:50], k=10)))
    out["same_results"] = same
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes; writes nothing unless --out")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--prepare", action="store_true",
                        help="only build the pristine indexes into benchmarks/.cache/writes (untimed; any machine)")
    args = parser.parse_args()
    big, small, segs, queries = (20_000, 5_000, 20, 50) if args.quick else (1_000_000, 100_000, 20, 300)
    out = args.out or (None if args.quick else RESULTS)
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="writes-", dir=ROOT / "benchmarks"))
    before_tree = work / "before"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(before_tree), BEFORE_COMMIT],
                   check=True, capture_output=True)
    rows: list[dict] = []
    try:
        subprocess.run([sys.executable, "-m", "semsearch", "model", "export"], check=True, capture_output=True)
        if args.prepare:
            for label, kind, n in (("flat", "flat", big), ("hnsw", "hnsw", small), ("ivf", "ivf", small)):
                for version in ("before", "after"):
                    print(label, version, prepared(label, kind, n, version, before_tree), flush=True)
            return
        measure_case("flat", "flat", big, work, before_tree, args.repeats, rows)
        measure_case("hnsw", "hnsw", small, work, before_tree, args.repeats, rows)
        measure_case("ivf", "ivf", small, work, before_tree, args.repeats, rows)
        segment_cost = segment_query_cost(work, small, segs, queries)
        print(json.dumps(segment_cost), flush=True)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before_tree)],
                       capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    report = render(rows, segment_cost, load_before, load_after, big, small)
    print(report)
    if out is not None:
        out.write_text(report)


NOTES = """
Notes. *grown* is what a write leaves behind once committed. While it runs, the seed's write holds a full copy of
the database and a rewritten vector file beside the old ones (the whole index again), so its peak disk use is
twice the index; a segment write's peak is what it adds. Every process time above includes Python's start, the
imports and, for `index`, loading the model (onnxruntime here; the seed imports torch): the cold query is the
measure of that fixed cost, so a write "costs the change" when its time is within it. Every command runs from a
temporary folder (inside the checkout `python -m semsearch` would import the checkout, not `PYTHONPATH`), and
the script checks which code each version imports.
"""


def render(rows, segment_cost, load_before, load_after, big, small) -> str:
    def seconds(value):
        return "—" if value is None else f"{value:.2f} s"

    lines = [
        "# Write cost: segments against the seed's copy-per-write generations",
        "",
        f"Run {datetime.now(timezone.utc).isoformat(timespec='minutes')}, `python benchmarks/writes.py`. "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}. "
        f"Load average before {load_before[0]:.2f} / {load_before[1]:.2f}, after {load_after[0]:.2f} / "
        f"{load_after[1]:.2f} (1 / 5 min).",
        "",
        f"Each index: {big:,} (flat) or {small:,} (hnsw, ivf) documents with the same precomputed, seeded, clustered "
        "384-d unit vectors (declared as made by the bundled all-MiniLM-L6-v2). *before*: the seed's code (commit "
        f"`{BEFORE_COMMIT}`), built through its own writer with an encoder that looks those vectors up; *after*: this "
        "tree, built with `semsearch index --embeddings` (build times: the cached pristine builds, taken whenever they were "
        "made, not on a quiet machine). Each timed run works on a fresh copy. Every time is one whole `semsearch` process (start, imports, "
        "model load where needed, the work, exit), median of 3 for queries; the 10-document write embeds real texts "
        "with the real model. Page cache warm. *grown*: bytes the index's files grew by for that write (SQLite's "
        "transient -shm/-wal files left out).",
        "",
        "| index | code | build | cold query | index 10 docs | grown | delete 1 id | compact | cold query after |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['n']:,} {r['type']} | {r['version']} | {r['build_s']:.0f} s | {seconds(r['query_s'])} | "
                     f"{seconds(r['write_s'])} | {r['write_bytes']:,} B | {seconds(r['delete_s'])} | "
                     f"{seconds(r['compact_s'])} | {seconds(r['query_after_s'])} |")
    lines += ["", "Goal: a 10-document write and a 1-id delete each within the cold query time + 0.5 s.", ""]
    for label in dict.fromkeys(r["case"] for r in rows):
        before = next(r for r in rows if r["case"] == label and r["version"] == "before")
        after = next(r for r in rows if r["case"] == label and r["version"] == "after")
        lines.append(
            f"- {after['n']:,} {after['type']}: write {before['write_s']:.2f} s → {after['write_s']:.2f} s "
            f"({before['write_s'] / after['write_s']:.1f}x), delete {before['delete_s']:.2f} s → "
            f"{after['delete_s']:.2f} s ({before['delete_s'] / after['delete_s']:.1f}x); after: write − cold query "
            f"= {after['write_s'] - after['query_s']:+.2f} s, delete − cold query = "
            f"{after['delete_s'] - after['query_s']:+.2f} s; disk for the write {before['write_bytes']:,} B → "
            f"{after['write_bytes']:,} B.")
    lines += NOTES.strip("\n").splitlines()
    c = segment_cost
    lines += [
        "",
        f"## Query cost with segments ({small:,} flat documents, warm, one query at a time, query cache off)",
        "",
        "| layout | segments | p50 |",
        "|---|---:|---:|",
        f"| one write | {c['one_segments']} | {c['one_ms']:.2f} ms |",
        f"| {c['many_segments']} writes | {c['many_segments']} | {c['many_ms']:.2f} ms |",
        f"| the same, compacted | {c['compacted_segments']} | {c['compacted_ms']:.2f} ms |",
        "",
        f"{c['many_segments']} segments / 1: {c['many_ms'] / c['one_ms']:.2f}x (goal ≤ 1.2x). "
        f"Top-10 ids identical between the two layouts on 50 queries: {c['same_results']}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
