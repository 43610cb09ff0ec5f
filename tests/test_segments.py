"""Segments: any sequence of writes answers like an exact oracle, kills at every step of a write, a delete and a
compaction leave a readable index, precomputed embeddings, and indexes of the earlier formats."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from semsearch.api import delete_documents, index_corpus
from semsearch.cli import main
from semsearch.corpus import Record
from semsearch.index import Index, IndexWriter, compact
from semsearch.index.files import HOUSEKEEPING, MANIFEST
from semsearch.index.manifest import Manifest
from semsearch.index.maintenance import check
from semsearch.index.segments import merge_top_k
from semsearch.vectors import VectorStore

from .conftest import FakeEncoder

ROOT = Path(__file__).resolve().parents[1]


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# ---------------------------------------------------------------- a state machine against a dict + numpy oracle
TEXTS = [f"text {i}" for i in range(12)]  # few texts, many ids: equal vectors, so ties are common
QUERIES = TEXTS[:3] + ["a query", "another query"]


class SegmentMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp()) / "idx"
        self.encoder = FakeEncoder(dimension=8)
        self.docs: dict[str, tuple[str, int]] = {}  # id -> (text, write sequence: the row-id order)
        self.sequence = 0
        self.built = False

    def teardown(self) -> None:
        shutil.rmtree(self.folder.parent, ignore_errors=True)

    @rule(ids=st.lists(st.integers(0, 25), min_size=1, max_size=6), texts=st.lists(st.integers(0, 11), min_size=6,
                                                                                      max_size=6))
    def add(self, ids, texts):
        records = [Record(TEXTS[t], f"d{i}", n + 1) for n, (i, t) in enumerate(zip(ids, texts))]
        with IndexWriter(self.folder, self.encoder) as writer:
            writer.add(records)
        latest = {r.id: r for r in records}
        for record in records:  # the writer takes each id's last record, in first-seen order
            if record is not latest[record.id]:
                continue
        for doc_id in dict.fromkeys(r.id for r in records):
            text = latest[doc_id].text
            if doc_id in self.docs and self.docs[doc_id][0] == text:
                continue
            self.sequence += 1
            self.docs[doc_id] = (text, self.sequence)
        self.built = True

    @precondition(lambda self: self.built)
    @rule(ids=st.lists(st.integers(0, 25), min_size=1, max_size=4))
    def delete(self, ids):
        with IndexWriter(self.folder, create=False) as writer:
            writer.delete([f"d{i}" for i in ids])
        for i in ids:
            self.docs.pop(f"d{i}", None)

    @precondition(lambda self: self.built)
    @rule()
    def compact(self):
        compact(self.folder)

    @precondition(lambda self: self.built)
    @invariant()
    def answers_equal_the_oracle(self):
        with Index.open(self.folder) as index:
            index.use_encoder(self.encoder)
            assert len(index) == len(self.docs)
            k = 7
            results = index.search(QUERIES, k=k)
            ids = list(self.docs)
            for query, hits in zip(QUERIES, results):
                if not ids:
                    assert hits == []
                    continue
                vectors = self.encoder.encode([self.docs[i][0] for i in ids]).astype(np.float64)
                scores = vectors @ self.encoder.encode(query).astype(np.float64)
                order = sorted(range(len(ids)), key=lambda j: (-round(scores[j], 5), self.docs[ids[j]][1]))[:k]
                assert [h.id for h in hits] == [ids[j] for j in order]
                np.testing.assert_allclose([h.score for h in hits], scores[order], atol=1e-5)
        assert check(self.folder).ok


TestSegmentMachine = SegmentMachine.TestCase
TestSegmentMachine.settings = settings(max_examples=10, stateful_step_count=8, deadline=None,
                                       suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------- ties: segments merge like one flat index
def test_flat_segments_merge_like_one_flat_index_ties_included(tmp_path, index_home, fake_encoder):
    rng = np.random.default_rng(3)
    texts = [f"t{int(x)}" for x in rng.integers(0, 30, size=300)]  # ~10 copies of each text: many exact ties
    for part in range(6):  # six writes: six segments
        records = [{"id": f"d{part}-{i}", "text": texts[part * 50 + i]} for i in range(50)]
        index_corpus(write_jsonl(tmp_path / f"p{part}.jsonl", records), "t", encoder=fake_encoder)
    with Index.open("t") as index:
        index.use_encoder(fake_encoder)
        assert len(index.manifest.segments) == 6
        rowids, vectors = index.stored_vectors()
        single = VectorStore.create(fake_encoder.dimension, "flat")
        single.add(rowids, vectors)
        queries = fake_encoder.encode([f"t{i}" for i in range(30)] + ["q1", "q2"])
        everything = single.search(queries, len(rowids))  # every vector: the order below is the whole rule
        for k in (1, 5, 17, 40):
            expected_scores, expected_ids = merge_top_k(*everything, k)  # score, then row id
            if k >= 5:  # FAISS alone lists (and cuts) ties in an order of its own
                assert not np.array_equal(single.index.search(queries, k)[1], expected_ids)
            scores, ids = index.segments.search(queries, k)
            np.testing.assert_array_equal(ids, expected_ids)
            np.testing.assert_array_equal(scores, expected_scores)


# ---------------------------------------------------------------- kills at every step
KILL = """
import os, signal, sys
sys.path.insert(0, {root!r})
from tests.conftest import FakeEncoder
import semsearch.index.writer as writer_module, semsearch.index.files as files, semsearch.index.manifest as manifest
from semsearch.index.docs import DocStore
from semsearch.vectors import VectorStore
from semsearch.corpus import Record
encoder = FakeEncoder(dimension=16)
calls = {{"n": 0}}
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
def after(original, nth=1):
    def wrapped(*args, **kwargs):
        result = original(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] >= nth:
            die()
        return result
    return wrapped
def half_then_die(self, path):
    with open(path, "wb") as fh:
        fh.write(b"partial" * 1000)
    die()
point = {point!r}
if point == "segment":
    VectorStore.save = half_then_die
elif point == "sqlite-commit":
    DocStore.commit = after(DocStore.commit)
elif point == "manifest":
    manifest.Manifest.save = after(manifest.Manifest.save)
elif point == "cleanup":
    writer_module.clear_pending = after(writer_module.clear_pending, 2)
elif point == "purge":
    DocStore.purge = after(DocStore.purge)
op = {op!r}
if op == "write":
    with writer_module.IndexWriter({folder!r}, encoder) as w:
        w.add([Record(f"new text {{i}}", f"n{{i}}", i + 1) for i in range(40)]
              + [Record("changed text", "d3", 41)])
elif op == "delete":
    with writer_module.IndexWriter({folder!r}, create=False) as w:
        w.delete(["d1", "d2"])
else:
    writer_module.compact({folder!r})
print("finished")
"""


def _state(folder: Path, encoder) -> dict[str, str]:
    with Index.open(folder) as index:
        index.use_encoder(encoder)
        rowids, _ = index.stored_vectors()
        return {d.id: d.text for d in index.fetch_rowids(rowids.tolist()).values()}


@pytest.mark.parametrize("op, point", [
    ("write", "segment"), ("write", "sqlite-commit"), ("write", "manifest"), ("write", "cleanup"),
    ("delete", "sqlite-commit"), ("delete", "manifest"),
    ("compact", "segment"), ("compact", "purge"), ("compact", "sqlite-commit"), ("compact", "manifest"),
    ("compact", "cleanup"),
])
def test_sigkill_at_each_step_leaves_the_previous_or_the_next_state(op, point, tmp_path, fake_encoder):
    folder = tmp_path / "idx"
    encoder = FakeEncoder(dimension=16)
    index_corpus(write_jsonl(tmp_path / "a.jsonl", [{"id": f"d{i}", "text": f"text {i}"} for i in range(60)]),
                 folder, encoder=encoder)
    index_corpus(write_jsonl(tmp_path / "b.jsonl", [{"id": f"e{i}", "text": f"more {i}"} for i in range(5)]),
                 folder, encoder=encoder)
    delete_documents(folder, ids=["d10"])
    before = _state(folder, encoder)
    script = KILL.format(root=str(ROOT), point=point, op=op, folder=str(folder))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == -9, done.stdout + done.stderr  # it was killed, not finished
    after = _state(folder, encoder)
    if op == "write":
        expected_after = {**before, **{f"n{i}": f"new text {i}" for i in range(40)}, "d3": "changed text"}
    elif op == "delete":
        expected_after = {k: v for k, v in before.items() if k not in ("d1", "d2")}
    else:
        expected_after = before
    assert after in (before, expected_after)
    assert check(folder).ok
    # the next writer cleans up: only the manifest's files and the housekeeping ones remain
    index_corpus(write_jsonl(tmp_path / "c.jsonl", [{"id": "z", "text": "last"}]), folder, encoder=encoder)
    manifest = Manifest.load(folder)
    assert {p.name for p in folder.iterdir()} <= manifest.files() | HOUSEKEEPING | {MANIFEST}
    assert _state(folder, encoder) == {**after, "z": "last"}
    assert check(folder).ok


# ---------------------------------------------------------------- precomputed embeddings
def _embeddings_case(tmp_path, tiny_encoder, n=60):
    records = [{"id": f"d{i}", "text": f"sentence number {i} about {['cats', 'dogs', 'rain'][i % 3]}"}
               for i in range(n)]
    corpus = write_jsonl(tmp_path / "c.jsonl", records)
    vectors = tiny_encoder.encode([r["text"] for r in records])
    return records, corpus, vectors


def test_npy_and_parquet_embeddings_answer_like_encoding(tmp_path, index_home, tiny_encoder, tiny_model_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    records, corpus, vectors = _embeddings_case(tmp_path, tiny_encoder)
    np.save(tmp_path / "v.npy", vectors * 3.0)  # not normalised: the reader normalises
    order = np.random.default_rng(0).permutation(len(records))  # Parquet rows in another order: matched by id
    pq.write_table(pa.table({"id": [records[i]["id"] for i in order],
                             "embedding": [vectors[i].tolist() for i in order]}), tmp_path / "v.parquet")
    runner = CliRunner()
    encoded = runner.invoke(main, ["index", str(corpus), "--index", "enc", "-q", "--model", str(tiny_model_dir)])
    assert encoded.exit_code == 0, encoded.output
    for name, file in (("npy", "v.npy"), ("pq", "v.parquet")):
        result = runner.invoke(main, ["index", str(corpus), "--index", name, "-q", "--model", str(tiny_model_dir),
                                      "--embeddings", str(tmp_path / file)])
        assert result.exit_code == 0, result.output
    queries = [f"sentence number {i}" for i in range(0, 60, 7)] + ["cats", "rain"]
    with Index.open("enc") as a, Index.open("npy") as b, Index.open("pq") as c:
        assert a.spec == b.spec == c.spec
        for index in (a, b, c):
            index.use_encoder(tiny_encoder)
        expected = [[h.id for h in hits] for hits in a.search(queries, k=10)]
        assert [[h.id for h in hits] for hits in b.search(queries, k=10)] == expected
        assert [[h.id for h in hits] for hits in c.search(queries, k=10)] == expected
    # Python: an array
    index_corpus(corpus, "arr", embeddings=vectors, model=str(tiny_model_dir))
    with Index.open("arr") as d:
        d.use_encoder(tiny_encoder)
        assert [[h.id for h in hits] for hits in d.search(queries, k=10)] == expected


def test_bad_embedding_files_are_one_line_and_write_nothing(tmp_path, index_home, tiny_encoder, tiny_model_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    records, corpus, vectors = _embeddings_case(tmp_path, tiny_encoder)
    runner = CliRunner()
    assert runner.invoke(main, ["index", str(corpus), "--index", "t", "-q", "--model", str(tiny_model_dir)]
                         ).exit_code == 0
    before = {p.name: p.read_bytes() for p in (index_home / "t").iterdir()}
    nan = vectors.copy()
    nan[7, 3] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.save(tmp_path / "dim.npy", vectors[:, :16])
    np.save(tmp_path / "rows.npy", vectors[:59])
    zero = vectors.copy()
    zero[4] = 0
    np.save(tmp_path / "zero.npy", zero)
    pq.write_table(pa.table({"id": [r["id"] for r in records], "vec": [v.tolist() for v in vectors]}),
                   tmp_path / "col.parquet")
    cases = {
        "nan.npy": "row 8: NaN or infinity in the embedding",
        "dim.npy": "vectors are 16-d, the index's model gives 32-d",
        "rows.npy": "59 vectors for 60 records (one row per record)",
        "zero.npy": "row 5: a zero vector (it has no direction)",
        "col.parquet": "no 'embedding' column",
    }
    for file, message in cases.items():
        for index in ("t", "fresh"):
            result = runner.invoke(main, ["index", str(corpus), "--index", index, "-q", "--model", str(tiny_model_dir),
                                          "--embeddings", str(tmp_path / file)])
            assert result.exit_code == 1, (file, result.output)
            assert result.stderr.startswith("Error: ") and message in result.stderr, (file, result.stderr)
            assert result.stderr.count("\n") == 1 and (file in result.stderr or "<embeddings>" in result.stderr)
    assert {p.name: p.read_bytes() for p in (index_home / "t").iterdir()} == before
    assert not (index_home / "fresh" / MANIFEST).exists()


# ---------------------------------------------------------------- indexes of formats 1 and 2
def _legacy_index(folder: Path, encoder, texts: list[str]) -> None:
    """An index as semsearch 0.1 wrote it: docs.1.db (no tombstone columns), vectors.1.faiss, a format-1 manifest."""
    from semsearch.index.files import sha256

    folder.mkdir(parents=True)
    db = sqlite3.connect(folder / "docs.1.db")
    db.execute("create table docs (rowid integer primary key, id text not null, text text not null, meta text, "
               "hash text not null, source text, line integer)")
    from semsearch.corpus import content_hash

    db.executemany("insert into docs values (?, ?, ?, ?, ?, ?, ?)",
                   [(i + 1, f"d{i}", t, "{}", content_hash(t), "old.jsonl", i + 1) for i, t in enumerate(texts)])
    db.commit()
    db.close()
    store = VectorStore.create(encoder.dimension, "flat")
    store.add(np.arange(1, len(texts) + 1), encoder.encode(texts))
    store.save(folder / "vectors.1.faiss")
    manifest = {"format": 1, "generation": 1, "encoder": encoder.spec.to_dict(),
                "faiss": {**store.manifest(), "file": "vectors.1.faiss", "sha256": sha256(folder / "vectors.1.faiss")},
                "sqlite": {"file": "docs.1.db", "sha256": sha256(folder / "docs.1.db")},
                "counts": {"documents": len(texts)}, "created": "2026-01-01T00:00:00+00:00",
                "updated": "2026-01-01T00:00:00+00:00", "versions": {}}
    (folder / MANIFEST).write_text(json.dumps(manifest))


def test_an_earlier_format_is_read_as_it_is_and_migrated_by_the_next_write(tmp_path, fake_encoder):
    folder = tmp_path / "old"
    _legacy_index(folder, fake_encoder, [f"old text {i}" for i in range(30)])
    with Index.open(folder) as index:
        index.use_encoder(fake_encoder)
        assert len(index) == 30 and index.search("old text 4", k=1)[0][0].id == "d4"
    assert check(folder).ok
    index_corpus(write_jsonl(tmp_path / "n.jsonl", [{"id": "d4", "text": "new text"}, {"id": "x", "text": "x"}]),
                 folder, encoder=fake_encoder)
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["format"] == 3 and manifest["sqlite"]["file"] == "docs.db"
    assert [s["file"] for s in manifest["segments"]] == ["vectors.1.faiss", "seg.2.0.faiss"]
    assert not (folder / "docs.1.db").exists()
    with Index.open(folder) as index:
        index.use_encoder(fake_encoder)
        assert len(index) == 31
        assert index.search("new text", k=1)[0][0].id == "d4"
        assert index.get(["d9"])["d9"].text == "old text 9"
        assert index.lexical("old text 9", k=1)[0][0] == 10  # the lexical index was built from the old rows
    assert check(folder).ok
