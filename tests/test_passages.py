"""Long documents as passages (issue 14): windows of the model's tokens, one vector per passage, documents as the
unit of results (best passage), tombstones and filters over every passage, check, old databases, the CLI."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from semsearch.api import index_corpus
from semsearch.chunking import Chunker, Chunking, windows
from semsearch.cli import main
from semsearch.corpus import Record
from semsearch.encoder import bundled_model_path
from semsearch.index import Index, IndexWriter, compact
from semsearch.index import passages as P
from semsearch.index.maintenance import check

from .conftest import FakeEncoder


class ChunkingFake(FakeEncoder):
    """The fake encoder (a text's vector is seeded by its hash) with the real model's tokenizer and a small max
    length, so the writer cuts passages and a query equal to a passage's text scores exactly 1 with it."""

    def __init__(self, max_length: int = 16, dimension: int = 16) -> None:
        super().__init__(dimension)
        self.spec = replace(self.spec, model=str(bundled_model_path()), max_length=max_length)


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


VOCAB = ("wing flow lift drag shock boundary layer heat plate cone nozzle pressure supersonic subsonic "
         "vortex panel flutter load buckling stress").split()


def long_text(seed: int, words: int = 60) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(f"{w}{seed}" if i % 7 == 0 else w for i, w in enumerate(rng.choice(VOCAB, size=words)))


# ---------------------------------------------------------------- windows
@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=0, max_size=80), st.integers(1, 12), st.data())
def test_windows_cover_every_token_move_forward_and_fit(word_lengths, size, data):
    overlap = data.draw(st.integers(0, size - 1))
    words, offsets, position = [], [], 0
    for number, pieces in enumerate(word_lengths):
        for piece in range(max(1, pieces)):
            words.append(number)
            offsets.append((position, position + 1))
            position += 1
        position += 1  # a space
    spans = windows(offsets, words, size, overlap, position)
    if len(offsets) <= size:
        assert spans == [(0, position)]
        return
    starts = {s: i for i, (s, _) in enumerate(offsets)}
    ends = {e: i for i, (_, e) in enumerate(offsets)}
    token_ranges = [(starts[s], ends[e] + 1) for s, e in spans]
    assert token_ranges[0][0] == 0 and token_ranges[-1][1] == len(offsets)  # first and last token covered
    for (a_start, a_end), (b_start, b_end) in zip(token_ranges, token_ranges[1:]):
        assert a_start < b_start and b_start <= a_end  # forward, no gap
    for start, end in token_ranges:
        assert 1 <= end - start <= size
        # a word is cut only when the window starts inside it (so it cannot hold the word whole)
        if end < len(offsets) and words[end] == words[end - 1]:
            assert words.index(words[end]) <= start


def test_chunker_passages_retokenize_within_the_window_and_overlap():
    chunker = Chunker.for_model(bundled_model_path() / "tokenizer.json", 32, Chunking(tokens=20, overlap=5))
    text = " ".join(long_text(i, 40) for i in range(3)) + " supercalifragilisticexpialidocious aerodynamics."
    spans = chunker.split(text)
    assert len(spans) > 3 and spans[0][0] == 0 and spans[-1][1] == len(text.rstrip())
    for (start, end), (next_start, _) in zip(spans, spans[1:]):
        assert next_start < end  # overlapping
        assert text[next_start - 1] == " "  # starts on a word
    for start, end in spans:
        assert chunker.count(text[start:end]) <= 20
    assert chunker.split("short text") == [(0, 10)]
    with pytest.raises(Exception, match="does not fit the model's max length"):
        Chunker.for_model(bundled_model_path() / "tokenizer.json", 32, Chunking(tokens=31))
    with pytest.raises(Exception, match="less than the chunk size"):
        Chunker.for_model(bundled_model_path() / "tokenizer.json", 32, Chunking(tokens=10, overlap=10))


def test_vector_ids():
    assert P.vector_id(7, 0) == 7 and P.vector_id(7, 3) == 7 + (3 << 40)
    ids = P.expand([2, 5, 9], [1, 3, 2])
    assert ids.tolist() == sorted([2, 5, 5 + (1 << 40), 5 + (2 << 40), 9, 9 + (1 << 40)])
    assert P.rowids_of(ids).tolist() == [2, 5, 9, 5, 9, 5] and set(P.passages_of(ids).tolist()) == {0, 1, 2}
    assert P.decode_offsets(P.encode_offsets([(0, 5), (3, 9)]), 9) == [(0, 5), (3, 9)]
    assert P.encode_offsets([(0, 9)]) is None and P.decode_offsets(None, 9) == [(0, 9)]


# ---------------------------------------------------------------- search against a brute-force oracle
def oracle(encoder, docs: dict[str, str], spans: dict[str, list[tuple[int, int]]], query: str, k: int):
    """Documents ranked by their best passage's cosine (ties: the earlier document), k of them."""
    q = encoder.encode(query)
    best = []
    for order, (doc_id, text) in enumerate(docs.items()):
        pieces = [text] if len(spans[doc_id]) == 1 else [text[s:e] for s, e in spans[doc_id]]
        scores = encoder.encode(pieces) @ q
        best.append((-float(scores.max()), order, doc_id, int(scores.argmax())))
    best.sort()
    return [(doc_id, -score, number) for score, _, doc_id, number in best[:k]]


def build(folder: Path, encoder, docs: dict[str, str], **kw) -> None:
    with IndexWriter(folder, encoder, **kw) as writer:
        writer.add([Record(text, doc_id, 1, {"n": int(doc_id[1:]) % 3}) for doc_id, text in docs.items()])


def spans_of(folder: Path) -> dict[str, list[tuple[int, int]]]:
    with Index.open(folder) as index:
        docs = index.fetch_rowids(index.store.live_rowids())
        return {d.id: list(d.passages or [(0, len(d.text))]) for d in docs.values()}


def test_documents_rank_by_their_best_passage_like_brute_force(tmp_path):
    encoder = ChunkingFake()
    docs = {f"d{i}": long_text(i, 10 + 13 * (i % 5)) for i in range(25)}
    folder = tmp_path / "idx"
    build(folder, encoder, docs)
    spans = spans_of(folder)
    assert sum(len(s) > 1 for s in spans.values()) >= 10  # many documents are in passages
    assert check(folder).ok
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["counts"] == {"documents": 25, "vectors": sum(len(s) for s in spans.values())}
    queries = [docs["d3"][s:e] for s, e in spans["d3"][-1:]] + [long_text(99, 12), "wing flow", docs["d7"]]
    with Index.open(folder) as index:
        index.use_encoder(encoder)
        for query in queries:
            for k in (1, 3, 10, 25):
                hits = index.search(query, k=k)[0]
                expected = oracle(encoder, docs, spans, query, k)
                assert [h.id for h in hits] == [e[0] for e in expected]
                np.testing.assert_allclose([h.score for h in hits], [e[1] for e in expected], atol=1e-5)
                for hit, (_, _, number) in zip(hits, expected):
                    if len(spans[hit.id]) > 1:
                        assert hit.passage.number == number
                        assert (hit.passage.start, hit.passage.end) == spans[hit.id][number]
                    else:
                        assert hit.passage is None
        end = index.search(queries[0], k=1)[0][0]  # a query equal to the end of d3 finds d3, at its end
        assert end.id == "d3" and end.score == pytest.approx(1.0, abs=1e-5)
        assert end.passage.number == len(spans["d3"]) - 1 and end.passage_text == queries[0]


def test_search_goes_deeper_when_one_document_holds_the_best_passages(tmp_path):
    encoder = ChunkingFake()
    repeated = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi " * 30
    docs = {"d0": repeated.strip(), **{f"d{i}": long_text(i, 12) for i in range(1, 8)}}
    folder = tmp_path / "idx"
    build(folder, encoder, docs)
    spans = spans_of(folder)
    query = docs["d0"][slice(*spans["d0"][1])]
    assert len(spans["d0"]) > 12  # more passages than the first ask (k * 4) for k = 3
    with Index.open(folder) as index:
        index.use_encoder(encoder)
        hits = index.search(query, k=3)[0]
        assert [h.id for h in hits] == [e[0] for e in oracle(encoder, docs, spans, query, 3)]
        assert len({h.id for h in hits}) == 3
        listed = index.search(query, k=5, passages=True)[0]  # passages: several of one document
        assert [h.id for h in listed].count("d0") >= 2 and all(h.passage is not None for h in listed if h.id == "d0")
        filtered = index.search(query, k=3, filters=["n=1"])[0]
        assert filtered and all(h.meta["n"] == 1 for h in filtered)
        assert [h.id for h in filtered] == [e[0] for e in oracle(
            encoder, {i: t for i, t in docs.items() if int(i[1:]) % 3 == 1}, spans, query, 3)]


def test_updates_deletes_and_compaction_cover_every_passage(tmp_path):
    encoder = ChunkingFake()
    docs = {f"d{i}": long_text(i, 50) for i in range(12)}
    folder = tmp_path / "idx"
    build(folder, encoder, docs)
    old_end = docs["d2"][slice(*spans_of(folder)["d2"][-1])]
    docs["d2"] = long_text(200, 45)  # an update: all old passages become tombstones
    with IndexWriter(folder, encoder) as writer:
        writer.add([Record(docs["d2"], "d2", 1, {"n": 2})])
        writer.delete(["d5"])
    docs.pop("d5")
    assert check(folder).ok
    spans = spans_of(folder)
    dead = json.loads((folder / "manifest.json").read_text())["faiss"]["dead"]
    with Index.open(folder) as index:
        index.use_encoder(encoder)
        assert dead == len(index.store.dead_vector_ids()) > 2  # every passage of both documents
        hits = index.search(old_end, k=len(docs))[0]
        assert "d5" not in {h.id for h in hits} and len(hits) == len(docs)
        assert [h.id for h in hits] == [e[0] for e in oracle(encoder, docs, spans, old_end, len(docs))]
    compact(folder)
    assert check(folder).ok
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["faiss"]["dead"] == 0 and manifest["counts"]["vectors"] == sum(len(s) for s in spans.values())
    with Index.open(folder) as index:
        index.use_encoder(encoder)
        ids, vectors = index.stored_vectors()
        assert len(ids) == manifest["counts"]["vectors"] and len(set(P.rowids_of(ids).tolist())) == len(docs)
        assert [h.id for h in index.search(old_end, k=5)[0]] == [e[0] for e in oracle(encoder, docs, spans, old_end, 5)]


def test_check_finds_a_document_missing_passage_vectors(tmp_path):
    encoder = ChunkingFake()
    folder = tmp_path / "idx"
    build(folder, encoder, {f"d{i}": long_text(i, 50) for i in range(4)})
    with sqlite3.connect(folder / "docs.db") as db:
        spans = json.loads(db.execute("select passages from docs where id = 'd1'").fetchone()[0])
        db.execute("update docs set passages = ? where id = 'd1'", [json.dumps(spans + [[0, 5], [1, 6]])])
    report = check(folder)
    assert not report.ok
    assert any("1 documents lack 2 passage vectors" in p for p in report.problems), report.problems


def test_a_database_written_before_passages_gets_the_column_on_the_next_write(tmp_path):
    encoder = ChunkingFake()
    folder = tmp_path / "idx"
    build(folder, encoder, {"s1": "short one", "s2": "short two"})
    with sqlite3.connect(folder / "docs.db") as db:
        db.execute("alter table docs drop column passages")
    with Index.open(folder) as index:  # read as one passage per document
        index.use_encoder(encoder)
        assert index.search("short one", k=1)[0][0].id == "s1" and not index.store.has_passages
    assert check(folder).ok
    build(folder, encoder, {"l1": long_text(1, 50)})
    assert check(folder).ok
    with Index.open(folder) as index:
        index.use_encoder(encoder)
        assert index.store.has_passages and len(index.fetch_rowids(index.store.live_rowids())) == 3
        assert index.manifest.has_passages


def test_no_chunking_truncates_as_before(tmp_path):
    encoder = ChunkingFake()
    folder = tmp_path / "idx"
    docs = {f"d{i}": long_text(i, 50) for i in range(4)}
    with IndexWriter(folder, encoder, chunking=None) as writer:
        report = writer.add([Record(t, i, 1) for i, t in docs.items()])
    assert (report.chunked, report.passages) == (0, 4)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["counts"] == {"documents": 4} and spans_of(folder)["d1"] == [(0, len(docs["d1"]))]
    with IndexWriter(folder, encoder) as writer:
        report = writer.add([Record(long_text(9, 50), "d9", 1)])
    assert report.chunked == 1 and report.passages > 1


# ---------------------------------------------------------------- through the CLI, with a real (tiny) BERT
def test_cli_finds_a_long_document_by_its_end_only_with_passages(tmp_path, index_home, tiny_model_dir):
    runner = CliRunner()
    long_doc = " ".join(long_text(i, 30) for i in range(8))
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"id": "long", "text": long_doc}]
                         + [{"id": f"s{i}", "text": long_text(100 + i, 12)} for i in range(10)])
    result = runner.invoke(main, ["index", str(corpus), "--index", "p", "--model", str(tiny_model_dir), "-q",
                                  "--chunk-tokens", "24", "--chunk-overlap", "4"])
    assert result.exit_code == 0, result.output
    assert "1 split into passages (" in result.stderr
    chunker = Chunker.for_model(tiny_model_dir / "tokenizer.json", 128, Chunking(24, 4))
    start, end = chunker.split(long_doc)[-1]
    query = long_doc[start:end]
    hits = [json.loads(line) for line in runner.invoke(
        main, ["query", query, "--index", "p", "--mode", "dense", "--json", "-k", "3"]).stdout.splitlines()]
    assert hits[0]["id"] == "long" and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert hits[0]["passage"]["start"] == start and hits[0]["passage"]["end"] == end
    table = runner.invoke(main, ["query", query, "--index", "p", "-k", "2"]).stdout.splitlines()
    assert table[1].split()[4] == "long" and "…" + query[:20] in table[1]  # hybrid; the passage is shown
    listed = [json.loads(line) for line in runner.invoke(
        main, ["query", query, "--index", "p", "--passages", "--json", "-k", "4"]).stdout.splitlines()]
    assert [h["id"] for h in listed].count("long") >= 2  # neighbouring passages of the same document
    assert runner.invoke(main, ["check", "--index", "p"]).stdout.startswith(f"{index_home / 'p'}: ok (11 documents, ")
    # today's truncation: the end of the long document is not in its vector
    result = runner.invoke(main, ["index", str(corpus), "--index", "t", "--model", str(tiny_model_dir), "-q",
                                  "--no-chunk"])
    assert "1 truncated to the model's max length" in result.stderr
    truncated = [json.loads(line) for line in runner.invoke(
        main, ["query", query, "--index", "t", "--mode", "dense", "--json", "-k", "11"]).stdout.splitlines()]
    assert next(h for h in truncated if h["id"] == "long")["score"] < 0.999 and "passage" not in truncated[0]


@pytest.mark.parametrize("args, code, message", [
    (["--chunk-tokens", "8", "--chunk-overlap", "8"], 2, "--chunk-overlap (8) must be less than --chunk-tokens (8)"),
    (["--no-chunk", "--chunk-tokens", "8"], 2, "--no-chunk truncates long texts; it cannot be combined"),
    (["--chunk-tokens", "0"], 2, "0 is not in the range x>=1"),
    (["--chunk-tokens", "500"], 1, "Error: chunk size 500 tokens does not fit the model's max length (128 tokens, 2 "
                                   "of them special): use at most 126"),
])
def test_cli_chunk_options_refuse_what_cannot_work(tmp_path, index_home, tiny_model_dir, args, code, message):
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"id": "long", "text": long_text(1, 300)}])
    result = CliRunner().invoke(main, ["index", str(corpus), "--index", "x", "--model", str(tiny_model_dir), "-q",
                                       *args])
    assert result.exit_code == code and message in result.stderr, result.output
    assert result.stderr.count("\n") == (1 if code == 1 else result.stderr.count("\n"))
    assert not (index_home / "x" / "manifest.json").exists()


# ---------------------------------------------------------------- dedupe by document or by passage
def test_dedupe_scores_documents_by_their_most_similar_passages(tmp_path):
    from semsearch.dedupe import dedupe

    encoder = ChunkingFake()
    docs = {f"d{i}": long_text(i, 45) for i in range(8)}
    folder = tmp_path / "idx"
    build(folder, encoder, docs)
    spans = spans_of(folder)
    shared = docs["d1"][slice(*spans["d1"][1])]  # d9 is one passage of d1, word for word: cosine 1
    build(folder, encoder, {"d9": shared})
    docs["d9"] = shared
    spans = spans_of(folder)
    threshold = 0.5
    result = dedupe(index=folder, threshold=threshold)
    pieces = {i: [t] if len(spans[i]) == 1 else [t[s:e] for s, e in spans[i]] for i, t in docs.items()}
    vectors = {i: encoder.encode(p) for i, p in pieces.items()}
    expected = {}
    ids = list(docs)
    for a in range(len(ids)):
        for b in range(a + 1, len(ids)):
            best = float((vectors[ids[a]] @ vectors[ids[b]].T).max())
            if best >= threshold:
                expected[(ids[a], ids[b])] = best
    found = {(p.a.id, p.b.id): p.score for p in result.pairs}
    assert found.keys() == expected.keys() and ("d1", "d9") in found
    for key, score in expected.items():
        assert found[key] == pytest.approx(score, abs=1e-6)
    assert len(result.documents) == len(docs)
    for drop in result.dropped:  # each dropped document's score: its best passage pair with the one kept
        best = float((vectors[drop.document.id] @ vectors[drop.duplicate_of.id].T).max())
        assert drop.score == pytest.approx(best, abs=1e-6)
    strict = dedupe(index=folder, threshold=0.999)
    assert [(d.document.id, d.duplicate_of.id, round(d.score, 6)) for d in strict.dropped] == [("d9", "d1", 1.0)]
    by_passage = dedupe(index=folder, threshold=0.999, passages=True)
    assert {(p.a.id, p.b.id) for p in by_passage.pairs} == {("d1#1", "d9")}
    assert len(by_passage.documents) == sum(len(s) for s in spans.values())
    top1 = dedupe(index=folder, threshold=threshold, top_k=1)
    assert {(p.a.id, p.b.id) for p in top1.pairs} <= found.keys() and ("d1", "d9") in {(p.a.id, p.b.id) for p in
                                                                                        top1.pairs}


def test_dedupe_cli_passages_flag(tmp_path, index_home):
    result = CliRunner().invoke(main, ["dedupe", str(tmp_path / "c.jsonl"), "--passages"])
    assert result.exit_code == 2 and "--passages applies to an --index" in result.stderr


ALPHABET = st.sampled_from(list("abcdefghij  ,.-'\"()é漢字🙂\t\nÅß") + ["supercalifragilistic", " the ", "ﬁ"])


@settings(max_examples=150, deadline=None)
@given(st.lists(ALPHABET, min_size=0, max_size=400), st.integers(3, 24), st.data())
def test_real_tokenizer_passages_fit_the_window_and_cover_the_text(pieces, size, data):
    overlap = data.draw(st.integers(0, size - 1))
    chunker = Chunker(_TOKENIZER, size, overlap)
    text = "".join(pieces)
    spans = chunker.split(text)
    if chunker.count(text) <= size:
        assert spans == [(0, len(text))]
        return
    offsets = _TOKENIZER.encode(text, add_special_tokens=False).offsets
    covered = set()
    for start, end in spans:
        assert 0 <= start < end <= len(text)
        on_words = (start == 0 or not (text[start - 1].isalnum() and text[start].isalnum())) and (
            end == len(text) or not (text[end - 1].isalnum() and text[end].isalnum()))
        # a passage cut inside a word longer than the window may re-tokenize its edge pieces a little longer
        assert chunker.count(text[start:end]) <= (size if on_words else size + 4), (text[start:end], size)
        covered.update(i for i, (s, e) in enumerate(offsets) if s >= start and e <= end)
    assert covered == set(range(len(offsets)))  # every token is in some passage


def _tokenizer():
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(bundled_model_path() / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


_TOKENIZER = _tokenizer()


def test_eval_retrieval_modes_and_chunk_options(tmp_path, tiny_model_dir):
    from .test_eval_metrics import beir_folder

    folder = beir_folder(tmp_path / "toy")
    runner = CliRunner()
    for args, ranked_by in ((["--mode", "lexical"], "lexical, temporary index with no passages"),
                            ([], "hybrid, temporary index with no passages"),
                            (["--mode", "hybrid", "--alpha", "0.5"], "hybrid (alpha 0.5), temporary index"),
                            (["--mode", "dense", "--no-chunk"], f"ranked by {tiny_model_dir}\n")):
        result = runner.invoke(main, ["eval", "retrieval", str(folder), "--model", str(tiny_model_dir), *args])
        assert result.exit_code == 0, result.output
        assert ranked_by in result.stdout and "nDCG@10 " in result.stdout
    lexical = runner.invoke(main, ["eval", "retrieval", str(folder), "--model", str(tiny_model_dir), "--mode",
                                   "lexical"]).stdout
    assert "MRR@10 0.00" in lexical  # "first" and "second" are words of no document: nothing is found
    bad = runner.invoke(main, ["eval", "retrieval", str(folder), "--index", "x", "--no-chunk"])
    assert bad.exit_code == 2 and "an --index keeps the passages it was built with" in bad.stderr
    bad = runner.invoke(main, ["eval", "retrieval", str(folder), "--mode", "dense", "--alpha", "0.5"])
    assert bad.exit_code == 2 and "--alpha weighs the sides of --mode hybrid" in bad.stderr
