"""Real sentence embeddings for the mining benchmarks, cached under benchmarks/.cache/ (git-ignored).

The sentences are every unique sentence of the shared STSb (train, dev, test) and SNLI (validation, test)
files, in first-seen order over those files; they are embedded once with the bundled all-MiniLM-L6-v2
(semsearch's Encoder, CPU, fp32) and the float32 matrix is cached as .npy beside a text file of the
sentences. Larger sets are built from them as stated in :func:`realish`.
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CACHE = ROOT / "benchmarks" / ".cache"
FILES = [("stsb/stsb-en-train.csv", ",", False), ("stsb/stsb-en-dev.csv", ",", False),
         ("stsb/stsb-en-test.csv", ",", False), ("nli/snli-validation.tsv", "\t", True),
         ("nli/snli-test.tsv", "\t", True)]


def unique_sentences() -> list[str]:
    """Every unique sentence (first two columns) of the STSb and SNLI files, in first-seen order."""
    if not DATA.is_dir():
        sys.exit(f"needs the shared data at {DATA} (absent in this clone)")
    seen: dict[str, None] = {}
    for name, delimiter, header in FILES:
        with open(DATA / name, newline="", encoding="utf-8") as fh:
            rows = csv.reader(fh, delimiter=delimiter)
            if header:
                next(rows)
            for row in rows:
                for text in row[:2]:
                    text = text.strip()
                    if text:
                        seen.setdefault(text, None)
    return list(seen)


def real_embeddings(verbose: bool = True) -> tuple[list[str], np.ndarray]:
    """``(sentences, float32 embeddings)`` of all unique real sentences, from the cache when present."""
    CACHE.mkdir(parents=True, exist_ok=True)
    sentences = unique_sentences()
    vectors_file, texts_file = CACHE / "real-minilm.npy", CACHE / "real-minilm.txt"
    if vectors_file.is_file() and texts_file.is_file():
        cached = texts_file.read_text(encoding="utf-8").split("\n")
        if cached == sentences:
            return sentences, np.load(vectors_file)
    from semsearch.encoder import Encoder

    if verbose:
        print(f"embedding {len(sentences)} unique sentences once (cached in {CACHE}) ...", file=sys.stderr)
    started = time.perf_counter()
    vectors = Encoder.load(device="cpu").encode(sentences, batch_size=64, show_progress=verbose)
    if verbose:
        print(f"  {time.perf_counter() - started:.0f} s", file=sys.stderr)
    np.save(vectors_file, vectors)
    texts_file.write_text("\n".join(sentences), encoding="utf-8")
    return sentences, vectors


def realish(real: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` unit vectors: all real ones first, then perturbed copies of real ones.

    Copy ``c`` (``c = 0, 1, ...``) takes real vector ``c mod len(real)``, adds an isotropic Gaussian of
    norm ``r`` drawn uniformly from [0.2, 1.0] (cosine to its source ≈ 1/sqrt(1+r²), 0.98 to 0.71) and is
    renormalised: a corpus with near-duplicates at every similarity, around real sentence structure.
    """
    if n <= len(real):
        return np.ascontiguousarray(real[:n], dtype=np.float32)
    rng = np.random.default_rng(seed)
    extra = n - len(real)
    source = real[np.arange(extra) % len(real)].astype(np.float32)
    noise = rng.standard_normal(source.shape).astype(np.float32)
    noise *= (rng.uniform(0.2, 1.0, size=(extra, 1)) / np.linalg.norm(noise, axis=1, keepdims=True)).astype(np.float32)
    copies = source + noise
    copies /= np.linalg.norm(copies, axis=1, keepdims=True)
    return np.ascontiguousarray(np.vstack([real, copies]), dtype=np.float32)


def sample(real: np.ndarray, sentences: list[str], n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """``n`` real sentences drawn without replacement (seeded), with their embeddings."""
    rows = np.sort(np.random.default_rng(seed).choice(len(real), size=n, replace=False))
    return [sentences[i] for i in rows], np.ascontiguousarray(real[rows])


if __name__ == "__main__":
    texts, vecs = real_embeddings()
    print(len(texts), vecs.shape)
