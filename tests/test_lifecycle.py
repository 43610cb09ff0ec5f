"""Index lifecycle: updates, deletes, filters, check/repair, crashes, concurrent writers, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semsearch.api import delete_documents, index_corpus
from semsearch.cli import main
from semsearch.encoder import Encoder
from semsearch.errors import IndexFormatError, IndexNotFoundError, ModelError
from semsearch.filters import FilterError, parse_condition
from semsearch.index import Index, IndexWriter
from semsearch.index.files import HOUSEKEEPING
from semsearch.index.maintenance import check, repair
from semsearch.index.manifest import Manifest

from .conftest import FakeEncoder


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def open_with(name, encoder):
    index = Index.open(name)
    index.use_encoder(encoder)
    return index


# ---------------------------------------------------------------- deletes, filters, check


def test_delete_by_id_and_filter_reclaims_space(tmp_path, index_home, fake_encoder):
    docs = [{"id": f"d{i}", "text": f"document number {i} " + "padding " * 50, "lang": "en" if i % 2 else "de"}
            for i in range(400)]
    index_corpus(write_jsonl(tmp_path / "c.jsonl", docs), "t", encoder=fake_encoder)
    size_before = (index_home / "t" / "docs.db").stat().st_size
    assert delete_documents("t", ids=["d1", "d3", "missing"]) == 2
    assert delete_documents("t", filters=["lang=de"]) == 200
    with open_with("t", fake_encoder) as index:
        assert len(index) == 198 and index.manifest.documents == 198
        hits = index.search("document number 2 " + "padding " * 50, k=400)[0]
        assert len(hits) == 198 and not {"d1", "d3"} & {h.id for h in hits}
        assert all(h.meta["lang"] == "en" for h in hits)
    # 202 of 400 deleted: past the 20 % bound, so compaction purged the rows and the vectors
    manifest = json.loads((index_home / "t" / "manifest.json").read_text())
    assert manifest["faiss"]["dead"] == 0 and [s["vectors"] for s in manifest["segments"]] == [198]
    assert (index_home / "t" / "docs.db").stat().st_size < 0.7 * size_before
    assert check("t").ok
    with pytest.raises(IndexNotFoundError):
        delete_documents("nope", ids=["x"])
    assert not (index_home / "nope").exists()


def test_filtered_query_returns_k_exact_results(tmp_path, index_home, fake_encoder):
    """Must show 5: a filter matching 1% of 10,000 documents still gives k = 10 correct results."""
    docs = [{"id": str(i), "text": f"text {i}", "shard": i % 100, "year": 2000 + i % 30} for i in range(10_000)]
    index_corpus(write_jsonl(tmp_path / "c.jsonl", docs), "t", encoder=fake_encoder)
    vectors = fake_encoder.encode([d["text"] for d in docs])
    queries = [f"query {q}" for q in range(20)]
    with open_with("t", fake_encoder) as index:
        results = index.search(queries, k=10, filters=["shard=7"])
        for query, hits in zip(queries, results):
            allowed = np.array([i for i, d in enumerate(docs) if d["shard"] == 7])
            scores = vectors[allowed] @ fake_encoder.encode(query)
            expected = allowed[np.argsort(-scores, kind="stable")[:10]]
            assert [h.id for h in hits] == [str(i) for i in expected]
            assert all(h.meta["shard"] == 7 for h in hits)
        two = index.search("query", k=50, filters=["shard=7", "year>=2020"])[0]
        expected_count = sum(d["shard"] == 7 and d["year"] >= 2020 for d in docs)
        assert len(two) == expected_count == 33 and all(h.meta["year"] >= 2020 and h.meta["shard"] == 7 for h in two)
        assert index.search("query", k=5, filters=["shard=1000"]) == [[]]
        with pytest.raises(FilterError, match="'shard' holds numbers, but \"7 or 1=1\" is text"):
            index.search("query", k=5, filters=["shard=7 or 1=1"])  # a string value, never SQL
        assert index.search("query", k=5, filters=["id=7 or 1=1"]) == [[]]  # ids are text: no such document


@pytest.mark.parametrize("text, message", [
    ("lang", "cannot read filter 'lang': expected KEY=VALUE"),
    ("x); drop table docs; --=1", "cannot read filter"),
    ("tags=[1,2]", "compare with a string, number, true, false or null"),
])
def test_bad_filters(text, message):
    with pytest.raises(FilterError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        parse_condition(text)


def test_filter_values_are_typed():
    assert parse_condition("year>=2020").value == 2020
    assert parse_condition("flag=true").value is True
    assert parse_condition('name="O\'Brien"').value == "O'Brien"
    assert parse_condition("name=plain words").value == "plain words"


def test_check_finds_damage_and_repair_rebuilds(tmp_path, index_home, fake_encoder, monkeypatch):
    docs = [{"id": f"d{i}", "text": f"words {i}"} for i in range(50)]
    index_corpus(write_jsonl(tmp_path / "c.jsonl", docs), "t", encoder=fake_encoder)
    assert check("t").ok
    faiss_file = index_home / "t" / "seg.1.0.faiss"
    faiss_file.write_bytes(faiss_file.read_bytes()[:1000])  # truncated
    report = check("t")
    assert not report.ok
    assert report.problems[0] == "seg.1.0.faiss: checksum differs from the manifest's"
    assert any("unreadable FAISS file" in p for p in report.problems)
    monkeypatch.setattr("semsearch.encoder.Encoder.from_spec", classmethod(lambda cls, spec, device=None: fake_encoder))
    repaired = repair("t")
    assert repaired.ok and repaired.vectors == 50
    with open_with("t", fake_encoder) as index:
        assert index.search("words 7", k=1)[0][0].id == "d7"


# ---------------------------------------------------------------- property: incremental == fresh

operation = st.tuples(st.sampled_from(["add", "delete"]), st.lists(st.integers(0, 30), min_size=1, max_size=8),
                      st.integers(0, 2))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rounds=st.lists(operation, min_size=1, max_size=6))
def test_incremental_rounds_equal_a_fresh_index(tmp_path_factory, rounds):
    """Must show 4: any sequence of add / update / delete rounds searches like a fresh index of the result."""
    encoder = FakeEncoder()
    home = tmp_path_factory.mktemp("prop")
    final: dict[str, str] = {}
    for number, (kind, keys, version) in enumerate(rounds):
        if kind == "add":
            batch = [{"id": f"k{k}", "text": f"text {k} version {version}"} for k in keys]
            index_corpus(write_jsonl(home / f"r{number}.jsonl", batch), home / "inc", encoder=encoder)
            final.update({r["id"]: r["text"] for r in batch})
        elif (home / "inc" / "manifest.json").exists():
            with IndexWriter(home / "inc", encoder, create=False) as writer:
                writer.delete([f"k{k}" for k in keys])
            for k in keys:
                final.pop(f"k{k}", None)
    if not final or not (home / "inc" / "manifest.json").exists():
        return
    index_corpus(write_jsonl(home / "final.jsonl", [{"id": i, "text": t} for i, t in final.items()]),
                 home / "fresh", encoder=encoder)
    queries = ["text 3 version 1", "text 17 version 0", "anything"]
    with open_with(home / "inc", encoder) as inc, open_with(home / "fresh", encoder) as fresh:
        assert len(inc) == len(fresh) == len(final)
        for a, b in zip(inc.search(queries, k=40), fresh.search(queries, k=40)):
            assert [(h.id, h.text) for h in a] == [(h.id, h.text) for h in b]
            np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-6)
    assert check(home / "inc").ok


def test_unchanged_texts_are_not_embedded_again(tmp_path, index_home, fake_encoder):
    docs = [{"id": f"d{i}", "text": f"t {i}"} for i in range(30)]
    index_corpus(write_jsonl(tmp_path / "a.jsonl", docs), "t", encoder=fake_encoder)
    fake_encoder.calls = 0
    docs[4]["text"] = "changed"
    index_corpus(write_jsonl(tmp_path / "b.jsonl", docs), "t", encoder=fake_encoder)
    assert fake_encoder.calls == 1


# ---------------------------------------------------------------- bad input through the CLI


@pytest.fixture
def cli(index_home, tiny_model_dir):
    runner = CliRunner()

    def run(*args):
        return runner.invoke(main, [str(a) for a in args])

    return run


def _index(cli, path, *extra):
    return cli("index", path, "--index", "t", "-q", *extra)


@pytest.mark.parametrize("content, message", [
    (b'{"text": "ok"}\n{"text": }\n', "bad.jsonl:2: invalid JSON (Expecting value at column 10)"),
    (b'{"text": "ok"}\n{"body": "x"}\n', "bad.jsonl:2: no 'text' field (fields: body; use --text-field to name another)"),
    (b'{"text": ""}\n', "bad.jsonl:1: field 'text' is empty"),
    (b'{"text": ["a"]}\n', "bad.jsonl:1: field 'text' is list, not a string"),
    (b'{"text": "ok"}\n{"text": "\xff"}\n', "bad.jsonl:2: invalid UTF-8 at byte 10 of the line"),
    (b"", "bad.jsonl: no records: the file is empty"),
])
def test_bad_input_one_line_and_nothing_lost(cli, tmp_path, tiny_model_dir, index_home, content, message):
    good = write_jsonl(tmp_path / "good.jsonl", [{"id": "keep", "text": "already indexed"}])
    assert _index(cli, good, "--model", tiny_model_dir).exit_code == 0
    before = sorted((p.name, p.read_bytes()) for p in (index_home / "t").iterdir())
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(content)
    result = _index(cli, bad)
    assert result.exit_code == 1
    assert result.stderr == f"Error: {tmp_path}/{message}\n"
    assert sorted((p.name, p.read_bytes()) for p in (index_home / "t").iterdir()) == before


def test_missing_path_directory_and_corrupt_index(cli, tmp_path, tiny_model_dir, index_home):
    assert cli("index", tmp_path / "nope.jsonl", "--index", "t").stderr == f"Error: {tmp_path}/nope.jsonl: no such file\n"
    assert cli("index", tmp_path, "--index", "t").stderr == (  # a folder is a corpus of files now (issue 14)
        f"Error: {tmp_path}: nothing to index: no file matches (*.txt, *.md, *.markdown, *.rst, *.html, *.htm)\n")
    good = write_jsonl(tmp_path / "good.jsonl", [{"id": "a", "text": "hello"}])
    assert _index(cli, good, "--model", tiny_model_dir).exit_code == 0
    (index_home / "t" / "seg.1.0.faiss").write_bytes(b"\0" * 10)
    result = cli("query", "--index", "t", "hello")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {index_home}/t/seg.1.0.faiss: unreadable FAISS file (")
    # a write adds a segment and never rewrites this one, so its damage keeps its old checksum: check still sees it
    assert _index(cli, write_jsonl(tmp_path / "more.jsonl", [{"id": "b", "text": "more"}])).exit_code == 0
    result = cli("check", "--index", "t")
    assert result.exit_code == 1 and "seg.1.0.faiss: checksum differs from the manifest's" in result.stderr
    manifest = json.loads((index_home / "t" / "manifest.json").read_text())
    manifest["format"] = 99
    (index_home / "t" / "manifest.json").write_text(json.dumps(manifest))
    assert cli("query", "--index", "t", "x").stderr == (
        f"Error: {index_home}/t/manifest.json: index format 99 is newer than this semsearch reads (4); "
        "upgrade: pip install -U semsearch\n")


def test_long_line_duplicates_and_skip_invalid(cli, tmp_path, tiny_model_dir, index_home):
    path = tmp_path / "mixed.jsonl"
    lines = [json.dumps({"id": "long", "text": "word " * 200_000}),  # a 1 MB line
             json.dumps({"id": "dup", "text": "first"}),
             "not json",
             json.dumps({"id": "dup", "text": "second"}),
             json.dumps({"title": "no text"}),
             json.dumps({"id": "fine", "text": "fine"})]
    path.write_text("\n".join(lines) + "\n")
    result = _index(cli, path, "--model", tiny_model_dir)
    assert result.exit_code == 1 and result.stderr == f"Error: {path}:3: invalid JSON (Expecting value at column 1)\n"
    result = _index(cli, path, "--skip-invalid", "--no-chunk")  # truncated, as before passages
    assert result.exit_code == 0, result.output
    summary, skipped = result.stderr.splitlines()
    assert ": 4 read, 3 added, 0 updated, 0 unchanged, 1 repeated ids (last kept), 1 truncated to the model's max" \
           " length in " in summary
    assert skipped == (f"skipped 2 invalid records; first: {path}:3: invalid JSON (Expecting value at column 1); "
                       f"{path}:5: no 'text' field (fields: title; use --text-field to name another)")
    hits = [json.loads(line) for line in cli("query", "--index", "t", "-k", "5", "--json", "x").stdout.splitlines()]
    assert sorted((h["id"], h["text"][:6]) for h in hits) == [("dup", "second"), ("fine", "fine"), ("long", "word w")]


def test_info_and_check_commands(cli, tmp_path, tiny_model_dir, index_home):
    good = write_jsonl(tmp_path / "good.jsonl", [{"id": "a", "text": "hello"}, {"id": "b", "text": "world"}])
    _index(cli, good, "--model", tiny_model_dir)
    out = cli("info", "--index", "t").stdout.splitlines()
    assert out[0] == f"index      {index_home}/t (format 3, generation 1)" and out[1] == "documents  2"
    assert json.loads(cli("info", "--index", "t", "--json").stdout)["counts"] == {"documents": 2}
    assert cli("check", "--index", "t").stdout == f"{index_home}/t: ok (2 documents, 2 vectors)\n"
    segment = index_home / "t" / "seg.1.0.faiss"
    segment.write_bytes(segment.read_bytes() + b"x")
    result = cli("check", "--index", "t")
    assert result.exit_code == 1 and "seg.1.0.faiss: checksum differs from the manifest's" in result.stderr
    result = cli("check", "--index", "t", "--repair")
    assert result.exit_code == 0 and result.stdout == f"{index_home}/t: ok (2 documents, 2 vectors)\n"
    assert cli("delete", "--index", "t", "--id", "a").stderr == f"{index_home}/t: 1 documents removed\n"
    assert cli("delete", "--index", "t").exit_code == 2


# ---------------------------------------------------------------- crashes and concurrent writers


def _semsearch(*args, env):
    return subprocess.Popen([sys.executable, "-m", "semsearch", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_sigkill_at_any_moment_leaves_a_usable_index(tmp_path, index_home, tiny_model_dir):
    """Must show 2: kill -9 during `index`, then the index opens, passes check, and a re-run completes it."""
    env = {**os.environ, "SEMSEARCH_INDEXES": str(index_home)}
    first = write_jsonl(tmp_path / "first.jsonl", [{"id": f"a{i}", "text": f"first batch {i}"} for i in range(300)])
    second = write_jsonl(tmp_path / "second.jsonl",
                         [{"id": f"b{i}", "text": f"second batch number {i} " * 8} for i in range(6000)])
    assert _semsearch("index", first, "--index", "t", "--model", tiny_model_dir, "-q", env=env).wait() == 0
    interrupted = 0
    for delay in (0.3, 1.0, 2.0, 3.5, 5.0, 7.0, 9.0):
        process = _semsearch("index", second, "--index", "t", "-q", env=env)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        interrupted += check("t").documents == 300  # killed before its commit: the previous generation
        report = check("t")
        assert report.ok, report.problems
        assert report.documents in (300, 6300)
    assert interrupted > 0  # at least one kill landed in the middle of a write
    process = _semsearch("index", second, "--index", "t", "-q", env=env)
    assert process.wait() == 0, process.stderr.read()
    report = check("t")
    assert report.ok and report.documents == 6300 and report.vectors == 6300
    named = Manifest.load(index_home / "t").files() | HOUSEKEEPING | {"manifest.json"}
    assert {p.name for p in (index_home / "t").iterdir()} <= named  # whatever the kills left was cleaned up


@pytest.mark.slow
def test_two_concurrent_writers_index_everything_once(tmp_path, index_home, tiny_model_dir):
    """Must show 3: two writers at once; the second waits for the lock; every document ends up once."""
    env = {**os.environ, "SEMSEARCH_INDEXES": str(index_home)}
    a = write_jsonl(tmp_path / "a.jsonl", [{"id": f"a{i}", "text": f"from writer a {i}"} for i in range(1500)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"id": f"b{i}", "text": f"from writer b {i}"} for i in range(1500)])
    processes = [_semsearch("index", path, "--index", "t", "--model", tiny_model_dir, "-q", env=env) for path in (a, b)]
    for process in processes:
        assert process.wait() == 0, process.stderr.read()
    report = check("t")
    assert report.ok and report.documents == 3000
    with Index.open("t") as index:
        rowids, _ = index.stored_vectors()
        ids = sorted(doc.id for doc in index.fetch_rowids(rowids.tolist()).values())
    assert ids == sorted([f"a{i}" for i in range(1500)] + [f"b{i}" for i in range(1500)])


def test_a_bf16_index_keeps_its_precision(cli, tmp_path, tiny_model_dir, index_home):
    good = write_jsonl(tmp_path / "good.jsonl", [{"id": "a", "text": "hello"}, {"id": "b", "text": "world"}])
    assert _index(cli, good, "--model", tiny_model_dir, "--precision", "bf16").exit_code == 0
    manifest = json.loads((index_home / "t" / "manifest.json").read_text())
    assert manifest["encoder"]["precision"] == "bf16"
    assert ", bf16, " in cli("info", "--index", "t").stdout
    with Index.open("t") as index:  # queries run the encoder the index was built with
        assert index.encoder().spec.precision == "bf16"
        assert index.search("hello", k=1)[0][0].id == "a"
    more = write_jsonl(tmp_path / "more.jsonl", [{"id": "c", "text": "again"}])
    result = _index(cli, more, "--precision", "fp32")
    assert result.exit_code == 1
    assert result.stderr.strip().endswith("was built with bf16 precision and keeps it; drop --precision fp32, "
                                          "or build a new index with it")
    assert _index(cli, more).exit_code == 0  # without --precision an index goes on in its own
    assert _index(cli, write_jsonl(tmp_path / "m2.jsonl", [{"id": "d", "text": "more"}]), "--model",
                  tiny_model_dir).exit_code == 0  # --model loads the model in the index's precision
    manifest = json.loads((index_home / "t" / "manifest.json").read_text())
    assert manifest["encoder"]["precision"] == "bf16" and manifest["counts"]["documents"] == 4
    assert manifest["format"] == 3  # format-1 readers (before precision existed) refuse it, not misread it
    query = cli("query", "hello", "--index", "t", "--model", tiny_model_dir, "-k", "1", "--json")
    assert query.exit_code == 0 and json.loads(query.stdout)["id"] == "a"
    with pytest.raises(ModelError, match="differs in precision: load it with precision='bf16', or drop --model"):
        IndexWriter("t", Encoder.load(tiny_model_dir, device="cpu")).__enter__()
    with pytest.raises(ModelError, match="precision 'fp32' asked for, but the encoder given runs bf16"):
        index_corpus(more, "new", encoder=Encoder.load(tiny_model_dir, device="cpu", precision="bf16"),
                     precision="fp32")
    repair("t")  # re-embeds every stored text with the index's own encoder: still bf16
    assert json.loads((index_home / "t" / "manifest.json").read_text())["encoder"]["precision"] == "bf16"
    assert check("t").ok


def test_older_readers_refuse_a_bf16_index(tmp_path, tiny_model_dir, index_home, monkeypatch):
    import semsearch.index.manifest as manifest_module

    good = write_jsonl(tmp_path / "good.jsonl", [{"id": "a", "text": "hello"}])
    index_corpus(good, "b", model=str(tiny_model_dir), precision="bf16")
    monkeypatch.setattr(manifest_module, "FORMAT_VERSION", 2)
    with pytest.raises(IndexFormatError, match="index format 3 is newer than this semsearch reads"):
        Index.open("b")
