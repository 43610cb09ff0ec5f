"""GPU benchmark: exact threshold mining for n = 10k, 100k and 1M on one CUDA device, synthetic and real vectors.

Run it in one call on a machine with a CUDA GPU, from the repository root:

    python benchmarks/gpu_mining.py [--real benchmarks/.cache/real-minilm.npy] [--sizes 10000,100000,1000000]

It needs only numpy and torch (and sentence-transformers for the reference rows); semsearch is imported from
this checkout. It prints one line per case as it goes, then a markdown table, and writes it to
benchmarks/results/gpu_mining.md (and to $OUT/gpu_mining.md when $OUT is set). Without a CUDA device it
refuses: there is nothing to measure.

Vectors. synthetic: n unit Gaussian vectors (384-d, seeded) in which 10 % of the rows are replaced by noisy
copies (noise norm U(0.1, 0.6)) of earlier rows, so that pairs above the threshold exist. real: the
all-MiniLM-L6-v2 embeddings of the 41,073 unique STSb + SNLI sentences (benchmarks/.cache/real-minilm.npy,
made by benchmarks/_data.py; a float16 copy is accepted), a seeded sample for n <= 41,073, else all of them
plus perturbed copies as in benchmarks/_data.realish.

Each case: threshold 0.8, `mine_pairs(x, 0.8, device="cuda")` from host float32 vectors to sorted host pairs
(the copy to the device included), after one warm-up run; peak = torch.cuda.max_memory_allocated during the
call, above what was allocated before it. For n <= 100k the pairs are checked against the CPU result (same
set, max score difference) and sentence-transformers' paraphrase_mining_embeddings runs on the GPU too.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

THRESHOLD = 0.8
RESULTS = ROOT / "benchmarks" / "results" / "gpu_mining.md"


def synthetic(n: int, d: int = 384, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    copies = np.sort(rng.choice(np.arange(1, n), size=n // 10, replace=False))
    sources = (rng.random(len(copies)) * copies).astype(np.int64)  # an earlier row
    noise = rng.standard_normal((len(copies), d), dtype=np.float32)
    noise *= (rng.uniform(0.1, 0.6, (len(copies), 1)) / np.linalg.norm(noise, axis=1, keepdims=True)).astype(np.float32)
    x[copies] = x[sources] + noise
    x[copies] /= np.linalg.norm(x[copies], axis=1, keepdims=True)
    return x


def real(n: int, path: Path) -> np.ndarray:
    import _data

    vectors = np.load(path).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    if n <= len(vectors):
        rows = np.sort(np.random.default_rng(0).choice(len(vectors), size=n, replace=False))
        return np.ascontiguousarray(vectors[rows])
    return _data.realish(vectors, n)


def measure(fn):
    import torch

    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    started = time.perf_counter()
    result = fn()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return result, seconds, (torch.cuda.max_memory_allocated() - before) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", type=Path, default=None, help="real embeddings (.npy)")
    parser.add_argument("--sizes", default="10000,100000,1000000")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        sys.exit("benchmarks/gpu_mining.py needs a CUDA GPU and found none (torch.cuda.is_available() is False): "
                 "nothing was measured. Run it on a machine with an NVIDIA GPU; the CPU numbers are in "
                 "benchmarks/results/mining.md (python benchmarks/mining.py).")
    from semsearch.mining import mine_pairs

    real_path = args.real
    if real_path is None:
        for name in ("real-minilm.npy", "real-minilm-f16.npy"):
            if (ROOT / "benchmarks" / ".cache" / name).is_file():
                real_path = ROOT / "benchmarks" / ".cache" / name
                break
    sizes = [int(s) for s in args.sizes.split(",")]
    props = torch.cuda.get_device_properties(0)
    lines = ["# GPU mining benchmark (issue 3)", "",
             f"- Device: {props.name}, {props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs; "
             f"torch {torch.__version__} (CUDA {torch.version.cuda}); host: {os.cpu_count()} CPU cores.",
             f"- Task: every pair with cosine >= {THRESHOLD}, exact: float16 block search with a proven rounding "
             "margin, float64 re-scoring on the device; time = host float32 vectors in, sorted host pairs out "
             "(copy to the device included), after a warm-up; peak = max_memory_allocated above the start.",
             "- Vectors: see the docstring of benchmarks/gpu_mining.py"
             + ("" if real_path else " (no real embeddings found: synthetic only)") + ".", "",
             "| vectors | n | contender | seconds | peak device MiB | pairs >= t | check |",
             "|---|---:|---|---:|---:|---:|---|"]
    print("\n".join(lines), flush=True)

    def write() -> None:
        text = "\n".join(lines) + "\n"
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text, encoding="utf-8")
        if os.environ.get("OUT"):
            Path(os.environ["OUT"], "gpu_mining.md").write_text(text, encoding="utf-8")

    mine_pairs(synthetic(8192, seed=1), THRESHOLD, device="cuda")  # warm-up: context, cuBLAS, kernels
    kinds = [("synthetic", synthetic)] + ([("real", lambda n: real(n, real_path))] if real_path else [])
    for kind, make in kinds:
        for n in sizes:
            x = make(n)
            pairs, seconds, peak = measure(lambda x=x: mine_pairs(x, THRESHOLD, device="cuda"))
            check = f"{pairs.dtype} blocks of {pairs.chunk_size:,}, {pairs.candidates:,} re-scored"
            if n <= 100_000:
                cpu = mine_pairs(x, THRESHOLD, device="cpu")
                same = np.array_equal(cpu.left, pairs.left) and np.array_equal(cpu.right, pairs.right)
                diff = float(np.abs(cpu.scores - pairs.scores).max()) if same and len(cpu) else 0.0
                check += f"; CPU result: {'same pairs' if same else 'DIFFERENT PAIRS'}, max |Δscore| {diff:.1e}"
            lines.append(f"| {kind} | {n:,} | semsearch | {seconds:.2f} | {peak:,.0f} | {len(pairs):,} | {check} |")
            print(lines[-1], flush=True)
            if n <= 100_000:
                from sentence_transformers.util import paraphrase_mining_embeddings

                top_k = 100 if n <= 10_000 else 10
                device_x = torch.from_numpy(x).cuda()
                found, seconds, peak = measure(lambda x=device_x, k=top_k: paraphrase_mining_embeddings(x, top_k=k))
                theirs = {(i, j) for s, i, j in found if s >= THRESHOLD}
                ours = set(zip(pairs.left.tolist(), pairs.right.tolist()))
                lines.append(f"| {kind} | {n:,} | sentence-transformers top_k={top_k} | {seconds:.2f} | {peak:,.0f} | "
                             f"{len(theirs):,} | misses {len(ours - theirs):,} of ours; finds {len(theirs - ours)} "
                             f"we miss |")
                print(lines[-1], flush=True)
                del device_x
            write()
    lines += ["", "sentence-transformers is not run at 1M (its per-sentence top-k over 1M columns would take most of "
              "the call's time budget); its rows use its defaults except top_k."]
    write()
    print(f"wrote {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
