"""Exact all-pairs mining against a naive numpy oracle; top-k, clusters and the keep plan."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semsearch.errors import SemsearchError
from semsearch.mining import (Keep, Pairs, exact_scores, find_clusters, mine_pairs, plan_keep, rounding_margin,
                              select_top_k)

from .conftest import shared_file

DTYPES = ["float32", "bfloat16", "float16"]


# ------------------------------------------------------------------------------------------------ oracles
def oracle_scores(x: np.ndarray) -> np.ndarray:
    """All cosines in float64, the naive way."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1)
    unit = np.divide(x, norms[:, None], out=np.zeros_like(x), where=norms[:, None] > 0)
    return unit @ unit.T


def oracle_pairs(x: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """Every (i, j, score) with i < j and score >= threshold, score descending, then i, then j."""
    s = oracle_scores(x)
    i, j = np.triu_indices(len(x), 1)
    keep = s[i, j] >= threshold
    found = [(a, b, float(s[a, b])) for a, b in zip(i[keep].tolist(), j[keep].tolist())]
    return sorted(found, key=lambda p: (-p[2], p[0], p[1]))


def oracle_top_k(pairs: list[tuple[int, int, float]], k: int) -> set[tuple[int, int]]:
    """Pairs one of whose documents ranks them among its k best (score desc, then partner position)."""
    incident: dict[int, list[tuple[float, int]]] = {}
    for a, b, s in pairs:
        incident.setdefault(a, []).append((-s, b))
        incident.setdefault(b, []).append((-s, a))
    kept = set()
    for doc, partners in incident.items():
        for _, partner in sorted(partners)[:k]:
            kept.add((min(doc, partner), max(doc, partner)))
    return kept


def separated_threshold(x: np.ndarray, quantile: float, gap: float = 1e-5) -> float:
    """A threshold near the given quantile of the pair scores with no score within ``gap`` of it.

    Float32 and float64 round differently; a threshold between two well-separated scores makes "the same
    pair set" a question with one answer.
    """
    s = oracle_scores(x)[np.triu_indices(len(x), 1)]
    values = np.unique(s)
    if len(values) < 2:
        return float(values[0]) - 0.5 if len(values) else 0.5
    start = int(quantile * (len(values) - 2))
    for k in list(range(start, len(values) - 1)) + list(range(start - 1, -1, -1)):
        if values[k + 1] - values[k] > 2 * gap:
            return float((values[k] + values[k + 1]) / 2)
    pytest.skip("no separated threshold in this draw")


def as_triples(pairs: Pairs) -> list[tuple[int, int, float]]:
    return [(p.left, p.right, p.score) for p in pairs]


def assert_same(pairs: Pairs, expected: list[tuple[int, int, float]], tol: float = 1e-5) -> None:
    got = as_triples(pairs)
    assert [(a, b) for a, b, _ in got] == [(a, b) for a, b, _ in expected]
    if got:
        assert np.abs(np.array([s for *_, s in got]) - np.array([s for *_, s in expected])).max() <= tol


def random_matrix(n: int, d: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


# ------------------------------------------------------------------------------------------------ exact mining
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunk", [1, 7, None, "n"])
def test_random_embeddings_match_the_oracle(dtype, chunk):
    x = random_matrix(48, 8, seed=1)
    threshold = separated_threshold(x, 0.9)
    pairs = mine_pairs(x, threshold, chunk_size=len(x) if chunk == "n" else chunk, dtype=dtype, device="cpu")
    expected = oracle_pairs(x, threshold)
    assert len(expected) > 20
    assert_same(pairs, expected)
    assert pairs.n == 48 and pairs.threshold == threshold and pairs.dtype == dtype


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 30), d=st.integers(1, 10), chunk=st.integers(1, 33), quantile=st.floats(0, 1),
       dtype=st.sampled_from(["float32", "bfloat16"]), seed=st.integers(0, 2**16))
def test_property_any_chunk_any_precision(n, d, chunk, quantile, dtype, seed):
    x = random_matrix(n, d, seed)
    threshold = separated_threshold(x, quantile) if n >= 2 else 0.5
    threshold = min(1.0, max(-1.0, threshold))
    assert_same(mine_pairs(x, threshold, chunk_size=chunk, dtype=dtype, device="cpu"), oracle_pairs(x, threshold))


def test_larger_matrix_default_settings():
    rng = np.random.default_rng(3)
    base = rng.standard_normal((300, 64)).astype(np.float32)
    x = np.vstack([base, base[:200] + 0.3 * rng.standard_normal((200, 64)).astype(np.float32)])
    threshold = separated_threshold(x, 0.995)
    expected = oracle_pairs(x, threshold)
    assert len(expected) >= 200
    for dtype in (None, "float32", "bfloat16"):
        assert_same(mine_pairs(x, threshold, dtype=dtype, chunk_size=64, device="cpu"), expected)


def test_scores_are_exact_not_low_precision():
    x = random_matrix(40, 16, seed=4)
    pairs = mine_pairs(x, -1.0, dtype="bfloat16", device="cpu")
    expected = oracle_pairs(x, -1.0)
    assert len(pairs) == 40 * 39 // 2
    assert np.abs(pairs.scores - np.array([s for *_, s in expected])).max() < 1e-9


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("top_k", [None, 2])
def test_the_cuda_code_path_on_cpu(monkeypatch, dtype, top_k):
    # The CUDA path keeps every step in torch; run it on the CPU so CI checks its logic without a GPU.
    import semsearch.mining as mining

    monkeypatch.setattr(mining, "_DEVICE_PATH_ON_CPU", True)
    x = random_matrix(40, 8, seed=13)
    x[[3, 30]] = x[17]
    for threshold in (-0.5, 0.0, separated_threshold(x, 0.8)):  # <= 0: the float comparison, > 0: the bits
        expected = oracle_pairs(x, threshold)
        if top_k:
            kept = oracle_top_k(expected, top_k)
            expected = [p for p in expected if (p[0], p[1]) in kept]
        for chunk in (7, None):
            assert_same(mine_pairs(x, threshold, top_k=top_k, chunk_size=chunk, dtype=dtype, device="cpu"), expected)


@pytest.mark.parametrize("n", [0, 1])
def test_fewer_than_two_documents_give_no_pairs(n):
    pairs = mine_pairs(random_matrix(n, 4), 0.0, device="cpu")
    assert len(pairs) == 0 and pairs.n == n and list(pairs) == []


def test_two_documents():
    x = np.array([[1, 0], [0, 1]], dtype=np.float32)
    assert len(mine_pairs(x, 0.5, device="cpu")) == 0
    assert as_triples(mine_pairs(x, 0.0, device="cpu")) == [(0, 1, 0.0)]  # >= is inclusive
    y = np.array([[1, 2], [2, 4]], dtype=np.float32)  # the same direction
    assert as_triples(mine_pairs(y, 1.0, device="cpu")) == [(0, 1, 1.0)]


def test_empty_matrix_without_dimension():
    assert len(mine_pairs(np.zeros((0,)), 0.5, device="cpu")) == 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_exact_duplicates_once_each_no_self_pairs_ties_by_position(dtype):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((12, 6)).astype(np.float32)
    x[[2, 5, 9]] = x[7]          # four identical rows: 2, 5, 7, 9
    x[11] = 2.5 * x[3]           # same direction, other length
    pairs = mine_pairs(x, 0.999, chunk_size=5, dtype=dtype, device="cpu")
    assert as_triples(pairs) == [(2, 5, 1.0), (2, 7, 1.0), (2, 9, 1.0), (3, 11, 1.0), (5, 7, 1.0), (5, 9, 1.0),
                                 (7, 9, 1.0)]


def test_threshold_one_finds_identical_vectors():
    x = np.tile(random_matrix(1, 384, seed=6), (3, 1))
    assert len(mine_pairs(x, 1.0, device="cpu")) == 3


def test_a_score_equal_to_the_threshold_is_kept():
    x = random_matrix(30, 8, seed=7)
    everything = mine_pairs(x, -1.0, device="cpu")
    middle = everything[len(everything) // 2]
    at = mine_pairs(x, middle.score, device="cpu", dtype="bfloat16", chunk_size=7)
    assert (middle.left, middle.right) in {(p.left, p.right) for p in at}
    assert min(at.scores) == middle.score


def test_ties_ordered_by_positions():
    # Rows 0..5 on two directions: every pair within a direction has the same score, 1.0.
    x = np.array([[1, 0], [0, 1], [1, 0], [0, 1], [1, 0], [0, 1]], dtype=np.float32)
    got = [(p.left, p.right) for p in mine_pairs(x, 0.5, chunk_size=4, device="cpu")]
    assert got == [(0, 2), (0, 4), (1, 3), (1, 5), (2, 4), (3, 5)]


def test_zero_vectors_score_zero():
    x = np.array([[0, 0], [1, 0], [1, 0.1]], dtype=np.float32)
    assert {(p.left, p.right) for p in mine_pairs(x, 0.0, device="cpu")} == {(0, 1), (0, 2), (1, 2)}
    assert [(p.left, p.right) for p in mine_pairs(x, 0.5, device="cpu")] == [(1, 2)]


def test_unnormalised_and_torch_input():
    import torch

    x = random_matrix(25, 5, seed=8) * np.linspace(0.1, 10, 25, dtype=np.float32)[:, None]
    threshold = separated_threshold(x, 0.8)
    assert_same(mine_pairs(torch.from_numpy(x), threshold, device="cpu"), oracle_pairs(x, threshold))


def test_progress_counts_every_pair_once():
    seen = []
    mine_pairs(random_matrix(23, 4), 0.9, chunk_size=5, device="cpu", progress=seen.append)
    assert sum(seen) == 23 * 22 // 2


@pytest.mark.parametrize("threshold", [1.5, -1.01, float("nan")])
def test_threshold_outside_the_cosine_range(threshold):
    with pytest.raises(SemsearchError, match="threshold must be a cosine between -1 and 1"):
        mine_pairs(random_matrix(3, 2), threshold)


@pytest.mark.parametrize("options, message", [
    ({"chunk_size": 0}, "chunk size must be a positive integer"),
    ({"top_k": 0}, "top_k must be a positive integer"),
    ({"dtype": "int8"}, "dtype must be one of"),
])
def test_bad_options(options, message):
    with pytest.raises(SemsearchError, match=message):
        mine_pairs(random_matrix(3, 2), 0.5, **options)


def test_bad_embeddings():
    with pytest.raises(SemsearchError, match="2-d matrix"):
        mine_pairs(np.zeros(5), 0.5)
    bad = random_matrix(4, 3)
    bad[2, 1] = np.nan
    with pytest.raises(SemsearchError, match="row 2"):
        mine_pairs(bad, 0.5)


def test_too_many_pairs_is_refused_not_truncated():
    with pytest.raises(SemsearchError, match="raise the threshold, or cap each document with top_k"):
        mine_pairs(random_matrix(40, 4), -1.0, max_pairs=100, chunk_size=8, device="cpu")
    assert len(mine_pairs(random_matrix(40, 4), -1.0, max_pairs=100, top_k=1, device="cpu")) <= 40


def test_rounding_margin_bounds_the_low_precision_error():
    import torch

    x = torch.nn.functional.normalize(torch.randn(500, 384, generator=torch.Generator().manual_seed(0)), dim=1)
    x[1] = x[0]  # score 1: the largest rounding of the result
    exact = x.double() @ x.double().T
    for dtype in ("bfloat16", "float16", "float32"):
        low = x.to(getattr(torch, dtype))
        error = float(((low @ low.T).double() - exact).abs().max())
        assert error < rounding_margin(dtype, 384) / 1.25


def test_falls_back_to_float32_when_the_margin_does_not_hold(monkeypatch):
    import semsearch.mining as mining

    monkeypatch.setattr(mining, "rounding_margin", lambda dtype, d: 1e-12 if dtype == "bfloat16" else 1e-4)
    x = random_matrix(40, 16, seed=9)
    threshold = separated_threshold(x, 0.9)
    pairs = mine_pairs(x, threshold, dtype="bfloat16", device="cpu")
    assert pairs.dtype == "float32"
    assert_same(pairs, oracle_pairs(x, threshold))


# ------------------------------------------------------------------------------------------------ top-k
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("chunk", [1, 7, None])
@pytest.mark.parametrize("k", [1, 3])
def test_top_k_is_exact(dtype, chunk, k):
    x = random_matrix(36, 6, seed=10)
    x[[4, 20]] = x[13]  # ties: doc 13 has two partners at 1.0; k = 1 must take the smaller position
    for threshold in (-1.0, separated_threshold(x, 0.6)):  # -1: dense blocks take the block top-k path
        expected_all = oracle_pairs(x, threshold)
        expected = [p for p in expected_all if (p[0], p[1]) in oracle_top_k(expected_all, k)]
        pairs = mine_pairs(x, threshold, top_k=k, chunk_size=chunk, dtype=dtype, device="cpu")
        assert_same(pairs, expected)
        assert pairs.top_k == k


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9), st.integers(0, 4)), max_size=40),
       st.integers(1, 4), st.integers(0, 40))
def test_select_top_k_can_prune_a_partial_set(edges, k, split):
    # Pruning relies on this: selecting from a subset, then from the kept ∪ the rest = selecting from all.
    seen, rows = set(), []
    for a, b, s in edges:
        if a != b and (min(a, b), max(a, b)) not in seen:
            seen.add((min(a, b), max(a, b)))
            rows.append((min(a, b), max(a, b), s / 4))
    left, right, scores = (np.array(c, dtype=t) for c, t in
                           zip(zip(*rows) if rows else ([], [], []), (np.int64, np.int64, np.float64)))
    full = select_top_k(left, right, scores, k)
    first = np.zeros(len(rows), dtype=bool)
    first[:split] = select_top_k(left[:split], right[:split], scores[:split], k)
    first[split:] = True
    again = np.zeros(len(rows), dtype=bool)
    again[first] = select_top_k(left[first], right[first], scores[first], k)
    assert (again == full).all()
    assert {(a, b) for (a, b, _), kept in zip(rows, full) if kept} == oracle_top_k(rows, k)


# ------------------------------------------------------------------------------------------------ clusters and plan
def components_oracle(pairs: list[tuple[int, int]]) -> list[list[int]]:
    graph: dict[int, set[int]] = {}
    for a, b in pairs:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set()).add(a)
    seen, out = set(), []
    for start in sorted(graph):
        if start in seen:
            continue
        stack, component = [start], []
        seen.add(start)
        while stack:
            node = stack.pop()
            component.append(node)
            for other in graph[node] - seen:
                seen.add(other)
                stack.append(other)
        out.append(sorted(component))
    return out


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), max_size=60))
def test_clusters_are_the_connected_components(edges):
    edges = sorted({(min(a, b), max(a, b)) for a, b in edges if a != b})
    left = np.array([a for a, _ in edges], dtype=np.int64)
    right = np.array([b for _, b in edges], dtype=np.int64)
    pairs = Pairs(left, right, np.ones(len(edges)), 0.5, 31)
    assert [c.tolist() for c in find_clusters(pairs)] == components_oracle(edges)


def test_plan_keeps_one_per_cluster():
    x = np.array([[1, 0, 0], [0, 1, 0], [0.99, 0.1, 0], [0, 0, 1], [0.95, 0.3, 0], [0.001, 1, 0.01]],
                 dtype=np.float32)
    pairs = mine_pairs(x, 0.97, device="cpu")
    # 0~2 (0.995), 2~4 (0.97+), 0~4 (0.954 < 0.97: joined through 2), 1~5
    assert {(p.left, p.right) for p in pairs} == {(0, 2), (2, 4), (1, 5)}
    plan = plan_keep(pairs, x, "first")
    assert [g.representative for g in plan.groups] == [0, 1]
    assert plan.kept.tolist() == [0, 1, 3]
    assert plan.dropped.tolist() == [2, 4, 5] and plan.duplicate_of.tolist() == [0, 0, 1]
    first = plan.groups[0]
    assert first.members.tolist() == [2, 4]  # by score to the representative
    np.testing.assert_allclose(first.scores, oracle_scores(x)[0, [2, 4]], atol=1e-12)
    assert first.scores[1] < 0.97  # a chain: 4 is a duplicate of 2, not of 0 ...
    assert first.links.tolist() == [0, 2] and first.link_scores[1] >= 0.97  # ... and says so
    longest = plan_keep(pairs, x, Keep.LONGEST, lengths=[10, 5, 30, 1, 30, 9])
    assert [g.representative for g in longest.groups] == [2, 5]  # ties: the earlier of the longest
    assert longest.kept.tolist() == [2, 3, 5]


def test_plan_partitions_every_document():
    x = random_matrix(60, 4, seed=11)
    pairs = mine_pairs(x, 0.9, device="cpu")
    plan = plan_keep(pairs, x)
    assert sorted(plan.kept.tolist() + plan.dropped.tolist()) == list(range(60))
    assert len(plan.kept) == 60 - sum(g.size - 1 for g in plan.groups)
    assert set(plan.duplicate_of.tolist()) <= set(plan.kept.tolist())


def test_plan_needs_lengths_for_longest():
    x = random_matrix(3, 2)
    with pytest.raises(SemsearchError, match="needs the text lengths"):
        plan_keep(mine_pairs(x, 0.0, device="cpu"), x, "longest")


def test_exact_scores_helper_matches_the_oracle():
    x = random_matrix(20, 5, seed=12)
    i, j = np.triu_indices(20, 1)
    np.testing.assert_allclose(exact_scores(x, i, j), oracle_scores(x)[i, j], atol=1e-12)


# ------------------------------------------------------------------------------------------------ real embeddings
def stsb_sentences(limit: int) -> list[str]:
    seen: dict[str, None] = {}
    with open(shared_file("stsb", "stsb-en-test.csv"), newline="", encoding="utf-8") as fh:
        for row in csv.reader(fh):
            seen.setdefault(row[0], None)
            seen.setdefault(row[1], None)
    return list(seen)[:limit]


@pytest.fixture(scope="module")
def real_vectors(real_encoder):
    return real_encoder.encode(stsb_sentences(600), batch_size=64)


@pytest.mark.slow
@pytest.mark.parametrize("quantile", [0.5, 0.999])
def test_real_embeddings_match_the_oracle(real_vectors, quantile):
    threshold = separated_threshold(real_vectors, quantile)
    expected = oracle_pairs(real_vectors, threshold)
    assert expected
    for chunk, dtype in [(7, "bfloat16"), (len(real_vectors), "float32"), (None, None), (128, "float16")]:
        assert_same(mine_pairs(real_vectors, threshold, chunk_size=chunk, dtype=dtype, device="cpu"), expected)
    small = real_vectors[:50]
    assert_same(mine_pairs(small, threshold, chunk_size=1, device="cpu"), oracle_pairs(small, threshold))


@pytest.mark.slow
def test_finds_every_pair_sentence_transformers_finds(real_vectors):
    import torch
    from sentence_transformers.util import paraphrase_mining_embeddings

    threshold = 0.6
    ours = {(p.left, p.right) for p in mine_pairs(real_vectors, threshold, device="cpu")}
    theirs = paraphrase_mining_embeddings(torch.from_numpy(real_vectors), top_k=20, max_pairs=10**7)
    theirs = {(min(i, j), max(i, j)) for s, i, j in theirs if s >= threshold + 1e-6}
    assert theirs and theirs <= ours
