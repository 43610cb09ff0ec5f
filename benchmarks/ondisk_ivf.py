"""Benchmark: building a large IVF index with its vectors in memory, or in parts merged on disk (FAISS's merge).

    python benchmarks/ondisk_ivf.py           # 1M real-ish vectors; writes benchmarks/results/ondisk-ivf.md
    python benchmarks/ondisk_ivf.py --quick   # 50k vectors: checks the script, writes nothing

Data: mining.py's real-ish set (benchmarks/_data.py `realish`: the 41,073 real all-MiniLM-L6-v2 sentence
embeddings of STSb + SNLI, then perturbed copies of them), precomputed, so no model runs; each document's text
is its source sentence (copies: the sentence and the copy's number). The matrix is read from its .npy file a
block at a time with plain reads (no memory map), so a process's peak memory is what it holds itself.

Each build runs in a fresh process, one at a time, after the load has settled (wall time; peak memory the
process holds itself, RssAnon sampled every 20 ms; peak resident memory VmHWM, which also counts the pages of
files it maps):
  faiss      FAISS directly, the reference: IVF{sqrt n},Flat trained on a seeded sample of 64 vectors per list,
             every vector added in memory, write_index; no documents
  memory     semsearch's IndexWriter, --index-type ivf, as the driver of `--engine ray` wrote IVF before: all
             vectors held in the write's flat buffer, trained on a seeded sample of them and added at commit
  ondisk     the same writer with build_on_disk(LocalAdder()): trained on the first 64 vectors per list,
             parts of 65,536 vectors filled in this process, merged by FAISS into seg.1.0.ivfdata
  ondisk-ray the same with the parts filled by Ray tasks (local cluster, 2 CPUs) as `--engine ray` does
Every index is then searched (same process for all, warm, default nprobe) for 1,000 queries (real vectors
not in the set: seeded perturbations of real ones): recall@10 against an exact float32 scan of the matrix, and
the median time of one query alone through semsearch's segment search (FAISS's own for `faiss`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _data  # noqa: E402
import _report  # noqa: E402

RESULTS = _data.ROOT / "benchmarks" / "results" / "ondisk-ivf.md"
BLOCK = 65_536
D = 384
VARIANTS = ("faiss", "memory", "ondisk", "ondisk-ray")


def status_mb(field: str) -> float:
    """A memory field of /proc/self/status (VmHWM: peak resident; RssAnon: resident memory not backed by a
    file), MB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return status_mb("VmHWM")


class AnonPeak:
    """The largest RssAnon seen by a thread sampling it every 20 ms: the memory a process holds itself. VmHWM
    also counts the pages of files it maps (part files, the lists file being merged), which the kernel can
    drop at any time."""

    def __init__(self) -> None:
        import threading

        self.peak = status_mb("RssAnon")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, status_mb("RssAnon"))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.peak, status_mb("RssAnon"))


def blocks(matrix: Path):
    """``(start, float32 block)`` of the .npy matrix, read with plain reads."""
    with open(matrix, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = header(fh)
        assert dtype == np.float32 and not fortran and shape[1] == D
        n = shape[0]
        for start in range(0, n, BLOCK):
            m = min(BLOCK, n - start)
            yield start, np.fromfile(fh, dtype=np.float32, count=m * D).reshape(m, D)


def texts_for(start: int, count: int, sentences: list[str]) -> list[str]:
    s = len(sentences)
    return [sentences[i] if i < s else f"{sentences[(i - s) % s]} ({i})" for i in range(start, start + count)]


class Precomputed:
    """The writer's encoder for vectors computed elsewhere: its spec only (nothing is embedded)."""

    def __init__(self) -> None:
        from semsearch.encoder import EncoderSpec

        self.spec = EncoderSpec(model="precomputed-all-MiniLM-L6-v2", fingerprint="bench", dimension=D,
                                max_length=256)
        self.dimension = D


def build(variant: str, matrix: Path, out: Path) -> None:
    """One build in this fresh process; prints a JSON line."""
    import faiss

    from semsearch.corpus import Record
    from semsearch.index import IndexWriter
    from semsearch.index.ondisk import LocalAdder
    from semsearch.vectors import TRAIN_POINTS_PER_LIST, TRAIN_SEED, nlist_for

    sentences = (_data.CACHE / "real-minilm.txt").read_text(encoding="utf-8").split("\n")
    n = np.load(matrix, mmap_mode="r").shape[0]
    if variant == "ondisk-ray":
        import ray

        from semsearch.distributed import _RayAdder

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    base = peak_rss_mb()
    anon = AnonPeak()
    started = time.perf_counter()
    phases = {}
    if variant == "faiss":
        nlist = nlist_for(n)
        index = faiss.index_factory(D, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        x = np.concatenate([b for _, b in blocks(matrix)])
        rows = np.sort(np.random.default_rng(TRAIN_SEED).choice(n, size=min(n, TRAIN_POINTS_PER_LIST * nlist),
                                                                  replace=False))
        index.cp.min_points_per_centroid = 1
        index.train(x[rows])
        phases["trained_s"] = time.perf_counter() - started
        index.add_with_ids(x, np.arange(n, dtype=np.int64))
        out.mkdir(parents=True, exist_ok=True)
        faiss.write_index(index, str(out / "index.faiss"))
    else:
        with IndexWriter(out, Precomputed(), index_type="ivf", expected_count=n, auto_compact=False) as writer:
            if variant == "ondisk":
                writer.build_on_disk(LocalAdder(), rows_per_part=BLOCK)
            elif variant == "ondisk-ray":
                writer.build_on_disk(_RayAdder(), rows_per_part=BLOCK, put=ray.put)
            for start, vectors in blocks(matrix):
                records = [Record(text=t, id=f"d{start + i}", line=start + i + 1)
                           for i, t in enumerate(texts_for(start, len(vectors), sentences))]
                writer.add(records, vectors=vectors)
            phases["added_s"] = time.perf_counter() - started  # documents written; the rest is the commit
    wall = time.perf_counter() - started
    anon_peak = anon.stop()
    from semsearch.index.ondisk import LAST_MERGE

    child = dict(LAST_MERGE)  # the merge child's own figures (ondisk variants)
    sizes = {p.name: p.stat().st_size for p in out.iterdir() if p.is_file()}
    print(json.dumps({"variant": variant, "n": n, "wall": wall, **phases, "peak_mb": peak_rss_mb(),
                      "anon_peak_mb": anon_peak, "base_mb": base, "child_peak_mb": child.get("VmHWM"), "child_anon_mb": child.get("RssAnon"), "sizes": sizes}))


def evaluate(matrix: Path, folders: dict[str, str], queries: int) -> None:
    """Recall@10 against an exact scan and one-query latency, for each built index; prints a JSON line."""
    import faiss

    from semsearch.index import Index

    x = np.load(matrix)
    real = np.load(_data.CACHE / "real-minilm.npy")
    rng = np.random.default_rng(99)
    q = real[rng.choice(len(real), size=queries, replace=False)]
    noise = rng.standard_normal(q.shape).astype(np.float32)
    q = q + noise * (0.3 / np.linalg.norm(noise, axis=1, keepdims=True))
    q = np.ascontiguousarray(q / np.linalg.norm(q, axis=1, keepdims=True), dtype=np.float32)
    exact = faiss.IndexFlatIP(D)
    exact.add(x)
    _, truth = exact.search(q, 10)
    del exact, x
    result = {}
    for variant, folder in folders.items():
        if variant == "faiss":
            index = faiss.read_index(str(Path(folder) / "index.faiss"), faiss.IO_FLAG_MMAP)
            index.nprobe = max(32, -(-index.nlist // 32))
            _, found = index.search(q, 10)

            def one(v, index=index):
                index.search(v, 10)
        else:
            opened = Index.open(folder)
            hits = opened.search_vectors(q, k=10)
            found = np.array([[int(h.id[1:]) for h in row] + [-1] * (10 - len(row)) for row in hits])

            def one(v, opened=opened):
                opened.search_vectors(v, k=10)
        recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)]))
        for v in q[:50]:  # warm the pages and the caches
            one(v[None])
        times = []
        for v in q[:300]:
            t = time.perf_counter()
            one(v[None])
            times.append(time.perf_counter() - t)
        result[variant] = {"recall": recall, "p50_ms": 1000 * float(np.median(times))}
    print(json.dumps(result))


def settle(most: float = 120.0) -> None:
    """Wait (at most ``most`` seconds) for the 1-minute load to fall under 0.8 after the previous step."""
    deadline = time.monotonic() + most
    while os.getloadavg()[0] >= 0.8 and time.monotonic() < deadline:
        time.sleep(5)


def spawn(*args: str) -> dict:
    settle()
    load = _report.load_average()
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd="/tmp")
    if done.returncode:
        sys.exit(f"{' '.join(args[:2])} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["load_before"] = load
    result["load_after"] = _report.load_average()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="50k vectors; writes nothing")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "MATRIX", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--evaluate", nargs=3, metavar=("MATRIX", "FOLDERS", "QUERIES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return build(args.child[0], Path(args.child[1]), Path(args.child[2]))
    if args.evaluate:
        return evaluate(Path(args.evaluate[0]), json.loads(args.evaluate[1]), int(args.evaluate[2]))
    n = 50_000 if args.quick else args.n
    import shutil
    import tempfile

    from dedupe_scale import realish_file

    matrix = realish_file(n, None)
    work = Path(tempfile.mkdtemp(prefix="ondisk-ivf-", dir=_data.CACHE))
    rows, folders = [], {}
    try:
        for variant in args.variants.split(","):
            folder = work / variant
            row = spawn("--child", variant, str(matrix), str(folder))
            rows.append(row)
            folders[variant] = str(folder)
            print(f"  {variant}: {row['wall']:.1f} s, peak {row['peak_mb']:.0f} MB (load {row['load_before']})",
                  file=sys.stderr)
        quality = spawn("--evaluate", str(matrix), json.dumps(folders), str(args.queries))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = report(rows, quality, n)
    print("\n".join(lines))
    if not args.quick:
        RESULTS.write_text("\n".join(lines) + "\n")
        print(f"wrote {RESULTS}", file=sys.stderr)


def report(rows: list[dict], quality: dict, n: int) -> list[str]:
    lines = ["# Building a large IVF index: vectors in memory, or parts merged on disk", "",
             "## Setup", "",
             f"- Machine: {os.cpu_count()} CPUs ({_report.cpu_model()}), "
             f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB; no GPU. Nothing else ran "
             "beside the benchmark: one build at a time, each in a fresh process.",
             f"- Software: {_report.versions(('semsearch', 'faiss-cpu', 'numpy', 'ray'))}",
             f"- Data: {n:,} real-ish 384-d vectors (benchmarks/_data.py `realish`: real all-MiniLM-L6-v2 sentence "
             "embeddings, then perturbed copies), precomputed; texts are the source sentences. Read a block of "
             f"{BLOCK:,} at a time with plain reads, so peak memory is what each process holds.",
             "- Variants (see the script's docstring): `faiss` = FAISS directly, everything in memory, no "
             "documents (the reference); `memory` = semsearch's writer holding every vector until the commit "
             "(how `--engine ray` wrote IVF before); `ondisk` = the writer with parts merged on disk, parts filled "
             "in-process; `ondisk-ray` = parts filled by Ray tasks on a local 2-CPU cluster, as `--engine ray` "
             "does now. Peak memory of `ondisk-ray` is the driver's; the parts pass through Ray's object store. "
             "The on-disk variants merge in a child process (FAISS fills the lists file through a memory map); "
             "it reports its own peak resident memory (VmHWM, which counts the mapped part and lists pages) and the "
             "anonymous memory it holds at its end (RssAnon).",
             "- Quality: 1,000 queries (seeded perturbations of real vectors, noise norm 0.3), recall@10 against an "
             "exact scan, default nprobe; one-query median over 300 warm queries.", "",
             "## Results", "",
             "| variant | build wall | of which commit (train, add, merge, write) | peak held (anonymous) "
             "| peak resident (VmHWM; at start) | merge child's peak resident (held at its end) | files | recall@10 | one query p50 "
             "| load before / after |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        commit = f"{row['wall'] - row['added_s']:.1f} s" if "added_s" in row else "—"
        size = sum(row["sizes"].values()) / 2**20
        q = quality.get(row["variant"], {})
        child = (f"{row['child_peak_mb']:,.0f} MB ({row['child_anon_mb']:,.0f} MB held)" if row.get("child_peak_mb")
                 else "—")
        lines.append(f"| {row['variant']} | {row['wall']:.1f} s | {commit} | {row['anon_peak_mb']:,.0f} MB "
                     f"| {row['peak_mb']:,.0f} MB ({row['base_mb']:,.0f}) | {child} | "
                     f"{size:,.0f} MB | {q.get('recall', float('nan')):.4f} | {q.get('p50_ms', float('nan')):.2f} ms "
                     f"| {row['load_before']} → {row['load_after']} |")
    lines += ["", "Files per variant: " + "; ".join(
        f"{row['variant']}: " + ", ".join(f"{k} {v / 2**20:,.1f} MB" for k, v in sorted(row["sizes"].items())
                                        if v > 1 << 20) for row in rows), ""]
    return lines


if __name__ == "__main__":
    main()
