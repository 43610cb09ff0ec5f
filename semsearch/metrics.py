"""Measures for choosing a model and a threshold: ranking metrics and the best-F1 threshold.

Pure functions of rankings, judgements and scores (no model), written to match the definitions of
``trec_eval`` (which BEIR reports through ``pytrec_eval``):

- nDCG@k: ``sum(grade_i / log2(i + 1))`` over the first k results, divided by the same sum over the judged
  documents in the best order; gains are the graded judgements as given (linear, not ``2**g - 1``).
- MRR@k: ``1 / rank`` of the first relevant result within the first k, else 0.
- recall@k: relevant results within the first k over all relevant documents of the query.
- MAP: the mean over queries of average precision, ``sum(precision@i for each relevant result i) / relevant``,
  over the whole ranking given (its depth is the caller's choice).

A document is relevant when its grade is above 0. Queries without a relevant document are left out of the
means (and counted), as ``trec_eval`` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from .errors import InvalidArgument

RECALL_AT = (1, 10, 100)


def _unique(ranking: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for doc in ranking:
        if doc not in seen:
            seen.add(doc)
            out.append(doc)
    return out


def dcg(grades: Sequence[float]) -> float:
    """Discounted cumulative gain of grades in rank order (rank 1 first)."""
    return float(sum(g / math.log2(i + 2) for i, g in enumerate(grades)))


def ndcg_at_k(ranking: Sequence[str], judgements: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k of one ranked list of document ids against the graded ``judgements`` of its query."""
    ideal = dcg(sorted((max(g, 0) for g in judgements.values()), reverse=True)[:k])
    if ideal == 0:
        return 0.0
    return dcg([max(judgements.get(doc, 0), 0) for doc in _unique(ranking)[:k]]) / ideal


def reciprocal_rank_at_k(ranking: Sequence[str], judgements: Mapping[str, int], k: int = 10) -> float:
    """``1 / rank`` of the first relevant document within the first k, else 0."""
    for rank, doc in enumerate(_unique(ranking)[:k], start=1):
        if judgements.get(doc, 0) > 0:
            return 1.0 / rank
    return 0.0


def recall_at_k(ranking: Sequence[str], judgements: Mapping[str, int], k: int) -> float:
    """Share of the query's relevant documents found within the first k."""
    relevant = {doc for doc, g in judgements.items() if g > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(_unique(ranking)[:k])) / len(relevant)


def average_precision(ranking: Sequence[str], judgements: Mapping[str, int]) -> float:
    """Average precision of a ranked list; relevant documents it misses count as precision 0."""
    relevant = {doc for doc, g in judgements.items() if g > 0}
    if not relevant:
        return 0.0
    found, total = 0, 0.0
    for rank, doc in enumerate(_unique(ranking), start=1):
        if doc in relevant:
            found += 1
            total += found / rank
    return total / len(relevant)


@dataclass(frozen=True)
class RetrievalMetrics:
    """Means over the judged queries (fractions in [0, 1])."""

    ndcg_at_10: float
    mrr_at_10: float
    recall: dict[int, float]  # k -> recall@k
    map: float
    queries: int  # queries evaluated (with at least one relevant document)
    skipped: int = 0  # judged queries without a relevant document, left out
    depth: int = 0  # results per query that MAP saw
    per_query: dict[str, dict[str, float]] = field(default_factory=dict, repr=False)


def retrieval_metrics(run: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]],
                      recall_at: Sequence[int] = RECALL_AT, depth: int = 0) -> RetrievalMetrics:
    """Score the rankings in ``run`` (query id -> document ids, best first) against ``qrels``.

    Every query of ``qrels`` with a relevant document counts; a query missing from ``run`` scores 0.
    """
    per_query: dict[str, dict[str, float]] = {}
    skipped = 0
    for qid, judgements in qrels.items():
        if not any(g > 0 for g in judgements.values()):
            skipped += 1
            continue
        ranking = run.get(qid, [])
        scores = {"ndcg@10": ndcg_at_k(ranking, judgements, 10), "mrr@10": reciprocal_rank_at_k(ranking, judgements, 10),
                  "map": average_precision(ranking, judgements)}
        scores.update({f"recall@{k}": recall_at_k(ranking, judgements, k) for k in recall_at})
        per_query[qid] = scores
    if not per_query:
        return RetrievalMetrics(0.0, 0.0, {k: 0.0 for k in recall_at}, 0.0, 0, skipped, depth)

    def mean(name: str) -> float:
        return float(np.mean([s[name] for s in per_query.values()]))

    return RetrievalMetrics(mean("ndcg@10"), mean("mrr@10"), {k: mean(f"recall@{k}") for k in recall_at}, mean("map"),
                            len(per_query), skipped, depth, per_query)


# ---------------------------------------------------------------------------------------------- thresholds
@dataclass(frozen=True)
class ThresholdResult:
    """Pairs with score >= ``threshold`` predicted duplicates; precision, recall and F1 of that."""

    threshold: float
    precision: float
    recall: float
    f1: float
    true_positives: int
    false_positives: int
    false_negatives: int


def at_threshold(scores: Sequence[float], labels: Sequence[int], threshold: float) -> ThresholdResult:
    """Precision, recall and F1 of predicting ``score >= threshold`` as a duplicate (label 1)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    predicted = scores >= threshold
    tp = int(np.sum(predicted & labels))
    fp = int(np.sum(predicted & ~labels))
    fn = int(np.sum(~predicted & labels))
    return _result(threshold, tp, fp, fn)


def _result(threshold: float, tp: int, fp: int, fn: int) -> ThresholdResult:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return ThresholdResult(float(threshold), precision, recall, f1, tp, fp, fn)


def best_f1_threshold(scores: Sequence[float], labels: Sequence[int]) -> ThresholdResult:
    """The threshold with the highest F1 (the highest such threshold on a tie).

    Only cuts between distinct scores are possible: tied pairs fall on the same side. The threshold is
    halfway between the lowest score kept and the next lower score, so that ``score >= threshold``
    reproduces the cut.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    if len(scores) != len(labels):
        raise InvalidArgument(f"{len(scores)} scores for {len(labels)} labels")
    positives = int(labels.sum())
    if positives == 0:
        raise InvalidArgument("no duplicate (label 1) pairs: F1 is undefined")
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], labels[order]
    cumulative = np.cumsum(hits)
    # the last position of each run of equal scores is where a cut can go
    ends = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True))
    best: ThresholdResult | None = None
    for end in ends:
        tp = int(cumulative[end])
        kept = end + 1
        f1 = 2 * tp / (kept + positives)
        if best is None or f1 > best.f1:
            if end + 1 < len(ranked):
                threshold = (ranked[end] + ranked[end + 1]) / 2
                if not ranked[end + 1] < threshold <= ranked[end]:  # halfway rounded onto a neighbour
                    threshold = ranked[end]
            else:
                threshold = ranked[end]
            best = _result(threshold, tp, kept - tp, positives - tp)
    return best


@dataclass(frozen=True)
class PairsResult:
    """``eval pairs``: the best-F1 threshold, and the same measures at a given threshold."""

    best: ThresholdResult
    at: ThresholdResult | None
    pairs: int
    duplicates: int
    skipped: int = 0


@dataclass(frozen=True)
class NliResult:
    """``eval nli``: accuracy of the softmax head (x100)."""

    accuracy: float
    pairs: int
    majority: float  # x100: the share of the most frequent gold label, the score of always guessing it
    labels: tuple[str, ...]
    confusion: list[list[int]]  # confusion[gold][predicted]
    skipped: int = 0


@dataclass(frozen=True)
class TripletResult:
    """Share of triplets with d(anchor, positive) < d(anchor, negative), Euclidean (x100)."""

    accuracy: float
    triplets: int
    skipped: int = 0


def triplet_accuracy(anchor: np.ndarray, positive: np.ndarray, negative: np.ndarray) -> float:
    """Share (x100) of rows where the anchor is strictly nearer the positive than the negative."""
    near = np.linalg.norm(anchor - positive, axis=1)
    far = np.linalg.norm(anchor - negative, axis=1)
    return 100.0 * float(np.mean(near < far))
