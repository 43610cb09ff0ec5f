"""Evaluation: STS (Spearman and Pearson x100 between cosine similarity and gold scores)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .errors import InputError
from .similarity import normalise_rows

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


def read_sts(path: str | Path, *, columns: str | Sequence[str] | None = None,
             format: str | None = None) -> list[ScoredPair]:
    """Scored pairs, scores as given, read by the training reader (:func:`~semsearch.training.data.read_dataset`),
    so ``train``, ``--dev`` and ``eval sts`` accept the same files: CSV, TSV or JSONL; a header row names the
    columns (``sentence1``, ``sentence2``, ``score`` in any order, or ``columns``); without one they are taken
    in that order."""
    from .training.data import DataKind, read_dataset

    data = read_dataset(path, DataKind.SCORED_PAIRS, columns=columns, format=format, score_range=None)
    return [ScoredPair(e.texts[0], e.texts[1], float(e.label)) for e in data.examples]


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
    vectors = normalise_rows(encoder.encode(sentences, batch_size=batch_size), dtype=np.float64)
    a = vectors[[position[p.sentence1] for p in pairs]]
    b = vectors[[position[p.sentence2] for p in pairs]]
    return np.einsum("ij,ij->i", a, b)


def evaluate_sts(encoder: "Encoder", path: str | Path, batch_size: int = 32, *,
                 columns: str | Sequence[str] | None = None) -> StsResult:
    """Spearman and Pearson correlation (x100) of cosine similarity with the gold scores of ``path``
    (read by :func:`read_sts`)."""
    pairs = read_sts(path, columns=columns)
    predicted = cosine_scores(encoder, pairs, batch_size)
    gold = np.array([p.score for p in pairs])
    return StsResult(100 * spearman(predicted, gold), 100 * pearson(predicted, gold), len(pairs))


def _embed_unique(encoder: "Encoder", columns: list[list[str]], batch_size: int = 32) -> list[np.ndarray]:
    """The embeddings of each column of texts, every distinct sentence embedded once."""
    sentences = sorted({s for column in columns for s in column})
    position = {s: i for i, s in enumerate(sentences)}
    vectors = encoder.encode(sentences, batch_size=batch_size).astype(np.float64)
    return [vectors[[position[s] for s in column]] for column in columns]


def evaluate_pairs(encoder: "Encoder", path: str | Path, *, threshold: float | None = None,
                   columns: str | None = None, skip_invalid: bool = False, batch_size: int = 32):
    """Duplicate pairs (``label, sentence1, sentence2``; label 0/1): the best-F1 cosine threshold, and
    precision, recall and F1 at ``threshold`` when given. Returns a :class:`~semsearch.metrics.PairsResult`."""
    from .metrics import PairsResult, at_threshold, best_f1_threshold
    from .training.data import DataKind, read_dataset

    data = read_dataset(path, DataKind.DUPLICATE_PAIRS, columns=columns, skip_invalid=skip_invalid)
    labels = [e.label for e in data.examples]
    if not any(labels):
        raise InputError(path, "no duplicate pairs (label 1): the best-F1 threshold is undefined")
    pairs = [ScoredPair(e.texts[0], e.texts[1], float(e.label)) for e in data.examples]
    scores = cosine_scores(encoder, pairs, batch_size)
    return PairsResult(best_f1_threshold(scores, labels),
                       at_threshold(scores, labels, threshold) if threshold is not None else None,
                       len(pairs), int(sum(labels)), data.skipped)


def evaluate_triplets(encoder: "Encoder", path: str | Path, *, columns: str | None = None,
                      skip_invalid: bool = False, batch_size: int = 32):
    """Triplets (``anchor, positive, negative``): the share (x100) with the anchor nearer the positive
    (Euclidean distance of the encoder's embeddings). Returns a :class:`~semsearch.metrics.TripletResult`."""
    from .metrics import TripletResult, triplet_accuracy
    from .training.data import DataKind, read_dataset

    data = read_dataset(path, DataKind.TRIPLETS, columns=columns, skip_invalid=skip_invalid)
    anchor, positive, negative = _embed_unique(encoder, [[e.texts[i] for e in data.examples] for i in range(3)],
                                               batch_size)
    return TripletResult(triplet_accuracy(anchor, positive, negative), len(data), data.skipped)


def evaluate_nli(model: str | Path, path: str | Path, *, columns: str | None = None, skip_invalid: bool = False,
                 batch_size: int = 32, device: str | None = None):
    """Accuracy (x100) of the softmax head saved beside ``model`` on labelled pairs
    (``sentence1, sentence2, label``, labels as in training). Returns a :class:`~semsearch.metrics.NliResult`."""
    import torch

    from .encoder import Encoder
    from .metrics import NliResult
    from .training.data import DataKind, read_dataset
    from .training.save import load_head

    encoder = Encoder.load(model, device=device)
    head = load_head(model, encoder)
    data = read_dataset(path, DataKind.LABELLED_PAIRS, columns=columns, skip_invalid=skip_invalid, labels=head.labels)
    features = encoder.with_options(normalize=head.normalize)  # the embeddings the head was trained on
    u, v = _embed_unique(features, [[e.texts[0] for e in data.examples], [e.texts[1] for e in data.examples]],
                         batch_size)
    with torch.inference_mode():
        logits = head.logits(torch.from_numpy(u).float().to(encoder.device), torch.from_numpy(v).float().to(encoder.device))
    predicted = logits.argmax(dim=1).cpu().numpy()
    gold = np.array([e.label for e in data.examples])
    confusion = np.zeros((head.num_labels, head.num_labels), dtype=np.int64)
    np.add.at(confusion, (gold, predicted), 1)
    majority = 100.0 * np.bincount(gold, minlength=head.num_labels).max() / len(gold)
    return NliResult(100.0 * float(np.mean(predicted == gold)), len(gold), float(majority), head.labels,
                     confusion.tolist(), data.skipped)
