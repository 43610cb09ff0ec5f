"""Index types: one contract battery over every type, the choice of type, search knobs, and recall on real data."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from semsearch.api import delete_documents, index_corpus
from semsearch.cli import main
from semsearch.corpus import Record
from semsearch.index import Index, IndexWriter, compact
from semsearch.index.maintenance import check
from semsearch.vectors import IndexTypeError, VectorStore

from .conftest import FakeEncoder, shared_file

# The four named types, plus two factory strings: a trained lossy type that removes ids (IVF + scalar
# quantiser) and a trained lossy type that cannot remove them, so it marks them dead and rebuilds by re-encoding.
TYPES = ["flat", "hnsw", "ivf", "ivfpq", "IVF4,SQ8", "HNSW16,SQ8"]
LOSSLESS = {"flat", "hnsw", "ivf", "ivfpq"}  # ivfpq re-ranks with the exact vectors it keeps beside the codes


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def docs(start, stop, version=0):
    return [{"id": f"d{i}", "text": f"document {i} version {version}", "group": i % 8} for i in range(start, stop)]


def exact(encoder, documents, queries, k):
    """Brute-force top k ids and scores over ``documents``."""
    vectors = encoder.encode([d["text"] for d in documents])
    scores = encoder.encode(queries) @ vectors.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [[documents[j]["id"] for j in row] for row in order], np.take_along_axis(scores, order, axis=1)


def open_with(name, encoder):
    index = Index.open(name)
    index.use_encoder(encoder)
    return index


@pytest.fixture
def encoder():
    return FakeEncoder(dimension=32)


@pytest.mark.parametrize("kind", TYPES)
def test_contract(kind, tmp_path, index_home, encoder, monkeypatch):
    """Build, reopen, add, update, delete, search, filter, check and compact behave alike for every index type."""
    monkeypatch.setattr("semsearch.encoder.Encoder.from_spec", classmethod(lambda cls, spec, device=None: encoder))
    live = {d["id"]: d for d in docs(0, 600)}
    index_corpus(write_jsonl(tmp_path / "a.jsonl", list(live.values())), "t", encoder=encoder, index_type=kind)
    manifest = json.loads((index_home / "t" / "manifest.json").read_text())["faiss"]
    assert manifest["type"] == kind and manifest["dead"] == 0
    first_factory = manifest["factory"]
    if kind in ("ivf", "ivfpq", "IVF4,SQ8", "HNSW16,SQ8"):  # trained once, on the first write
        assert manifest["build"]["trained_on"] == 600
    if kind in ("ivf", "ivfpq"):
        assert f"IVF{manifest['build']['nlist']}," in first_factory and manifest["search"]["nprobe"] >= 1
    if kind == "hnsw":
        assert manifest["search"] == {"efSearch": 64} and manifest["build"] == {"efConstruction": 40}

    def search_all(index, query, **kw):
        return index.search(query, k=len(live) + 10, **kw)[0]

    with open_with("t", encoder) as index:
        assert len(index) == 600
        for doc in list(live.values())[::97]:  # each document is its own nearest neighbour
            top = index.search(doc["text"], k=1)[0][0]
            assert top.id == doc["id"] and top.score == pytest.approx(1.0, abs=0.05)
        queries = [f"query {q}" for q in range(20)]
        expected_ids, expected_scores = exact(encoder, list(live.values()), queries, 10)
        results = index.search(queries, k=10)
        found = np.mean([len({h.id for h in hits} & set(ids)) / 10 for hits, ids in zip(results, expected_ids)])
        assert found >= 0.8  # tiny random data; the real-data recall test below holds the 0.95 bound
        for hits in results:
            assert len(hits) == 10 and len({h.id for h in hits}) == 10
            assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        if kind in LOSSLESS:  # scores are the exact cosines of the documents returned
            vectors = {d: v for d, v in zip(live, encoder.encode([d["text"] for d in live.values()]))}
            for query, hits in zip(queries, results):
                q = encoder.encode(query)
                np.testing.assert_allclose([h.score for h in hits], [vectors[h.id] @ q for h in hits], atol=1e-5)

    # a second write adds to the trained index (no new training), updates one text, adds 50 documents
    more = docs(600, 650) + [{"id": "d7", "text": "an entirely new text for d7", "group": 3}]
    report = index_corpus(write_jsonl(tmp_path / "b.jsonl", more), "t", encoder=encoder, index_type=kind)
    assert (report.added, report.updated) == (50, 1)
    live.update({d["id"]: d for d in more})
    manifest = json.loads((index_home / "t" / "manifest.json").read_text())["faiss"]
    assert manifest["factory"] == first_factory and manifest.get("build", {}).get("trained_on") in (None, 600)
    with open_with("t", encoder) as index:
        assert len(index) == 650
        assert index.search("an entirely new text for d7", k=1)[0][0].id == "d7"
        assert index.search("document 7 version 0", k=1)[0][0].id != "d7"
        assert index.search("document 640 version 0", k=1)[0][0].id == "d640"

    # deletes: by id and by filter; removed documents never come back, whatever the type
    assert delete_documents("t", ids=["d1", "d2", "d640"]) == 3
    group3 = [d for d, doc in live.items() if doc["group"] == 3]
    assert delete_documents("t", filters=["group=3"]) == len(group3) == 82
    for doc_id in ["d1", "d2", "d640"] + group3:
        del live[doc_id]
    manifest = json.loads((index_home / "t" / "manifest.json").read_text())["faiss"]
    assert manifest["dead"] == 86  # tombstones in every type (the old d7 too); 86 / 651: below the bound
    with open_with("t", encoder) as index:
        assert len(index) == len(live) == 565
        hits = search_all(index, "document 1 version 0")
        assert sorted(h.id for h in hits) == sorted(live)
        assert index.search("document 2 version 0", k=1)[0][0].id != "d2"
        rowids, vectors = index.stored_vectors()
        assert len(rowids) == 565 and np.all(np.diff(rowids) > 0)
        stored = index.fetch_rowids(rowids.tolist())
        assert sorted(doc.id for doc in stored.values()) == sorted(live)
        if kind in LOSSLESS:
            texts = [stored[r].text for r in rowids.tolist()]
            np.testing.assert_allclose(vectors, encoder.encode(texts), atol=1e-6)

        # filters: narrow ones are exact (the matching vectors are scanned), wide ones return only matches
        narrow = index.search(queries[:5], k=10, filters=["group=1", "id!=d5"])
        allowed = [d for d in live.values() if d["group"] == 1 and d["id"] != "d5"]
        expected_ids, _ = exact(encoder, allowed, queries[:5], 10)
        if kind in LOSSLESS:
            assert [[h.id for h in hits] for hits in narrow] == expected_ids
        else:  # every match scanned, scored from the quantised codes
            assert all(len(set(h.id for h in hits) & set(ids)) >= 8 for hits, ids in zip(narrow, expected_ids))
        assert all(len(hits) == 10 and all(h.meta["group"] == 1 for h in hits) for hits in narrow)
        wide = index.search(queries[:5], k=10, filters=["group!=2"])
        assert all(len(hits) == 10 and all(h.meta["group"] != 2 for h in hits) for hits in wide)
        tiny = index.search("anything", k=10, filters=["id=d9"])[0]
        assert [h.id for h in tiny] == ["d9"]
        before = [[(h.id, round(h.score, 4)) for h in hits] for hits in index.search(queries, k=10)]
    assert check("t").ok

    # compaction: one segment of the type, no tombstones, the same answers (exactly so for lossless types)
    report = compact("t")
    assert report.purged == 86 and report.segments_after == 1
    manifest = json.loads((index_home / "t" / "manifest.json").read_text())
    assert manifest["faiss"]["dead"] == 0 and len(manifest["segments"]) == 1
    assert manifest["segments"][0]["kind"] == kind and manifest["segments"][0]["vectors"] == 565
    with open_with("t", encoder) as index:
        after = [[(h.id, round(h.score, 4)) for h in hits] for hits in index.search(queries, k=10)]
        if kind in LOSSLESS and kind != "hnsw":
            assert after == before
        assert sorted(h.id for h in search_all(index, "document 1 version 0")) == sorted(live)
    assert check("t").ok


@pytest.mark.parametrize("kind", TYPES)
def test_dead_vectors_are_compacted_past_the_bound(kind, tmp_path, index_home, encoder, monkeypatch):
    index_corpus(write_jsonl(tmp_path / "a.jsonl", docs(0, 300)), "t", encoder=encoder, index_type=kind)
    monkeypatch.setattr("semsearch.encoder.Encoder.from_spec", classmethod(lambda cls, spec, device=None: encoder))
    assert delete_documents("t", ids=[f"d{i}" for i in range(50)]) == 50  # 17 %: tombstones
    manifest = json.loads((index_home / "t" / "manifest.json").read_text())["faiss"]
    assert manifest["dead"] == 50
    encoder.calls = 0
    assert delete_documents("t", ids=[f"d{i}" for i in range(50, 80)]) == 30  # 27 %: compacted
    manifest = json.loads((index_home / "t" / "manifest.json").read_text())["faiss"]
    assert manifest["dead"] == 0
    assert encoder.calls == (0 if kind in LOSSLESS else 220)  # lossy storage is re-encoded from the texts
    with open_with("t", encoder) as index:
        assert len(index) == 220 and index.manifest.vector_total == 220
        assert index.search("document 150 version 0", k=1)[0][0].id == "d150"
        assert index.search("document 10 version 0", k=1)[0][0].id != "d10"
    assert check("t").ok


def test_auto_is_flat_unless_the_corpus_is_large(tmp_path, index_home, encoder, monkeypatch):
    path = write_jsonl(tmp_path / "a.jsonl", docs(0, 30))
    index_corpus(path, "small", encoder=encoder)
    assert json.loads((index_home / "small" / "manifest.json").read_text())["faiss"]["type"] == "flat"
    monkeypatch.setattr("semsearch.vectors.AUTO_FLAT_MAX", 20)
    index_corpus(path, "large", encoder=encoder)
    faiss_meta = json.loads((index_home / "large" / "manifest.json").read_text())["faiss"]
    assert (faiss_meta["type"], faiss_meta["factory"]) == ("ivf", "IVF1,Flat")
    with IndexWriter("stdin", encoder, expected_count=None) as writer:  # size unknown (stdin): exact flat
        assert writer.vectors.kind == "flat"
        writer.add([Record(text=f"t {i}", id=str(i), line=i + 1) for i in range(2)])


def test_type_errors(tmp_path, index_home, encoder):
    path = write_jsonl(tmp_path / "a.jsonl", docs(0, 20))
    with pytest.raises(IndexTypeError, match=r"unknown index type 'IVF,Nonsense': use auto, flat, hnsw, ivf, ivfpq "
                                             r"or a FAISS factory string"):
        index_corpus(path, "t", encoder=encoder, index_type="IVF,Nonsense")
    assert not (index_home / "t" / "manifest.json").exists()
    index_corpus(path, "t", encoder=encoder, index_type="hnsw")
    index_corpus(path, "t", encoder=encoder, index_type="HNSW")  # the same type: fine
    with pytest.raises(IndexTypeError, match=r"t: is a hnsw index \(IDMap,HNSW32,Flat\) and keeps that type; "
                                             r"drop --index-type ivf"):
        index_corpus(path, "t", encoder=encoder, index_type="ivf")
    with open_with("t", encoder) as index:
        assert len(index.search("document 3", k=3, ef_search=8)[0]) == 3
        with pytest.raises(IndexTypeError, match=r"nprobe applies to IVF indexes; this one is hnsw"):
            index.search("document 3", nprobe=4)


def test_knobs_change_the_search(tmp_path, index_home, encoder):
    index_corpus(write_jsonl(tmp_path / "a.jsonl", docs(0, 2000)), "t", encoder=encoder, index_type="ivf")
    queries = [f"query {q}" for q in range(30)]
    expected_ids, _ = exact(encoder, docs(0, 2000), queries, 10)

    def recall(hits_per_query):
        return np.mean([len({h.id for h in hits} & set(ids)) / 10 for hits, ids in zip(hits_per_query, expected_ids)])

    with open_with("t", encoder) as index:
        nlist = index.manifest.faiss["build"]["nlist"]
        assert recall(index.search(queries, k=10, nprobe=nlist)) == 1.0  # every list: exact
        assert recall(index.search(queries, k=10, nprobe=1)) < recall(index.search(queries, k=10))
        with pytest.raises(IndexTypeError, match="ef-search applies to HNSW indexes; this one is ivf"):
            index.search(queries, ef_search=10)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf", "ivfpq"])
def test_mapped_and_read_indexes_answer_alike(kind, tmp_path, encoder):
    texts = [f"text {i}" for i in range(500)]
    store = VectorStore.create(encoder.dimension, kind)
    store.add(np.arange(1, 501), encoder.encode(texts))
    store.save(tmp_path / "v.faiss")
    read = VectorStore.load(tmp_path / "v.faiss", store.manifest())
    mapped = VectorStore.load(tmp_path / "v.faiss", store.manifest(), mmap=True)
    queries = encoder.encode([f"query {i}" for i in range(10)])
    for a, b in zip(read.search(queries, 5), mapped.search(queries, 5)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(read.vectors()[1], mapped.vectors()[1])


def test_cli_index_type_and_knobs(tmp_path, index_home, tiny_model_dir):
    runner = CliRunner()
    path = write_jsonl(tmp_path / "a.jsonl", docs(0, 50))
    result = runner.invoke(main, ["index", str(path), "--index", "t", "--index-type", "ivf", "-q",
                                  "--model", str(tiny_model_dir)])
    assert result.exit_code == 0, result.output
    out = runner.invoke(main, ["query", "document 3 version 0", "--index", "t", "--nprobe", "1", "--json", "-k", "3"])
    assert out.exit_code == 0 and len(out.stdout.splitlines()) == 3
    assert json.loads(out.stdout.splitlines()[0])["id"] == "d3"
    bad = runner.invoke(main, ["query", "x", "--index", "t", "--ef-search", "5"])
    assert bad.exit_code == 1 and bad.stderr == "Error: ef-search applies to HNSW indexes; this one is ivf (IVF1,Flat)\n"
    assert runner.invoke(main, ["query", "x", "--index", "t", "--nprobe", "0"]).exit_code == 2
    bad = runner.invoke(main, ["index", str(path), "--index", "u", "--index-type", "bogus", "-q",
                               "--model", str(tiny_model_dir)])
    assert bad.exit_code == 1 and bad.stderr.startswith("Error: unknown index type 'bogus': use auto, flat, hnsw")
    info = runner.invoke(main, ["info", "--index", "t"]).stdout
    assert "faiss      ivf: IVF1,Flat (search: nprobe 1)\n" in info
    assert runner.invoke(main, ["index", str(path), "--index", "h", "--index-type", "hnsw", "-q",
                                "--model", str(tiny_model_dir)]).exit_code == 0
    assert runner.invoke(main, ["delete", "--index", "h", "--id", "d3"]).exit_code == 0
    info = runner.invoke(main, ["info", "--index", "h"]).stdout
    assert "faiss      hnsw: IDMap,HNSW32,Flat (search: efSearch " in info
    assert "segments   1 (50 vectors); 1 deleted documents awaiting compaction\n" in info
    assert "compaction not due (automatic when deleted vectors pass 20% or segments pass 24" in info


# ---------------------------------------------------------------- recall on real sentences (slow)

def real_sentences(limit: int) -> list[str]:
    files = [(("stsb", f"stsb-en-{split}.csv"), ",", False) for split in ("train", "dev", "test")]
    files += [(("nli", name), "\t", True) for name in ("snli-validation.tsv", "snli-test.tsv")]
    seen: dict[str, None] = {}
    for parts, delimiter, header in files:
        with open(shared_file(*parts), newline="", encoding="utf-8") as fh:
            rows = csv.reader(fh, delimiter=delimiter)
            if header:
                next(rows)
            for row in rows:
                for text in row[:2]:
                    if text.strip():
                        seen.setdefault(text.strip(), None)
                if len(seen) >= limit:
                    return list(seen)
    return list(seen)


@pytest.fixture(scope="module")
def real_vectors(real_encoder):
    sentences = real_sentences(20_200)
    rng = np.random.default_rng(0)
    query_rows = set(rng.choice(len(sentences), size=200, replace=False).tolist())
    documents = [s for i, s in enumerate(sentences) if i not in query_rows]
    queries = [sentences[i] for i in sorted(query_rows)]
    return real_encoder.encode(documents, batch_size=64), real_encoder.encode(queries)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["hnsw", "ivf", "ivfpq"])
def test_recall_at_10_on_real_sentences(kind, real_vectors, tmp_path):
    """Issue 6, Must show 4: recall@10 >= 0.95 against exact search at default knobs, 20k real documents."""
    documents, queries = real_vectors
    assert len(documents) == 20_000
    truth = np.argsort(-(queries @ documents.T), axis=1, kind="stable")[:, :10] + 1
    store = VectorStore.create(documents.shape[1], kind)
    store.add(np.arange(1, len(documents) + 1), documents)
    store.save(tmp_path / "v.faiss")
    loaded = VectorStore.load(tmp_path / "v.faiss", store.manifest(), mmap=True)
    _, found = loaded.search(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found.tolist(), truth.tolist())])
    assert recall >= 0.95, f"{kind} ({store.factory}, {store.search_defaults}): recall@10 {recall:.3f}"


# ---------------------------------------------------------------- exact scans: float64 scores, any batch
def test_flat_scan_scores_exactly_and_the_same_in_any_batch():
    """A flat store's scan re-scores FAISS's float32 candidates in float64: copies of a vector stored at other
    positions tie exactly (ordered by id), a batch answers each query as it would alone, and the hits are the
    float64 oracle's, ties by id included."""
    rng = np.random.default_rng(7)
    d = 48
    base = rng.standard_normal((2000, d))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    vectors = np.vstack([base, base[:300], base[:300]]).astype(np.float32)  # copies: exact ties elsewhere
    ids = rng.permutation(10**6)[:len(vectors)].astype(np.int64)
    store = VectorStore.create(d, "flat")
    store.add(ids, vectors)
    queries = base[:40] + 0.05 * rng.standard_normal((40, d))
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    k = 7
    batch_scores, batch_ids = store.search(queries, k)
    exact = vectors.astype(np.float64) @ queries.astype(np.float64).T
    for row in range(len(queries)):
        alone_scores, alone_ids = store.search(queries[row:row + 1], k)
        np.testing.assert_array_equal(alone_ids[0], batch_ids[row])
        np.testing.assert_array_equal(alone_scores[0], batch_scores[row])
        rounded = exact[:, row].astype(np.float32)
        order = np.lexsort((ids, -rounded.astype(np.float64)))[:k]
        np.testing.assert_array_equal(batch_ids[row], ids[order])
        np.testing.assert_array_equal(batch_scores[row], rounded[order])
    assert (batch_scores[:, 0] == batch_scores[:, 1]).sum() >= 20  # the copies did tie at the top


def test_batched_flat_scan_leaves_faiss_settings_as_they_were():
    import faiss

    store = VectorStore.create(16, "flat")
    vectors = np.random.default_rng(1).standard_normal((500, 16)).astype(np.float32)
    store.add(np.arange(500, dtype=np.int64), vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    before = faiss.cvar.distance_compute_blas_threshold, faiss.cvar.distance_compute_blas_database_bs
    store.search(vectors[:5], 3)
    assert (faiss.cvar.distance_compute_blas_threshold, faiss.cvar.distance_compute_blas_database_bs) == before


def test_torch_scans_give_the_same_hits_and_scores_as_faiss():
    from semsearch.vectors import use_torch_scans

    rng = np.random.default_rng(11)
    vectors = rng.standard_normal((3000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = np.vstack([vectors, vectors[:200]])  # exact ties
    store = VectorStore.create(32, "flat")
    store.add(rng.permutation(10**6)[:len(vectors)].astype(np.int64), vectors)
    queries = vectors[:50] + 0.1 * rng.standard_normal((50, 32)).astype(np.float32)
    expected = store.search(queries, 9), store.search(queries[:1], 9)
    assert use_torch_scans()
    try:
        got = store.search(queries, 9), store.search(queries[:1], 9)
    finally:
        use_torch_scans(False)
    for (scores, ids), (want_scores, want_ids) in zip(got, expected):
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_array_equal(scores, want_scores)
