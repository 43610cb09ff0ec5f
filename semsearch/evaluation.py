"""Evaluation: STS (Spearman and Pearson x100 between cosine similarity and gold scores)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import InputError

if TYPE_CHECKING:
    from .encoder import Encoder


@dataclass(frozen=True)
class ScoredPair:
    sentence1: str
    sentence2: str
    score: float


@dataclass(frozen=True)
class StsResult:
    spearman: float  # x100
    pearson: float  # x100
    pairs: int


def read_sts(path: str | Path) -> list[ScoredPair]:
    """Scored pairs from a CSV/TSV file: ``sentence1, sentence2, score`` (a header row is optional)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file" if not path.exists() else "is not a file")
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    pairs: list[ScoredPair] = []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            if len(row) < 3:
                raise InputError(path, f"expected sentence1, sentence2, score; got {len(row)} fields", line)
            try:
                score = float(row[2])
            except ValueError:
                if not pairs and line == 1:
                    continue  # a header
                raise InputError(path, f"score {row[2]!r} is not a number", line) from None
            pairs.append(ScoredPair(row[0], row[1], score))
    if not pairs:
        raise InputError(path, "no scored pairs")
    return pairs


def rankdata(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing their average rank (as scipy.stats.rankdata's default)."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    boundaries = np.concatenate(([True], sorted_values[1:] != sorted_values[:-1], [True]))
    starts = np.flatnonzero(boundaries)
    ranks_sorted = np.empty(len(values), dtype=np.float64)
    for begin, end in zip(starts[:-1], starts[1:]):
        ranks_sorted[begin:end] = (begin + end + 1) / 2.0
    ranks = np.empty_like(ranks_sorted)
    ranks[order] = ranks_sorted
    return ranks


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64) - np.mean(x)
    y = np.asarray(y, dtype=np.float64) - np.mean(y)
    return float((x @ y) / np.sqrt((x @ x) * (y @ y)))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    return pearson(rankdata(x), rankdata(y))


def cosine_scores(encoder: "Encoder", pairs: list[ScoredPair], batch_size: int = 32) -> np.ndarray:
    """Cosine similarity of each pair; each distinct sentence is embedded once."""
    sentences = sorted({p.sentence1 for p in pairs} | {p.sentence2 for p in pairs})
    position = {s: i for i, s in enumerate(sentences)}
    vectors = encoder.encode(sentences, batch_size=batch_size).astype(np.float64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
    a = vectors[[position[p.sentence1] for p in pairs]]
    b = vectors[[position[p.sentence2] for p in pairs]]
    return np.einsum("ij,ij->i", a, b)


def evaluate_sts(encoder: "Encoder", path: str | Path, batch_size: int = 32) -> StsResult:
    """Spearman and Pearson correlation (x100) of cosine similarity with the gold scores of ``path``."""
    pairs = read_sts(path)
    predicted = cosine_scores(encoder, pairs, batch_size)
    gold = np.array([p.score for p in pairs])
    return StsResult(100 * spearman(predicted, gold), 100 * pearson(predicted, gold), len(pairs))
