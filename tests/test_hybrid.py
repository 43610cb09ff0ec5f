"""Hybrid search (issue 14): fusion against hand-computed values, the three modes, filters on both sides, hostile
queries through the CLI, and the lexical index kept in step with the vectors through adds, updates, deletes,
compaction and SIGKILL."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from semsearch.api import delete_documents, index_corpus, search
from semsearch.cli import main
from semsearch.corpus import Record
from semsearch.errors import SemsearchError
from semsearch.fusion import Ranked, SearchMode, min_max, ranking, rrf, weighted
from semsearch.index import Index, IndexWriter, compact
from semsearch.index.lexical import fts_query
from semsearch.index.maintenance import check

from .conftest import FakeEncoder

ROOT = Path(__file__).resolve().parents[1]


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# ---------------------------------------------------------------- fusion: hand-computed values
DENSE = ranking([("a", 0.9), ("b", 0.7), ("c", 0.5)])
LEXICAL = ranking([("c", 10.0), ("a", 6.0), ("d", 2.0)])


def test_rrf_matches_hand_computed_scores():
    fused = rrf(DENSE, LEXICAL, k=60)
    assert [f.key for f in fused] == ["a", "c", "b", "d"]
    expected = {"a": 1 / 61 + 1 / 62, "c": 1 / 63 + 1 / 61, "b": 1 / 62, "d": 1 / 63}
    for f in fused:
        assert f.score == pytest.approx(expected[f.key], abs=1e-12)
    a = fused[0]
    assert (a.dense.rank, a.dense.score, a.lexical.rank, a.lexical.score) == (1, 0.9, 2, 6.0)
    assert fused[3].dense is None and fused[3].lexical.rank == 3
    assert [f.key for f in rrf(DENSE, LEXICAL, k=0)] == ["a", "c", "b", "d"]  # 1 + 1/2 > 1/3 + 1
    assert rrf(DENSE, LEXICAL, k=0)[0].score == pytest.approx(1.5)


def test_weighted_fusion_matches_hand_computed_scores():
    # dense 0.9, 0.7, 0.5 -> 1, 0.5, 0; lexical 10, 6, 2 -> 1, 0.5, 0
    half = {f.key: f.score for f in weighted(DENSE, LEXICAL, 0.5)}
    assert half == pytest.approx({"a": 0.75, "c": 0.5, "b": 0.25, "d": 0.0})
    assert [f.key for f in weighted(DENSE, LEXICAL, 0.5)] == ["a", "c", "b", "d"]
    assert {f.key: f.score for f in weighted(DENSE, LEXICAL, 0.8)} == pytest.approx(
        {"a": 0.8 + 0.2 * 0.5, "b": 0.8 * 0.5, "c": 0.2, "d": 0.0})
    # alpha 1 is the dense order; the tie at 0 (c, d) goes to the better dense rank (d has none)
    assert [f.key for f in weighted(DENSE, LEXICAL, 1.0)] == ["a", "b", "c", "d"]
    assert [f.key for f in weighted(DENSE, LEXICAL, 0.0)] == ["c", "a", "b", "d"]  # b, d tie: dense rank decides


def test_fusion_edge_cases():
    assert min_max([]) == [] and min_max([3.0]) == [1.0] and min_max([2.0, 2.0]) == [1.0, 1.0]
    assert min_max([1.0, 3.0, 2.0]) == [0.0, 1.0, 0.5]
    tie = rrf(ranking([("x", 1.0)]), ranking([("y", 1.0)]))
    assert [f.key for f in tie] == ["x", "y"] and tie[0].score == tie[1].score  # a tie: the dense side first
    assert rrf([], []) == [] and [f.key for f in rrf([], LEXICAL)] == ["c", "a", "d"]
    assert ranking([("a", 2.0), ("a", 1.0), ("b", 0.5)]) == [Ranked("a", 1, 2.0), Ranked("b", 2, 0.5)]
    for bad in (-0.1, 1.1, float("nan")):
        with pytest.raises(SemsearchError, match="alpha must be between 0 and 1"):
            weighted(DENSE, LEXICAL, bad)


@pytest.mark.parametrize("text, expected", [
    ('"', None), ("*", None), ("?!.,;:()[]{}", None), ("NEAR(", '"near"'), ("OR OR", '"or"'),
    ('a "b" c*', '"a" OR "b" OR "c"'), ("Ünïcode wörds", '"ünïcode" OR "wörds"'),
])
def test_every_term_is_quoted(text, expected):
    assert fts_query(text) == expected


# ---------------------------------------------------------------- the three modes
WORDS = "river mountain city music bread coffee tea garden winter summer train ship".split()


def docs(n=40):
    rng = np.random.default_rng(3)
    out = [{"id": f"d{i}", "text": " ".join(rng.choice(WORDS, size=5)) + f" item{i}", "group": i % 2}
           for i in range(n)]
    out.append({"id": "rare", "text": "the XJ-2207 part number is rare", "group": 0})
    return out


@pytest.fixture
def built(tmp_path, fake_encoder) -> Path:
    folder = tmp_path / "idx"
    index_corpus(write_jsonl(tmp_path / "c.jsonl", docs()), folder, encoder=fake_encoder)
    return folder


def test_modes_rank_as_their_sides_and_fuse_both(built, fake_encoder):
    with Index.open(built) as index:
        index.use_encoder(fake_encoder)
        assert index.default_mode is SearchMode.HYBRID
        lexical = index.search("xj 2207", k=3, mode="lexical")[0]
        assert [h.id for h in lexical] == ["rare"] and lexical[0].mode == "lexical" and lexical[0].score > 0
        dense = index.search("xj 2207", k=5)[0]  # the library's default stays dense
        assert all(h.mode is None and -1 <= h.score <= 1 for h in dense)
        hybrid = index.search("xj 2207", k=5, mode="hybrid")[0]
        assert len(hybrid) == 5 and hybrid[0].id == "rare"  # lexical rank 1 beats any dense rank > 1
        by_id = {h.id: h for h in hybrid}
        dense_rank = {h.id: h.rank for h in dense}
        for hit in hybrid:  # each side's rank and score, and the fused score from them
            expected = ((1 / (60 + hit.dense.rank) if hit.dense else 0)
                        + (1 / (60 + hit.lexical.rank) if hit.lexical else 0))
            assert hit.score == pytest.approx(expected)
            if hit.id in dense_rank:
                assert hit.dense.rank == dense_rank[hit.id]
        assert by_id["rare"].lexical.rank == 1 and by_id["rare"].to_dict()["lexical"]["rank"] == 1
        weighted_hits = index.search("xj 2207", k=5, mode="hybrid", alpha=1.0)[0]
        assert [h.id for h in weighted_hits] == [h.id for h in dense]  # alpha 1: the dense order
        assert index.search(["river", "xj"], k=2, mode="lexical")[1][0].id == "rare"  # several queries


def test_filters_apply_to_both_sides(built, fake_encoder):
    with Index.open(built) as index:
        index.use_encoder(fake_encoder)
        for mode in ("dense", "lexical", "hybrid"):
            hits = index.search("river music", k=50, filters=["group=1"], mode=mode)[0]
            assert hits and all(h.meta["group"] == 1 for h in hits)
        hybrid = index.search("rare part", k=50, filters=["group=1"], mode="hybrid")[0]
        assert "rare" not in {h.id for h in hybrid}
        assert all(h.lexical is None or h.meta["group"] == 1 for h in hybrid)
        assert index.search("anything", k=5, filters=["group=7"], mode="hybrid") == [[]]


def test_mode_refusals_are_one_line(built, fake_encoder):
    with Index.open(built) as index:
        index.use_encoder(fake_encoder)
        with pytest.raises(SemsearchError, match="a cosine threshold applies to dense search"):
            index.search("x", threshold=0.5, mode="hybrid")
        with pytest.raises(SemsearchError, match="alpha weighs the two sides of hybrid search"):
            index.search("x", alpha=0.5, mode="lexical")
        with pytest.raises(SemsearchError, match="unknown search mode 'bm25'"):
            index.search("x", mode="bm25")
        with pytest.raises(SemsearchError, match="list them with --mode dense"):
            index.search("x", mode="hybrid", passages=True)


def test_api_search_defaults_to_hybrid_and_threshold_means_dense(built, fake_encoder):
    with Index.open(built) as index:
        index.use_encoder(fake_encoder)
        assert {h.mode for h in search("river", index, k=3)[0]} == {"hybrid"}
        assert {h.mode for h in search("river", index, k=3, threshold=-1.0)[0]} == {None}
        assert {h.mode for h in search("river", index, k=3, alpha=0.3)[0]} == {"hybrid"}


# ---------------------------------------------------------------- hostile queries through the CLI
HOSTILE = ['"', "*", "NEAR(", "OR OR", "x" * 100_000, "?!.,;:", 'title:"a" AND -b', "\\", "'; drop table docs; --",
           "NEAR(a b, 2)", "^a", "a AND", "( ( (", "é" * 5000 + " river"]


@pytest.fixture
def cli_index(tmp_path, index_home, tiny_model_dir) -> str:
    corpus = write_jsonl(tmp_path / "c.jsonl", docs(20))
    result = CliRunner().invoke(main, ["index", str(corpus), "--index", "t", "--model", str(tiny_model_dir), "-q"])
    assert result.exit_code == 0, result.output
    return "t"


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_hostile_queries_give_results_or_one_line_never_a_traceback(cli_index, mode):
    runner = CliRunner()
    for text in HOSTILE:
        result = runner.invoke(main, ["query", text, "--index", cli_index, "--mode", mode, "-k", "3"])
        assert result.exception is None or isinstance(result.exception, SystemExit), (text[:20], result.exception)
        assert "Traceback" not in result.output
        assert result.exit_code == 0, (text[:20], result.output[-300:])  # quoted terms: FTS5 never fails
        lines = result.stdout.splitlines()
        assert lines == ["(no results)"] or lines[0].split()[:2] == ["rank", "score"], (text[:20], lines[:2])
        as_json = runner.invoke(main, ["query", text, "--index", cli_index, "--mode", mode, "--json"])
        assert as_json.exit_code == 0 and all(json.loads(line)["query"] == text for line in as_json.stdout.splitlines())
    # punctuation only has no words: no lexical result, but dense and hybrid still answer from the vectors
    punct = runner.invoke(main, ["query", "?!.,;:", "--index", cli_index, "--mode", mode, "--json"])
    assert (len(punct.stdout.splitlines()) == 0) == (mode == "lexical")
    # the database is untouched by any of it
    assert runner.invoke(main, ["check", "--index", cli_index]).exit_code == 0


def test_cli_json_gives_both_sides_and_table_shows_their_ranks(cli_index):
    runner = CliRunner()
    hits = [json.loads(line) for line in runner.invoke(
        main, ["query", "XJ-2207 part", "--index", cli_index, "--json", "-k", "4"]).stdout.splitlines()]
    assert hits[0]["id"] == "rare" and hits[0]["mode"] == "hybrid"
    assert set(hits[0]) == {"query", "rank", "score", "id", "text", "meta", "mode", "dense", "lexical"}
    assert hits[0]["lexical"] == {"rank": 1, "score": pytest.approx(hits[0]["lexical"]["score"])}
    assert hits[0]["lexical"]["score"] > 0 and hits[0]["dense"]["rank"] >= 1  # 21 documents: all are dense candidates
    dense = [json.loads(line) for line in runner.invoke(
        main, ["query", "XJ-2207 part", "--index", cli_index, "--json", "--mode", "dense"]).stdout.splitlines()]
    assert set(dense[0]) == {"query", "rank", "score", "id", "text", "meta"}  # as before hybrid search existed
    bad = runner.invoke(main, ["query", "x", "--index", cli_index, "--alpha", "2"])
    assert bad.exit_code == 2 and "0<=x<=1" in bad.stderr
    bad = runner.invoke(main, ["query", "x", "--index", cli_index, "--mode", "lexical", "--threshold", "0.5"])
    assert bad.exit_code == 1 and bad.stderr.startswith("Error: a cosine threshold applies to dense search")


def test_an_index_without_a_lexical_index_searches_dense_and_says_why_not_hybrid(tmp_path, fake_encoder):
    folder = tmp_path / "idx"
    index_corpus(write_jsonl(tmp_path / "c.jsonl", docs(5)), folder, encoder=fake_encoder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["lexical"] = False
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with Index.open(folder) as index:
        index.use_encoder(fake_encoder)
        assert index.default_mode is SearchMode.DENSE
        assert {h.mode for h in search("river", index, k=2)[0]} == {None}
        with pytest.raises(SemsearchError, match=r"has no lexical index \(an index of an earlier format\), so only "
                                                 "--mode dense works; the next write builds it"):
            index.search("river", mode="hybrid")


# ---------------------------------------------------------------- the lexical index stays in step
def lexical_ids(index: Index, word: str) -> set[str]:
    rowids = [r for r, _ in index.lexical(word, k=10_000)]
    return {d.id for d in index.fetch_rowids(rowids).values()}


def oracle(state: dict[str, str], word: str) -> set[str]:
    return {i for i, text in state.items() if word in re.findall(r"\w+", text.lower())}


def assert_in_step(folder: Path, state: dict[str, str], words=("alpha", "beta", "gamma", "new", "changed")):
    assert check(folder).ok, check(folder).problems
    with Index.open(folder) as index:
        assert len(index) == len(state)
        for word in words:
            assert lexical_ids(index, word) == oracle(state, word), word


def test_lexical_index_follows_adds_updates_deletes_and_compaction(tmp_path, fake_encoder):
    folder = tmp_path / "idx"
    state = {f"d{i}": f"{['alpha', 'beta', 'gamma'][i % 3]} words {i}" for i in range(30)}
    with IndexWriter(folder, fake_encoder) as writer:
        writer.add([Record(t, i, 1) for i, t in state.items()])
    assert_in_step(folder, state)
    changes = {"d0": "changed beta now", "d4": "gamma changed", "n1": "new alpha"}
    with IndexWriter(folder, fake_encoder) as writer:
        writer.add([Record(t, i, 1) for i, t in changes.items()])
    state.update(changes)
    assert_in_step(folder, state)
    delete_documents(folder, ids=["d1", "d2", "n1"])
    for gone in ("d1", "d2", "n1"):
        state.pop(gone)
    assert_in_step(folder, state)
    with IndexWriter(folder, fake_encoder) as writer:  # an update and a delete in one write
        writer.add([Record("alpha again", "d3", 1)])
        writer.delete(["d5"])
    state["d3"] = "alpha again"
    state.pop("d5")
    assert_in_step(folder, state)
    compact(folder)
    assert_in_step(folder, state)


KILL = """
import os, signal, sys
sys.path.insert(0, {root!r})
from tests.conftest import FakeEncoder
import semsearch.index.writer as writer_module, semsearch.index.manifest as manifest
from semsearch.index.docs import DocStore
from semsearch.vectors import VectorStore
from semsearch.corpus import Record
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
def after(original):
    def wrapped(*args, **kwargs):
        result = original(*args, **kwargs)
        die()
    return wrapped
point = {point!r}
if point == "insert":
    DocStore.insert = after(DocStore.insert)
elif point == "segment":
    VectorStore.save = after(VectorStore.save)
elif point == "sqlite-commit":
    DocStore.commit = after(DocStore.commit)
elif point == "manifest":
    manifest.Manifest.save = after(manifest.Manifest.save)
elif point == "purge":
    DocStore.purge = after(DocStore.purge)
op = {op!r}
if op == "write":
    with writer_module.IndexWriter({folder!r}, FakeEncoder(dimension=16)) as w:
        w.add([Record(f"new text {{i}}", f"n{{i}}", i + 1) for i in range(20)] + [Record("changed alpha", "d3", 21)])
        w.delete(["d4"])
elif op == "delete":
    with writer_module.IndexWriter({folder!r}, create=False) as w:
        w.delete(["d1", "d2"])
else:
    writer_module.compact({folder!r})
print("finished")
"""


def _state(folder: Path) -> dict[str, str]:
    with Index.open(folder) as index:
        return {d.id: d.text for d in index.fetch_rowids(index.store.live_rowids()).values()}


@pytest.mark.parametrize("op, point", [
    ("write", "insert"), ("write", "segment"), ("write", "sqlite-commit"), ("write", "manifest"),
    ("delete", "sqlite-commit"), ("delete", "manifest"), ("compact", "purge"), ("compact", "manifest"),
])
def test_sigkill_leaves_the_lexical_index_in_step_with_the_vectors(op, point, tmp_path):
    folder = tmp_path / "idx"
    encoder = FakeEncoder(dimension=16)
    state = {f"d{i}": f"{['alpha', 'beta', 'gamma'][i % 3]} text {i}" for i in range(30)}
    index_corpus(write_jsonl(tmp_path / "a.jsonl", [{"id": i, "text": t} for i, t in state.items()]), folder,
                 encoder=encoder)
    delete_documents(folder, ids=["d10"])
    state.pop("d10")
    done = subprocess.run([sys.executable, "-c", KILL.format(root=str(ROOT), point=point, op=op, folder=str(folder))],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr
    after = _state(folder)
    if op == "write":
        expected = {**{k: v for k, v in state.items() if k != "d4"}, **{f"n{i}": f"new text {i}" for i in range(20)},
                    "d3": "changed alpha"}
    elif op == "delete":
        expected = {k: v for k, v in state.items() if k not in ("d1", "d2")}
    else:
        expected = state
    assert after in (state, expected)
    assert_in_step(folder, after)
    index_corpus(write_jsonl(tmp_path / "b.jsonl", [{"id": "z", "text": "alpha last"}]), folder, encoder=encoder)
    assert_in_step(folder, {**after, "z": "alpha last"})
