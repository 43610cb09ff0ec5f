"""The index folder: exact search, incremental adds, atomic generations, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from semsearch.api import index_corpus, search
from semsearch.errors import IndexFormatError, IndexNotFoundError, InputError, ModelError, SemsearchError
from semsearch.index import FORMAT_VERSION, Index, IndexWriter, index_path

from .conftest import write_st_folder

WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda river mountain city music bread "
         "coffee tea garden winter summer train ship code data").split()


def corpus(tmp_path, n=60, name="c.jsonl", seed=0, start=0):
    rng = np.random.default_rng(seed)
    path = tmp_path / name
    with path.open("w") as fh:
        for i in range(start, start + n):
            text = " ".join(rng.choice(WORDS, size=rng.integers(2, 9)))
            fh.write(json.dumps({"id": f"d{i}", "text": f"{text} {i}", "group": i % 3}) + "\n")
    return path


def brute_force(encoder, texts, ids, queries, k):
    docs = encoder.encode(texts)
    scores = encoder.encode(queries) @ docs.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [[ids[j] for j in row] for row in order], np.take_along_axis(scores, order, axis=1)


def test_search_equals_brute_force(tmp_path, index_home, tiny_encoder):
    path = corpus(tmp_path)
    report = index_corpus(path, "t", encoder=tiny_encoder)
    assert (report.read, report.added, report.unchanged) == (60, 60, 0)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    queries = ["river music", "coffee and bread", "winter train 7"]
    expected_ids, expected_scores = brute_force(tiny_encoder, [r["text"] for r in records],
                                                [r["id"] for r in records], queries, 5)
    with Index.open("t") as index:
        index.use_encoder(tiny_encoder)
        results = index.search(queries, k=5)
    for hits, ids, scores in zip(results, expected_ids, expected_scores):
        assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
        np.testing.assert_allclose([h.score for h in hits], scores, atol=1e-5)
        assert [h.id for h in hits] == ids
        assert all(h.meta == {"group": int(h.id[1:]) % 3} for h in hits)


def test_manifest_records_encoder_and_files(tmp_path, index_home, tiny_encoder, tiny_model_dir):
    index_corpus(corpus(tmp_path, n=5), "t", encoder=tiny_encoder)
    manifest = json.loads((index_home / "t" / "manifest.json").read_text())
    assert manifest["format"] == 3 and manifest["generation"] == 1  # segments: earlier readers refuse it
    assert manifest["encoder"]["model"] == str(tiny_model_dir)
    assert manifest["encoder"]["pooling"] == "mean" and manifest["encoder"]["dimension"] == 32
    assert manifest["encoder"]["fingerprint"].startswith("sha256:")
    assert manifest["faiss"]["factory"] == "IDMap2,Flat" and manifest["counts"] == {"documents": 5}
    assert {"faiss-cpu", "torch", "transformers", "numpy"} <= set(manifest["versions"])
    assert manifest["sqlite"] == {"file": "docs.db"} and manifest["lexical"] is True
    assert [(s["file"], s["vectors"], s["kind"]) for s in manifest["segments"]] == [("seg.1.0.faiss", 5, "flat")]
    assert sorted(p.name for p in (index_home / "t").iterdir()) == [".lock", ".pending", "docs.db", "manifest.json",
                                                                     "seg.1.0.faiss"]
    assert (index_home / "t" / ".pending").read_text() == ""  # the journal is emptied by a commit


def test_reindex_adds_nothing_twice_and_updates_changed_text(tmp_path, index_home, tiny_encoder):
    path = corpus(tmp_path, n=20)
    index_corpus(path, "t", encoder=tiny_encoder)
    again = index_corpus(path, "t", encoder=tiny_encoder)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 20)
    changed = tmp_path / "changed.jsonl"
    changed.write_text(json.dumps({"id": "d3", "text": "completely new words about coffee"}) + "\n"
                       + json.dumps({"id": "new", "text": "a brand new document"}) + "\n")
    report = index_corpus(changed, "t", encoder=tiny_encoder)
    assert (report.added, report.updated, report.unchanged) == (1, 1, 0)
    with Index.open("t") as index:
        index.use_encoder(tiny_encoder)
        assert len(index) == 21 and index.manifest.generation == 2  # the no-op run wrote nothing
        top = index.search("completely new words about coffee", k=1)[0][0]
        assert (top.id, top.text) == ("d3", "completely new words about coffee")
        assert top.score == pytest.approx(1.0, abs=1e-5)
    # the second write added a segment with its two vectors; the first is untouched (d3's old vector: a tombstone)
    assert sorted(p.name for p in (index_home / "t").glob("*.faiss")) == ["seg.1.0.faiss", "seg.2.0.faiss"]
    manifest = json.loads((index_home / "t" / "manifest.json").read_text())
    assert [s["vectors"] for s in manifest["segments"]] == [20, 2] and manifest["faiss"]["dead"] == 1


def test_repeated_ids_in_one_file_last_wins(tmp_path, index_home, tiny_encoder):
    path = tmp_path / "dup.jsonl"
    path.write_text('{"id": "x", "text": "first version"}\n{"id": "x", "text": "second version"}\n')
    report = index_corpus(path, "t", encoder=tiny_encoder, chunk_size=1)
    assert (report.read, report.repeated) == (2, 1)
    hits = search("second version", "t", k=5)[0]
    assert [(h.id, h.text) for h in hits] == [("x", "second version")]


def test_bad_record_leaves_previous_index_untouched(tmp_path, index_home, tiny_encoder):
    good = corpus(tmp_path, n=10)
    index_corpus(good, "t", encoder=tiny_encoder)
    folder = index_home / "t"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    bad = corpus(tmp_path, n=30, name="bad.jsonl", start=100)
    with bad.open("a") as fh:
        fh.write('{"id": "broken", "text": \n')
    with pytest.raises(InputError, match=r"bad.jsonl:31: invalid JSON"):
        index_corpus(bad, "t", encoder=tiny_encoder, chunk_size=8)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    with Index.open("t") as index:
        assert len(index) == 10


def test_first_write_failing_leaves_no_index(tmp_path, index_home, tiny_encoder):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"oops": 1}\n')
    with pytest.raises(InputError):
        index_corpus(bad, "t", encoder=tiny_encoder)
    with pytest.raises(IndexNotFoundError, match="t: no such index; build it with"):
        Index.open("t")
    assert sorted(p.name for p in (index_home / "t").iterdir()) == [".lock", ".pending"]  # nothing else left


def test_empty_file_is_refused(tmp_path, index_home, tiny_encoder):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(InputError, match=r"empty.jsonl: no records: the file is empty"):
        index_corpus(empty, "t", encoder=tiny_encoder)


def test_other_model_is_refused(tmp_path, index_home, tiny_encoder):
    index_corpus(corpus(tmp_path, n=5), "t", encoder=tiny_encoder)
    other_weights = type(tiny_encoder.model)(tiny_encoder.model.config)
    other = write_st_folder(tmp_path / "other", other_weights, tiny_encoder.tokenizer)
    with pytest.raises(ModelError, match=r"differs in fingerprint: drop --model"):
        search("river", "t", model=str(other))
    with pytest.raises(ModelError, match="differs in fingerprint"):
        index_corpus(corpus(tmp_path, n=3, name="more.jsonl"), "t", model=str(other))
    max_pooled = tiny_encoder.with_options(pooling="max")
    with pytest.raises(ModelError, match="differs in pooling"):
        with IndexWriter("t", max_pooled):
            pass


def test_missing_newer_and_damaged_indexes(tmp_path, index_home, tiny_encoder):
    with pytest.raises(IndexNotFoundError, match=r"no such index; build it with: semsearch index CORPUS --index nope"):
        Index.open("nope")
    index_corpus(corpus(tmp_path, n=5), "t", encoder=tiny_encoder)
    manifest_path = index_home / "t" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    (index_home / "t" / "seg.1.0.faiss").write_bytes(b"not faiss")
    with pytest.raises(IndexFormatError, match="seg.1.0.faiss: unreadable FAISS file"):
        Index.open("t")
    manifest["format"] = FORMAT_VERSION + 1
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match=r"is newer than this semsearch reads .* pip install -U semsearch"):
        Index.open("t")


def test_threshold_and_k_larger_than_index(tmp_path, index_home, tiny_encoder):
    index_corpus(corpus(tmp_path, n=4), "t", encoder=tiny_encoder)
    with Index.open("t") as index:
        index.use_encoder(tiny_encoder)
        everything = index.search("alpha", k=50)[0]
        assert len(everything) == 4
        cut = everything[1].score
        kept = index.search("alpha", k=50, threshold=cut)[0]
        assert [h.id for h in kept] == [h.id for h in everything[:2]]
        with pytest.raises(SemsearchError, match="k must be at least 1"):
            index.search("alpha", k=0)


def test_second_writer_waits_then_gives_up(tmp_path, index_home, tiny_encoder):
    index_corpus(corpus(tmp_path, n=3), "t", encoder=tiny_encoder)
    with IndexWriter("t", tiny_encoder):
        with pytest.raises(SemsearchError, match=r"another process is writing this index \(waited 0 s\)"):
            with IndexWriter("t", tiny_encoder, lock_timeout=0.2):
                pass


def test_index_path_rules(monkeypatch, tmp_path):
    monkeypatch.delenv("SEMSEARCH_INDEXES", raising=False)
    assert str(index_path(None)) == "indexes/default"
    assert str(index_path("docs")) == "indexes/docs"
    assert index_path(str(tmp_path / "x")) == tmp_path / "x"
    assert str(index_path("./here")) == "here"


def test_repeated_queries_come_from_the_lru_cache(tmp_path, index_home, fake_encoder):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": str(i), "text": f"document {i}"}) + "\n" for i in range(20)))
    index_corpus(corpus, "lru", encoder=fake_encoder)
    with Index.open("lru", query_cache=2) as index:
        index.use_encoder(fake_encoder)
        fake_encoder.calls = 0
        first = index.search(["document 3", "document 4"], k=3)
        assert fake_encoder.calls == 2
        again = index.search(["document 4", "document 3", "document 4"], k=3)
        assert fake_encoder.calls == 2  # all three from the cache
        assert [h.id for h in again[1]] == [h.id for h in first[0]] and again[0][0].id == "4"
        index.search("document 5", k=1)  # evicts the least recently used: "document 3"
        assert fake_encoder.calls == 3 and list(index._query_cache) == ["document 4", "document 5"]
        index.search("document 3", k=1)
        assert fake_encoder.calls == 4
        np.testing.assert_array_equal(index.embed_queries(["document 3"]), fake_encoder.encode(["document 3"]))
        fake_encoder.calls = 0  # duplicates among new texts are embedded once; more new texts than the cache holds
        vectors = index.embed_queries(["a", "b", "a", "c", "b"])
        assert fake_encoder.calls == 3 and list(index._query_cache) == ["b", "c"]
        np.testing.assert_array_equal(vectors, fake_encoder.encode(["a", "b", "a", "c", "b"]))
        assert index.embed_queries([]).shape == (0, fake_encoder.dimension)
        index.use_encoder(fake_encoder)  # another encoder: the cache is dropped
        assert not index._query_cache
    with Index.open("lru", query_cache=0) as index:
        index.use_encoder(fake_encoder)
        fake_encoder.calls = 0
        index.search("document 1", k=1)
        index.search("document 1", k=1)
        assert fake_encoder.calls == 2 and not index._query_cache


def test_threads_can_share_an_index_and_its_query_cache(tmp_path, index_home, fake_encoder):
    import threading
    import time

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": str(i), "text": f"document {i}"}) + "\n" for i in range(20)))
    index_corpus(corpus, "shared", encoder=fake_encoder)

    class Slow(type(fake_encoder)):
        def encode(self, texts, batch_size=32, show_progress=None):
            time.sleep(0.001)  # let the other threads run between the cache lookup and the store
            return super().encode(texts, batch_size, show_progress)

    slow, errors = Slow(), []
    with Index.open("shared", query_cache=3) as index:
        index.use_encoder(slow)

        def work(seed):
            rng = np.random.default_rng(seed)
            try:
                for _ in range(100):
                    texts = [f"q{i}" for i in rng.integers(0, 8, size=2)]
                    np.testing.assert_array_equal(index.embed_queries(texts), slow.encode(texts))
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors[:3]
        assert len(index._query_cache) <= 3
