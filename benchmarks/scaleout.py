"""Benchmark: indexing the same sentences locally and on a local Ray cluster with 2 encoding workers (issue 16).

    python benchmarks/scaleout.py            # N = 100,000; writes benchmarks/results/scaleout.md
    python benchmarks/scaleout.py --quick    # N = 600: checks the script (a few minutes), writes nothing

What is measured, on this machine's cores (Ray cannot add cores it does not have, so this is the cost of the
machinery, not a speed-up):
  local    `semsearch.api.index_corpus` of a JSONL corpus of N sentences, one process, torch on every core
  ray      `semsearch.distributed.index_corpus_ray` of the same file: a local Ray cluster with one CPU per core
           (`ray.init(num_cpus=...)`, start-up timed on its own), 2 actors with one torch thread each, the driver
           writing the index; wall time includes the actors' start and model loads
  encode   the Ray read + encode pipeline alone (no index write): rows/s overall, and each worker's rate from the
           seconds the actors spent inside `Encoder.encode` (summed over actors), which is what a node adds
           per CPU when the cluster grows
The overhead ratio is ray wall / local wall. The sentences are the unique STSb + SNLI sentences (41,073), then
the same ones again with " (k)" appended, k = 1, 2, ..., up to N, so every record is a distinct text.
GPU actors (`--gpus-per-worker 1`) are not measured: no GPU is lent to this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _data  # noqa: E402

RESULTS = _data.ROOT / "benchmarks" / "results" / "scaleout.md"


def corpus(n: int, folder: Path) -> Path:
    unique = _data.unique_sentences()
    path = folder / f"sentences-{n}.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            text = unique[i % len(unique)] + (f" ({i // len(unique)})" if i >= len(unique) else "")
            fh.write(json.dumps({"id": f"s{i}", "text": text}) + "\n")
    return path


def load() -> str:
    return " / ".join(f"{v:.1f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="N = 600; writes nothing")
    parser.add_argument("-n", type=int, default=100_000, help="sentences")
    parser.add_argument("--workers", type=int, default=2, help="Ray encoding actors")
    args = parser.parse_args()
    n = 600 if args.quick else args.n
    cpus = os.cpu_count() or 1
    folder = Path(tempfile.mkdtemp(prefix="scaleout-"))
    os.environ["SEMSEARCH_INDEXES"] = str(folder / "indexes")
    try:
        path = corpus(n, folder)
        rows = measure(path, n, args.workers, cpus)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    lines = report(rows, n, args.workers, cpus)
    print("\n".join(lines))
    if not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text("\n".join(lines), encoding="utf-8")
        print(f"wrote {RESULTS}", file=sys.stderr)


def measure(path: Path, n: int, workers: int, cpus: int) -> dict:
    import numpy as np
    import torch

    from semsearch.api import index_corpus

    out: dict = {"torch_threads": torch.get_num_threads()}
    out["local_load"] = load()
    started = time.perf_counter()
    report = index_corpus(path, "local")
    out["local_s"] = time.perf_counter() - started
    assert report.added == n, report
    print(f"local: {out['local_s']:.1f} s ({n / out['local_s']:.0f} docs/s)", file=sys.stderr)

    import ray

    from semsearch.dedupe import index_vectors
    from semsearch.distributed import _embedded_batches, _records_dataset, index_corpus_ray

    started = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    out["ray_start_s"] = time.perf_counter() - started
    try:
        out["ray_load"] = load()
        started = time.perf_counter()
        report = index_corpus_ray(path, "on-ray", workers=workers)
        out["ray_s"] = time.perf_counter() - started
        assert report.added == n, report
        print(f"ray: {out['ray_s']:.1f} s ({n / out['ray_s']:.0f} docs/s)", file=sys.stderr)
        local_docs, local_vectors, _, _ = index_vectors("local")
        ray_docs, ray_vectors, _, _ = index_vectors("on-ray")
        out["same_ids"] = [d.id for d in local_docs] == [d.id for d in ray_docs]
        out["max_vector_diff"] = float(np.abs(local_vectors - ray_vectors).max())

        from semsearch.index import Index

        spec = Index.open("local").spec.to_dict()
        out["encode_load"] = load()
        started = time.perf_counter()
        rows, actor_seconds = 0, 0.0
        dataset = _records_dataset(path, format=None, text_field="text", id_field="id")
        for batch in _embedded_batches(dataset, model=None, spec=spec, backend="auto", precision="fp32",
                                       batch_size=32, workers=workers, rows_per_batch=1024, gpus=0):
            rows += len(batch)
            actor_seconds += float(np.sum(batch.column("encode_s").to_numpy()))
        out["encode_s"] = time.perf_counter() - started
        out["encode_rows"] = rows
        out["actor_encode_s"] = actor_seconds
    finally:
        ray.shutdown()
    return out


def report(r: dict, n: int, workers: int, cpus: int) -> list[str]:
    import torch
    from importlib.metadata import version

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               "unknown CPU")
    per_worker = r["encode_rows"] / r["actor_encode_s"] if r["actor_encode_s"] else float("nan")
    return [
        "# Scale-out: Ray with 2 workers vs local (issue 16)", "",
        f"- Machine: {cpu}, {cpus} cores, no GPU; Linux {platform.release()}; shared with other jobs (load averages "
        "below). Python {0}, torch {1}, ray {2}.".format(platform.python_version(), torch.__version__,
                                                          version("ray")),
        f"- Model: all-MiniLM-L6-v2 (bundled), fp32, batch 32. Corpus: {n:,} distinct sentences as JSONL "
        "(benchmarks/scaleout.py says how they are made).",
        f"- Backend: the default (`auto`: onnxruntime). local: `index_corpus`, one process, encoding on all "
        f"{cpus} cores. ray: a local cluster (`ray.init(num_cpus={cpus})`), {workers} actors × 1 CPU (one encoding "
        "thread each), the driver writing the index; actor start and model loads included. Same cores for both: "
        "the ratio is Ray's overhead, not a speed-up.", "",
        "| run | wall s | docs/s | load at start |", "|---|---:|---:|---|",
        f"| local index | {r['local_s']:.1f} | {n / r['local_s']:.0f} | {r['local_load']} |",
        f"| Ray cluster start | {r['ray_start_s']:.1f} | | |",
        f"| Ray index ({workers} workers) | {r['ray_s']:.1f} | {n / r['ray_s']:.0f} | {r['ray_load']} |",
        f"| Ray read + encode only | {r['encode_s']:.1f} | {r['encode_rows'] / r['encode_s']:.0f} | "
        f"{r['encode_load']} |", "",
        f"- **Overhead ratio** (Ray index wall / local index wall): **{r['ray_s'] / r['local_s']:.2f}×** "
        f"({(r['ray_s'] + r['ray_start_s']) / r['local_s']:.2f}× with the cluster start).",
        f"- **Per-worker encode rate** (rows / seconds inside `Encoder.encode`, summed over the {workers} actors, one "
        f"CPU each): **{per_worker:.0f} sentences/s per worker**.",
        f"- The two indexes: same ids in the same order: {r['same_ids']}; largest vector difference "
        f"{r['max_vector_diff']:.1e}.",
        "- Not measured here: GPU actors (`--gpus-per-worker 1`; no GPU on this machine) and more than one node.",
        f"- Load average after: {load()}.", ""]


if __name__ == "__main__":
    main()
