"""The Ray engine on a local two-CPU cluster started here: same index, same pairs, a dying worker.

Ray is heavy to start (seconds), so these tests are few and share one cluster; they run in CI
(``-m "not ray"`` deselects them). A tiny random BERT keeps the encoding quick.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from semsearch.api import index_corpus
from semsearch.dedupe import index_vectors
from semsearch.distributed import CRASH_FILE_ENV, index_corpus_ray
from semsearch.errors import SemsearchError
from semsearch.index import Index

from .conftest import json_rows, run_cli

WORDS = ("cat dog flute man plays markets fell sharply monday river garden sun warm quiet loud music stock "
         "price north wind rain").split()


def write_corpus(path, n: int = 200) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        text = " ".join(rng.choice(WORDS, size=int(rng.integers(3, 12))))
        if i % 25 == 7:
            text = "A man is playing a flute."  # identical texts: pairs with score 1
        rows.append({"id": f"d{i}", "text": text, "n": i, "lang": "en" if i % 3 else "de"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local Ray cluster (2 CPUs) for the module; its workers see the crash-file variable."""
    ray = pytest.importorskip("ray", reason="the ray extra (pip install 'semsearch[ray]') is part of the test extra")
    crash = tmp_path_factory.mktemp("ray") / "crash"
    os.environ[CRASH_FILE_ENV] = str(crash)  # before ray.init: the workers inherit it
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield crash
    finally:
        ray.shutdown()
        os.environ.pop(CRASH_FILE_ENV, None)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    rows = write_corpus(folder / "corpus.jsonl")
    (folder / "parts").mkdir()  # the same records as a folder of Parquet files, read in name order
    pq.write_table(pa.Table.from_pylist(rows[:120]), folder / "parts" / "part-0.parquet")
    pq.write_table(pa.Table.from_pylist(rows[120:]), folder / "parts" / "part-1.parquet")
    return folder


@pytest.fixture
def local_index(data, tiny_model_dir, index_home):
    index_corpus(data / "corpus.jsonl", "local", model=str(tiny_model_dir))
    return "local"


def assert_same_index(got: str, want: str, queries: list[str]) -> None:
    got_docs, got_vectors, _, got_owners = index_vectors(got)
    want_docs, want_vectors, _, want_owners = index_vectors(want)
    assert got_owners is None and want_owners is None  # short texts: one vector per document
    assert [(d.id, d.text) for d in got_docs] == [(d.id, d.text) for d in want_docs]
    assert np.abs(got_vectors - want_vectors).max() <= 1e-5
    with Index.open(got) as a, Index.open(want) as b:
        for hits_a, hits_b in zip(a.search(queries, k=10), b.search(queries, k=10)):
            assert [h.id for h in hits_a] == [h.id for h in hits_b]
            assert [h.meta for h in hits_a] == [h.meta for h in hits_b]
            assert np.allclose([h.score for h in hits_a], [h.score for h in hits_b], atol=1e-5)


# ------------------------------------------------------------------------------------------------ no ray
def test_engine_ray_without_ray_says_how_to_get_it(data, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    result = run_cli("dedupe", data / "corpus.jsonl", "--engine", "ray", code=1)
    assert result.output == "Error: --engine ray needs Ray, which is not installed: pip install 'semsearch[ray]'\n"


# ------------------------------------------------------------------------------------------------ index
@pytest.mark.ray
def test_index_on_ray_equals_the_local_index(cluster, data, tiny_model_dir, local_index):
    queries = [json.loads(line)["text"] for line in (data / "corpus.jsonl").read_text().splitlines()]
    report = index_corpus_ray(data / "corpus.jsonl", "on-ray", model=str(tiny_model_dir), workers=2,
                              rows_per_batch=16, rows_per_segment=64)
    assert (report.read, report.added) == (200, 200)
    assert_same_index("on-ray", local_index, queries)
    # a folder of Parquet files: the same records, hence the same index
    index_corpus_ray(data / "parts", "from-parquet", model=str(tiny_model_dir), workers=2, rows_per_batch=64)
    assert_same_index("from-parquet", local_index, queries[:20])


@pytest.mark.ray
def test_long_documents_are_cut_into_the_same_passages_on_ray(cluster, tmp_path, tiny_model_dir, index_home):
    rng = np.random.default_rng(1)
    rows = [{"id": f"p{i}", "text": " ".join(rng.choice(WORDS, size=300 if i % 5 == 0 else 8))} for i in range(60)]
    corpus = tmp_path / "long.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    local = index_corpus(corpus, "long-local", model=str(tiny_model_dir))
    on_ray = index_corpus_ray(corpus, "long-ray", model=str(tiny_model_dir), workers=2, rows_per_batch=16,
                              rows_per_segment=32)
    assert (on_ray.chunked, on_ray.passages) == (local.chunked, local.passages) and local.chunked == 12
    got_docs, got_vectors, _, _ = index_vectors("long-ray", passages=True)
    want_docs, want_vectors, _, _ = index_vectors("long-local", passages=True)
    assert [(d.id, d.text) for d in got_docs] == [(d.id, d.text) for d in want_docs]  # the same passages
    assert len(got_docs) == local.passages and np.abs(got_vectors - want_vectors).max() <= 1e-5
    queries = [d.text for d in want_docs[::3]]
    with Index.open("long-ray") as a, Index.open("long-local") as b:
        for hits_a, hits_b in zip(a.search(queries, k=10, passages=True), b.search(queries, k=10, passages=True)):
            assert [(h.id, h.passage) for h in hits_a] == [(h.id, h.passage) for h in hits_b]
    # --no-chunk: each text whole, truncated by the model and counted as locally
    outputs = [run_cli("index", corpus, "--index", name, "-m", tiny_model_dir, "--no-chunk", "-q", *engine).stderr
               for name, engine in (("whole-local", []), ("whole-ray", ["--engine", "ray", "--workers", "2"]))]
    assert [o.split(" in ")[0].split(": ", 1)[1] for o in outputs] == [
        "60 read, 60 added, 0 updated, 0 unchanged, 12 truncated to the model's max length"] * 2
    assert_same_index("whole-ray", "whole-local", queries[:10])


@pytest.mark.ray
def test_a_killed_worker_is_retried_and_the_index_is_the_same(cluster, data, tiny_model_dir, local_index):
    cluster.write_text("once")  # the first actor to take a batch dies with it
    index_corpus_ray(data / "corpus.jsonl", "survived", model=str(tiny_model_dir), workers=2, rows_per_batch=16)
    assert not cluster.exists()  # the crash did happen
    assert_same_index("survived", local_index, [])


@pytest.mark.ray
def test_workers_that_keep_dying_fail_the_run_and_leave_the_index(cluster, data, tiny_model_dir, index_home):
    first = data / "first.jsonl"
    first.write_text("".join((data / "corpus.jsonl").read_text().splitlines(keepends=True)[:50]))
    index_corpus(first, "kept", model=str(tiny_model_dir))
    before = {p.name: p.read_bytes() for p in (index_home / "kept").iterdir() if p.is_file() and p.name != ".lock"}
    cluster.write_text("always")
    try:
        with pytest.raises(SemsearchError, match="the Ray run failed, nothing was written"):
            index_corpus_ray(data / "corpus.jsonl", "kept", workers=2, rows_per_batch=16)
    finally:
        cluster.unlink(missing_ok=True)
    after = {p.name: p.read_bytes() for p in (index_home / "kept").iterdir() if p.is_file() and p.name != ".lock"}
    assert after == before
    with Index.open("kept") as index:
        assert len(index) == 50


@pytest.mark.ray
def test_ivf_on_ray_is_filled_by_tasks_and_merged_on_disk(cluster, data, tiny_model_dir, index_home):
    queries = [json.loads(line)["text"] for line in (data / "corpus.jsonl").read_text().splitlines()]
    index_corpus(data / "corpus.jsonl", "local-ivf", model=str(tiny_model_dir), index_type="ivf")
    # 200 vectors train the index (all of them: the same quantizer as the local write), 4 tasks fill a part each
    index_corpus_ray(data / "corpus.jsonl", "ivf-on-ray", model=str(tiny_model_dir), index_type="ivf", workers=2,
                     rows_per_batch=16, rows_per_segment=64)
    assert_same_index("ivf-on-ray", "local-ivf", queries)
    manifest = json.loads((index_home / "ivf-on-ray" / "manifest.json").read_text())
    assert [(s["lists"], s["vectors"]) for s in manifest["segments"]] == [("seg.1.0.ivfdata", 200)]
    assert not list((index_home / "ivf-on-ray").glob("part.*"))
    # a task that dies while it fills a part is run again
    cluster.write_text("add once")
    index_corpus_ray(data / "corpus.jsonl", "ivf-retried", index_type="ivf", model=str(tiny_model_dir), workers=2,
                     rows_per_batch=64, rows_per_segment=64)
    assert not cluster.exists()
    assert_same_index("ivf-retried", "local-ivf", queries[:20])


@pytest.mark.ray
def test_ivf_trained_before_the_corpus_ends_fills_parts_while_it_reads(cluster, data, tiny_model_dir, local_index,
                                                                      index_home, monkeypatch):
    import semsearch.index.ondisk as ondisk

    monkeypatch.setattr(ondisk, "training_points_for", lambda kind, dimension, count: 64)  # a 200-record corpus
    queries = [json.loads(line)["text"] for line in (data / "corpus.jsonl").read_text().splitlines()]
    index_corpus_ray(data / "corpus.jsonl", "ivf-early", model=str(tiny_model_dir), index_type="ivf", workers=2,
                     rows_per_batch=16, rows_per_segment=32)
    manifest = json.loads((index_home / "ivf-early" / "manifest.json").read_text())
    assert manifest["faiss"]["build"] == {"trained_on": 64, "nlist": 5}  # sized for the 200 records to come
    assert [(s["lists"], s["vectors"]) for s in manifest["segments"]] == [("seg.1.0.ivfdata", 200)]
    assert manifest["faiss"]["search"]["nprobe"] == 5  # every list searched: the exact top-10 of the flat index
    assert_same_index("ivf-early", local_index, queries)


@pytest.mark.ray
def test_part_tasks_that_keep_dying_fail_the_run_and_write_nothing(cluster, data, tiny_model_dir, index_home):
    cluster.write_text("add always")
    try:
        result = run_cli("index", data / "corpus.jsonl", "--index", "never", "--engine", "ray", "--index-type", "ivf",
                         "-m", tiny_model_dir, "--workers", "2", code=1)
    finally:
        cluster.unlink(missing_ok=True)
    assert result.stderr.startswith("Error: the Ray run failed, nothing was written: ")
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.output
    assert sorted(p.name for p in (index_home / "never").iterdir()) == [".lock", ".pending"]
    assert (index_home / "never" / ".pending").read_text() == ""


# ------------------------------------------------------------------------------------------------ dedupe
@pytest.mark.ray
def test_dedupe_on_ray_returns_the_local_exact_pairs(cluster, data, tiny_model_dir, local_index):
    # mining the same stored vectors: the output is identical, byte for byte, exact and partitioned
    for mode in ([], ["--partitioned", "--partitions", "3"]):
        local = run_cli("dedupe", "--index", local_index, "-t", "0.9", "--json", *mode)
        on_ray = run_cli("dedupe", "--index", local_index, "-t", "0.9", "--json", "--engine", "ray", *mode)
        assert on_ray.stdout == local.stdout and len(json_rows(local.stdout)) > 50
    # a corpus embedded on the actors: the same pairs (vectors agree to ~1e-7, so scores to 1e-6)
    _, vectors, _, _ = index_vectors(local_index)
    scores = np.sort((vectors @ vectors.T)[np.triu_indices(len(vectors), 1)])
    gaps = np.diff(scores)
    top = np.flatnonzero(scores[:-1] > 0.9)
    threshold = float((scores[top[np.argmax(gaps[top])]] + scores[top[np.argmax(gaps[top])] + 1]) / 2)
    local = json_rows(run_cli("dedupe", data / "corpus.jsonl", "-m", tiny_model_dir, "-t", threshold, "--json").stdout)
    on_ray = json_rows(run_cli("dedupe", data / "corpus.jsonl", "-m", tiny_model_dir, "-t", threshold, "--json",
                           "--engine", "ray", "--workers", "2").stdout)
    assert [(r["id_a"], r["id_b"], r["line_a"]) for r in on_ray] == [(r["id_a"], r["id_b"], r["line_a"]) for r in local]
    assert np.allclose([r["score"] for r in on_ray], [r["score"] for r in local], atol=1e-6)
    assert sum(r["score"] == 1.0 for r in on_ray) == 28  # 8 identical texts: 8·7/2 pairs of exactly 1
