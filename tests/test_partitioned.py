"""Partitioned mining against the exhaustive miner; block-pair mining (split); dedupe --partitioned/--embeddings."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semsearch.dedupe import Document, dedupe, dedupe_vectors
from semsearch.errors import SemsearchError
from semsearch.mining import mine_pairs
from semsearch.partitioned import default_partitions, mine_partitioned, partition
from semsearch.similarity import normalise_rows

from .conftest import json_rows, run_cli


def clustered(n: int, d: int = 32, topics: int = 20, dup_share: float = 0.3, seed: int = 0) -> np.ndarray:
    """Documents around topic centres, a share of them perturbed copies of others (cosine ~0.75-0.999)."""
    rng = np.random.default_rng(seed)
    centres = normalise_rows(rng.standard_normal((topics, d)))
    dups = int(n * dup_share)
    base = n - dups
    x = centres[rng.integers(0, topics, base)] + \
        normalise_rows(rng.standard_normal((base, d))) * rng.uniform(0.5, 0.9, (base, 1))
    y = normalise_rows(x)[rng.integers(0, base, dups)] + \
        normalise_rows(rng.standard_normal((dups, d))) * rng.uniform(0.05, 0.8, (dups, 1))
    out = np.vstack([x, y]).astype(np.float32) * rng.uniform(0.5, 2.0, (n, 1)).astype(np.float32)  # not unit
    return out[rng.permutation(n)]


def pair_set(pairs) -> set[tuple[int, int]]:
    return set(zip(pairs.left.tolist(), pairs.right.tolist()))


def assert_same_pairs(a, b) -> None:
    assert a.left.tolist() == b.left.tolist() and a.right.tolist() == b.right.tolist()
    assert a.scores.tolist() == b.scores.tolist()


# ------------------------------------------------------------------------------------------------ algorithm
def test_partitioned_on_clustered_data_is_sound_and_finds_nearly_all():
    x = clustered(3000)
    exact = mine_pairs(x, 0.8)
    found, cells = mine_partitioned(x, 0.8, partitions=40, spill=3)
    assert len(exact) > 300 and cells.partitions == 40 and not cells.complete
    scores = dict(zip(zip(exact.left.tolist(), exact.right.tolist()), exact.scores.tolist()))
    assert pair_set(found) <= set(scores)  # never a pair below the threshold
    assert all(scores[(a, b)] == s for a, b, s in zip(found.left.tolist(), found.right.tolist(),
                                                       found.scores.tolist()))  # exact scores, bit for bit
    assert len(found) / len(exact) >= 0.99
    assert (found.scores >= 0.8).all()
    order = np.lexsort((found.right, found.left, -found.scores))
    assert (order == np.arange(len(found))).all()  # the exhaustive miner's output order


def test_a_cell_per_document_misses_pairs_the_spill_finds():
    """The spill matters: with one cell per document pairs across borders are lost; recall is not assumed."""
    x = clustered(3000, seed=1)
    exact = pair_set(mine_pairs(x, 0.8))
    alone = pair_set(mine_partitioned(x, 0.8, partitions=60, spill=1)[0])
    spilled = pair_set(mine_partitioned(x, 0.8, partitions=60, spill=4, margin=1.0)[0])
    assert alone < spilled <= exact
    assert len(alone) < 0.99 * len(exact)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 40), d=st.integers(1, 8), cells=st.integers(1, 12), seed=st.integers(0, 2**16),
       threshold=st.sampled_from([0.0, 0.5, 0.8, 0.95]))
def test_unbounded_spill_with_the_proven_margin_equals_exhaustive(n, d, cells, seed, threshold):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    if n > 3:
        x[n // 2] = x[0] * 1.5  # an exact duplicate (score 1)
    expected = mine_pairs(x, threshold)
    found, part = mine_partitioned(x, threshold, partitions=cells, spill=cells, margin=1.0, seed=seed)
    assert part.complete or n < 2
    assert_same_pairs(found, expected)


def test_partition_invariants():
    x = clustered(2000, seed=2)
    part = partition(x, 0.8, partitions=25, spill=3)
    counts = np.zeros(len(x), dtype=int)
    homes = np.zeros(len(x), dtype=int)
    for cell, home in zip(part.cells, part.homes):
        assert len(cell) >= 2 and 1 <= home <= len(cell)
        assert (np.diff(cell[:home]) > 0).all() and (np.diff(cell[home:]) > 0).all()  # each part ascending
        assert len(set(cell.tolist())) == len(cell)
        counts[cell] += 1
        homes[cell[:home]] += 1
    assert counts.max() <= 3
    assert homes.max() == 1 and homes.sum() >= len(x) - 25  # one home each (lone documents of tiny cells aside)
    assert part.memberships >= counts.sum() and part.memberships >= len(x) - 25
    assert part.comparisons == sum(h * (h - 1) // 2 + h * (len(c) - h) for c, h in zip(part.cells, part.homes))
    assert part.comparisons < sum(len(c) * (len(c) - 1) // 2 for c in part.cells)  # spilled pairs are skipped
    assert 0 < part.capped < len(x)
    assert "25 k-means cells, up to 3 per document" in part.describe(len(x))


def test_defaults_and_bad_arguments():
    assert default_partitions(100) == 1 and default_partitions(10_000) == 100 and default_partitions(10**6) == 1000
    x = clustered(200)
    found, part = mine_partitioned(x, 0.8)  # small: one cell, exhaustive
    assert part.partitions == 1 and part.complete
    assert_same_pairs(found, mine_pairs(x, 0.8))
    with pytest.raises(SemsearchError, match="partitions must be a positive integer"):
        mine_partitioned(x, 0.8, partitions=0)
    with pytest.raises(SemsearchError, match="spill must be a positive integer"):
        mine_partitioned(x, 0.8, partitions=4, spill=0)


# ------------------------------------------------------------------------------------------------ block pairs
@settings(max_examples=50, deadline=None)
@given(n=st.integers(0, 30), d=st.integers(1, 6), chunk=st.integers(1, 12), seed=st.integers(0, 2**16),
       data=st.data())
def test_split_mines_exactly_the_cross_pairs(n, d, chunk, seed, data):
    split = data.draw(st.integers(0, n))
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    full = mine_pairs(x, 0.3)
    cross = (full.left < split) & (full.right >= split)
    got = mine_pairs(x, 0.3, split=split, chunk_size=chunk)
    assert got.left.tolist() == full.left[cross].tolist() and got.right.tolist() == full.right[cross].tolist()
    assert got.scores.tolist() == full.scores[cross].tolist()


def test_split_out_of_range():
    with pytest.raises(SemsearchError, match="split must lie between 0 and 3"):
        mine_pairs(np.ones((3, 2)), 0.5, split=4)


# ------------------------------------------------------------------------------------------------ dedupe
def test_dedupe_vectors_partitioned_reports_recall_and_applies_top_k():
    x = clustered(2500, seed=3)
    documents = [Document(i, f"d{i}", "t" * (i % 7 + 1)) for i in range(len(x))]
    exact = dedupe_vectors(x, documents, threshold=0.8, top_k=2)
    part = dedupe_vectors(x, documents, threshold=0.8, top_k=2, mode="partitioned", partitions=30, spill=30,
                          sample=400)
    assert part.recall is not None and part.recall.sample == 400 and part.recall.exact_pairs > 0
    assert part.search.startswith("partitioned, 30 k-means cells, up to 30 per document")
    # the default margin is not the proven one: compare against exact, allowing what the recall admits
    got = {(p.a.id, p.b.id): p.score for p in part.pairs}
    want = {(p.a.id, p.b.id): p.score for p in exact.pairs}
    assert len(set(got) & set(want)) >= 0.99 * len(want)
    with pytest.raises(SemsearchError, match="partitions and spill apply to the partitioned mode"):
        dedupe_vectors(x, documents, threshold=0.8, partitions=3)


TEXTS = [("a", "A man is playing a flute."), ("b", "The cat sat on the mat."), ("c", "A man is playing a flute."),
         ("d", "Stock markets fell sharply on Monday."), ("e", "A man is playing a flute."),
         ("f", "The cat sat on the mat, purring.")]


@pytest.fixture
def corpus(tmp_path) -> str:
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in TEXTS))
    return str(path)


def test_cli_partitioned_output_equals_exact(corpus, tiny_model_dir):
    exact = run_cli("dedupe", corpus, "--model", tiny_model_dir, "-t", "0.99", "--json")
    part = run_cli("dedupe", corpus, "--model", tiny_model_dir, "-t", "0.99", "--json", "--partitioned",
               "--partitions", "2", "--spill", "2")
    assert json_rows(part.stdout) == json_rows(exact.stdout) and json_rows(exact.stdout)
    assert "partitioned recall: 1.000 against the exact search on 6 sampled documents" in part.stderr
    assert "partitioned, 2 k-means cells, up to 2 per document" in part.stderr
    for view in (["--clusters"], ["--keep", "longest"]):
        assert run_cli("dedupe", corpus, "--model", tiny_model_dir, "-t", "0.99", "--partitioned", *view).stdout == \
            run_cli("dedupe", corpus, "--model", tiny_model_dir, "-t", "0.99", *view).stdout


@pytest.mark.parametrize("args, message", [
    (["--approximate", "--partitioned"], "choose --approximate or --partitioned, not both"),
    (["--partitions", "3"], "--partitions and --spill apply with --partitioned"),
    (["--spill", "2"], "--partitions and --spill apply with --partitioned"),
    (["--workers", "2"], "--address, --workers and --gpus-per-worker apply with --engine ray"),
    (["--engine", "ray", "--approximate"], "--engine ray mines exactly or --partitioned"),
])
def test_cli_usage_errors(corpus, args, message):
    result = run_cli("dedupe", corpus, *args, code=2)
    assert message in result.output


# ------------------------------------------------------------------------------------------------ --embeddings
def test_cli_embeddings_alone_npy_and_parquet(tmp_path):
    x = clustered(300, seed=4)
    np.save(tmp_path / "e.npy", x)
    ids = [f"doc-{i}" for i in range(len(x))]
    pq.write_table(pa.table({"id": ids, "embedding": x.tolist()}), tmp_path / "e.parquet")
    expected = mine_pairs(x, 0.85)
    assert len(expected) > 5
    by_row = json_rows(run_cli("dedupe", "--embeddings", tmp_path / "e.npy", "-t", "0.85", "--json").stdout)
    assert [(r["id_a"], r["id_b"]) for r in by_row] == [(str(p.left + 1), str(p.right + 1)) for p in expected]
    assert all(abs(r["score"] - p.score) < 1e-6 for r, p in zip(by_row, expected))
    by_id = run_cli("dedupe", "--embeddings", tmp_path / "e.parquet", "-t", "0.85", "--json", "--partitioned")
    assert [(r["id_a"], r["id_b"]) for r in json_rows(by_id.stdout)] == [(ids[p.left], ids[p.right]) for p in expected]
    assert f"{tmp_path / 'e.parquet'}: 300 documents" in by_id.stderr


def test_cli_corpus_with_embeddings_equals_encoding_it(corpus, tiny_encoder, tiny_model_dir, tmp_path):
    vectors = tiny_encoder.encode([t for _, t in TEXTS])
    np.save(tmp_path / "e.npy", vectors)
    order = [3, 0, 5, 1, 4, 2]  # Parquet rows are matched by id, not position
    pq.write_table(pa.table({"id": [TEXTS[i][0] for i in order], "embedding": vectors[order].tolist()}),
                   tmp_path / "e.parquet")
    encoded = json_rows(run_cli("dedupe", corpus, "--model", tiny_model_dir, "-t", "0.9", "--json").stdout)
    for name in ("e.npy", "e.parquet"):
        given = json_rows(run_cli("dedupe", corpus, "--embeddings", tmp_path / name, "-t", "0.9", "--json").stdout)
        assert [(r["id_a"], r["id_b"], r["line_a"]) for r in given] == \
            [(r["id_a"], r["id_b"], r["line_a"]) for r in encoded]
        assert all(abs(g["score"] - e["score"]) < 1e-6 for g, e in zip(given, encoded))


def test_cli_embeddings_errors(corpus, tmp_path):
    x = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    pq.write_table(pa.table({"id": list("abcdez"), "embedding": x.tolist()}), tmp_path / "e.parquet")
    result = run_cli("dedupe", corpus, "--embeddings", tmp_path / "e.parquet", code=1)
    assert result.output.strip() == f"Error: {tmp_path / 'e.parquet'}: no row for id 'f' ({corpus} line 6)"
    np.save(tmp_path / "e.npy", x[:5])
    result = run_cli("dedupe", corpus, "--embeddings", tmp_path / "e.npy", code=1)
    assert result.output.strip() == f"Error: {tmp_path / 'e.npy'}: 5 rows for 6 records: record 6 has no row"
    assert "drop --index" in run_cli("dedupe", "--embeddings", tmp_path / "e.npy", "--index", "x", code=2).output
    assert "drop --model" in run_cli("dedupe", corpus, "--embeddings", tmp_path / "e.npy", "-m", "m", code=2).output


def test_library_refuses_an_index_with_embeddings(tmp_path):
    with pytest.raises(SemsearchError, match="not both"):
        dedupe(index="x", embeddings=tmp_path / "e.npy")
