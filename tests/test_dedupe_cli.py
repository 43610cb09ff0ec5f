"""`semsearch dedupe` end to end (CliRunner), the dedupe library functions, and the approximate mode."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from semsearch.api import index_corpus
from semsearch.cli import main
from semsearch.dedupe import Document, dedupe, dedupe_vectors, mine_approximate, mine_rows
from semsearch.mining import DEFAULT_THRESHOLD, mine_pairs

from .conftest import shared_file

TEXTS = [
    ("a", "A man is playing a flute."),
    ("b", "The cat sat on the mat."),
    ("c", "A man is playing a flute."),
    ("d", "Stock markets fell sharply on Monday."),
    ("e", "A man is playing a flute."),
    ("f", "The cat sat on the mat, purring."),
]


def write_jsonl(path, items) -> str:
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in items))
    return str(path)


@pytest.fixture
def corpus(tmp_path) -> str:
    return write_jsonl(tmp_path / "corpus.jsonl", TEXTS)


def run(*args, ok: bool = True):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def json_rows(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


# ------------------------------------------------------------------------------------------------ corpus
def test_identical_texts_are_pairs_with_score_one(corpus, tiny_model_dir):
    result = run("dedupe", corpus, "--model", tiny_model_dir, "-t", "1", "--json")
    flute = TEXTS[0][1]
    assert json_rows(result.stdout) == [
        {"score": 1.0, "id_a": "a", "id_b": "c", "text_a": flute, "text_b": flute, "line_a": 1, "line_b": 3},
        {"score": 1.0, "id_a": "a", "id_b": "e", "text_a": flute, "text_b": flute, "line_a": 1, "line_b": 5},
        {"score": 1.0, "id_a": "c", "id_b": "e", "text_a": flute, "text_b": flute, "line_a": 3, "line_b": 5},
    ]
    assert "6 documents, 3 pairs with cosine >= 1, 1 cluster: keep 4, drop 2" in result.stderr


def test_pairs_match_the_oracle_on_the_same_vectors(corpus, tiny_encoder, tiny_model_dir):
    vectors = tiny_encoder.encode([t for _, t in TEXTS])
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = unit.astype(np.float64) @ unit.T.astype(np.float64)
    threshold = 0.95
    expected = sorted(((i, j) for i in range(6) for j in range(i + 1, 6) if scores[i, j] >= threshold),
                      key=lambda p: (-round(scores[p], 9), p))
    rows = json_rows(run("dedupe", corpus, "--model", tiny_model_dir, "-t", threshold, "--json").stdout)
    assert [(r["id_a"], r["id_b"]) for r in rows] == [(TEXTS[i][0], TEXTS[j][0]) for i, j in expected]
    assert all(abs(r["score"] - scores[ord(r["id_a"]) - 97, ord(r["id_b"]) - 97]) < 1e-5 for r in rows)


def test_text_output_of_each_view(corpus, tiny_model_dir):
    pairs = run("dedupe", corpus, "--model", tiny_model_dir, "-t", "1").stdout
    assert pairs.splitlines()[:2] == [f"1.0000  a  {TEXTS[0][1]}", f"        c  {TEXTS[0][1]}"]
    clusters = run("dedupe", corpus, "--model", tiny_model_dir, "-t", "1", "--clusters").stdout
    assert clusters.splitlines() == [
        "cluster 1 (3 documents)",
        f"  keep  1.0000  a  {TEXTS[0][1]}",
        f"  drop  1.0000  c  {TEXTS[0][1]}",
        f"  drop  1.0000  e  {TEXTS[0][1]}",
    ]
    plan = run("dedupe", corpus, "--model", tiny_model_dir, "-t", "1", "--keep", "first").stdout
    assert plan.splitlines() == ["keep  a", "keep  b", "drop  c  duplicate of a (1.0000)", "keep  d",
                                 "drop  e  duplicate of a (1.0000)", "keep  f"]


def test_keep_longest_plan(tmp_path, tiny_model_dir):
    items = [("x", "Hello there."), ("y", "Hello there, friend."), ("z", "Hello there.")]
    path = write_jsonl(tmp_path / "c.jsonl", items)
    rows = json_rows(run("dedupe", path, "--model", tiny_model_dir, "-t", "0.5", "--keep", "longest", "--json").stdout)
    assert [(r["id"], r["action"], r["duplicate_of"]) for r in rows] == [("x", "drop", "y"), ("y", "keep", None),
                                                                         ("z", "drop", "y")]
    assert [r["line"] for r in rows] == [1, 2, 3]


def test_clusters_json_rows(corpus, tiny_model_dir):
    rows = json_rows(run("dedupe", corpus, "--model", tiny_model_dir, "-t", "1", "--clusters", "--json").stdout)
    assert rows[0] == {"cluster": 1, "size": 3, "id": "a", "representative": True, "score": 1.0, "link_id": None,
                       "link_score": None, "text": TEXTS[0][1], "line": 1}
    assert [(r["id"], r["link_id"], r["score"]) for r in rows[1:]] == [("c", "a", 1.0), ("e", "a", 1.0)]


def test_a_corpus_of_identical_texts(tmp_path, tiny_model_dir):
    path = tmp_path / "same.txt"
    path.write_text("the same line\n" * 4)
    result = run("dedupe", path, "--model", tiny_model_dir, "--keep", "first", "--json")
    rows = json_rows(result.stdout)
    assert [r["action"] for r in rows] == ["keep", "drop", "drop", "drop"]
    assert [r["line"] for r in rows] == [1, 2, 3, 4] and all(r["score"] in (None, 1.0) for r in rows)
    assert "4 documents, 6 pairs" in result.stderr


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_out_file_by_extension(corpus, tiny_model_dir, tmp_path, suffix):
    out = tmp_path / f"pairs{suffix}"
    result = run("dedupe", corpus, "--model", tiny_model_dir, "-t", "1", "--out", out, "--json")
    expected = json_rows(result.stdout)
    if suffix == ".jsonl":
        assert json_rows(out.read_text()) == expected
    else:
        rows = list(csv.DictReader(io.StringIO(out.read_text())))
        assert [(r["score"], r["id_a"], r["id_b"], r["line_b"]) for r in rows] == [
            (str(e["score"]), e["id_a"], e["id_b"], str(e["line_b"])) for e in expected]
    assert f"wrote 3 rows to {out}" in result.stderr


def test_out_csv_header_when_nothing_found(corpus, tiny_model_dir, tmp_path):
    out = tmp_path / "none.csv"
    run("dedupe", corpus, "--model", tiny_model_dir, "-t", "1", "--keep", "first", "--out", out)
    assert out.read_text().splitlines()[0] == "id,action,duplicate_of,score,line"
    empty = tmp_path / "empty.csv"
    single = write_jsonl(tmp_path / "one.jsonl", [("only", "One document.")])
    run("dedupe", single, "--model", tiny_model_dir, "--out", empty)
    assert empty.read_text().splitlines() == ["score,id_a,id_b,text_a,text_b,line_a,line_b"]


def test_top_k_caps_each_document(corpus, tiny_model_dir):
    rows = json_rows(run("dedupe", corpus, "--model", tiny_model_dir, "-t", "1", "--top-k", "1", "--json").stdout)
    # a's best is c (tie at 1.0 with e: the earlier), c's best is a, e's best is a: {a-c, a-e}
    assert [(r["id_a"], r["id_b"]) for r in rows] == [("a", "c"), ("a", "e")]


# ------------------------------------------------------------------------------------------------ index
@pytest.fixture
def built_index(corpus, tiny_model_dir, index_home) -> str:
    index_corpus(corpus, "dups", model=str(tiny_model_dir))
    return "dups"


def test_index_is_mined_from_stored_vectors(built_index, corpus, tiny_model_dir, monkeypatch):
    from_corpus = json_rows(run("dedupe", corpus, "--model", tiny_model_dir, "-t", "0.95", "--json").stdout)
    from semsearch.encoder import Encoder

    def no_encoding(*args, **kwargs):
        raise AssertionError("dedupe --index must not re-encode")

    monkeypatch.setattr(Encoder, "encode", no_encoding)
    monkeypatch.setattr(Encoder, "load", no_encoding)
    result = run("dedupe", "--index", built_index, "-t", "0.95", "--json")
    from_index = json_rows(result.stdout)
    strip = [{k: v for k, v in row.items() if not k.startswith("line")} for row in from_corpus]
    assert from_index == strip and from_index
    assert "embedding" not in result.stderr


def test_empty_index_and_single_document(index_home, tiny_model_dir, tmp_path):
    from semsearch.encoder import Encoder
    from semsearch.index import IndexWriter

    with IndexWriter("empty", Encoder.load(tiny_model_dir, device="cpu")):
        pass
    result = run("dedupe", "--index", "empty")
    assert result.stdout == f"(no pairs with cosine >= {DEFAULT_THRESHOLD:g})\n"
    assert "0 documents, 0 pairs" in result.stderr
    index_corpus(write_jsonl(tmp_path / "one.jsonl", [("only", "One document.")]), "one", model=str(tiny_model_dir))
    result = run("dedupe", "--index", "one", "--keep", "first")
    assert result.stdout == "keep  only\n" and "1 documents, 0 pairs" in result.stderr


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("args, message", [
    (["-t", "1.5"], "Invalid value for '--threshold' / '-t': 1.5 is not in the range -1<=x<=1"),
    (["-t", "-2"], "is not in the range -1<=x<=1"),
    (["--chunk-size", "0"], "Invalid value for '--chunk-size': 0 is not in the range x>=1"),
    (["--top-k", "0"], "Invalid value for '--top-k'"),
    (["--out", "pairs.txt"], "use a .jsonl or .csv file"),
    (["--keep", "shortest"], "Invalid value for '--keep'"),
    (["--index", "other"], "give a CORPUS file or --index NAME, not both"),
])
def test_usage_errors_exit_2(corpus, args, message):
    result = run("dedupe", corpus, *args, ok=False)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_model_with_an_index_is_a_usage_error(index_home):
    result = run("dedupe", "--index", "x", "--model", "m", ok=False)
    assert result.exit_code == 2 and "--model applies to a CORPUS" in result.output


def test_missing_index_is_one_line(index_home):
    result = run("dedupe", "--index", "nowhere", ok=False)
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: {index_home / 'nowhere'}: no such index; build it with: semsearch index CORPUS --index nowhere"]


def test_empty_and_missing_corpus(tmp_path, tiny_model_dir):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = run("dedupe", empty, "--model", tiny_model_dir, ok=False)
    assert result.exit_code == 1 and result.output == f"Error: {empty}: no records: the file is empty\n"
    result = run("dedupe", tmp_path / "nope.jsonl", ok=False)
    assert result.exit_code == 1 and "no such file" in result.output


def test_bad_record_names_file_and_line(tmp_path, tiny_model_dir):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n{"text": 3}\n')
    result = run("dedupe", path, "--model", tiny_model_dir, ok=False)
    assert result.exit_code == 1 and result.output == f"Error: {path}:2: field 'text' is int, not a string\n"


def test_help_does_not_import_torch_and_states_the_default():
    code = ("import sys\nfrom semsearch.cli import main\n"
            "try:\n    main(['dedupe', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO TORCH')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("NO TORCH")
    assert f"[default: {DEFAULT_THRESHOLD:g}, chosen on STSb]" in " ".join(out.split())


# ------------------------------------------------------------------------------------------------ approximate
def clustered(n: int, d: int = 24, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n // 4, d))
    return (centres[rng.integers(0, len(centres), n)] + 0.25 * rng.standard_normal((n, d))).astype(np.float32)


def test_approximate_with_every_list_probed_is_exact():
    x = clustered(2000)
    exact = mine_pairs(x, 0.9, device="cpu")
    pairs, recall, how = mine_approximate(x, 0.9, nlist=20, nprobe=20, sample=300)
    assert len(exact) > 500
    assert [(p.left, p.right) for p in pairs] == [(p.left, p.right) for p in exact]
    np.testing.assert_allclose(pairs.scores, exact.scores, atol=1e-12)
    assert recall.value == 1.0 and recall.sample == 300 and recall.exact_pairs > 0
    assert "IVF 20 lists, 20 probed" in how


def test_approximate_recall_is_measured_not_assumed():
    x = clustered(3000, seed=1)
    threshold = 0.8
    pairs, recall, _ = mine_approximate(x, threshold, nlist=60, nprobe=1, sample=400, seed=3)
    exact = {(p.left, p.right) for p in mine_pairs(x, threshold, device="cpu")}
    found = {(p.left, p.right) for p in pairs}
    assert found <= exact  # re-scored: never a false pair
    chosen = set(np.random.default_rng(3).choice(len(x), size=400, replace=False).tolist())
    touching = {p for p in exact if p[0] in chosen or p[1] in chosen}
    assert recall.exact_pairs == len(touching)
    assert recall.found == len(touching & found)
    assert recall.value < 1.0  # one probe out of 60 misses some: the number says so


def test_mine_rows_matches_exact_mining():
    x = clustered(300, seed=2)
    rows = np.array([0, 5, 17, 299])
    a, b = mine_rows(x, rows, 0.85)
    exact = {(p.left, p.right) for p in mine_pairs(x, 0.85, device="cpu")}
    expected = {(r, o) for r in rows.tolist() for o in range(300)
                if r != o and (min(r, o), max(r, o)) in exact}
    assert set(zip(a.tolist(), b.tolist())) == expected


def test_cli_approximate_prints_recall(corpus, tiny_model_dir):
    result = run("dedupe", corpus, "--model", tiny_model_dir, "-t", "1", "--approximate", "--json")
    assert len(json_rows(result.stdout)) == 3
    assert "approximate recall: 1.000 against the exact search on 6 sampled documents (3 of their 3 pairs found)" \
        in result.stderr


# ------------------------------------------------------------------------------------------------ library
def test_library_result_types():
    x = np.array([[1, 0], [1, 0.01], [0, 1]], dtype=np.float32)
    docs = [Document(i, f"id{i}", text) for i, text in enumerate(["one", "one!", "two"])]
    result = dedupe_vectors(x, docs, threshold=0.99, keep="longest")
    assert [(p.a.id, p.b.id) for p in result.pairs] == [("id0", "id1")]
    assert result.kept == [docs[1], docs[2]]
    assert [(d.document.id, d.duplicate_of.id) for d in result.dropped] == [("id0", "id1")]
    assert result.clusters[0].representative == docs[1] and result.clusters[0].size == 2
    assert result.threshold == 0.99 and result.top_k is None


def test_library_refuses_corpus_and_index_together():
    from semsearch.errors import SemsearchError

    with pytest.raises(SemsearchError, match="not both"):
        dedupe("a.jsonl", "b")


@pytest.mark.slow
def test_real_model_finds_paraphrases(tmp_path, real_encoder):
    rows = []
    with open(shared_file("stsb", "stsb-en-test.csv"), newline="", encoding="utf-8") as fh:
        for number, (s1, s2, _score) in enumerate(csv.reader(fh)):
            if number < 150:
                rows += [s1, s2]
    unique = list(dict.fromkeys(rows))
    vectors = real_encoder.encode(unique)
    result = dedupe_vectors(vectors, [Document(i, str(i), t) for i, t in enumerate(unique)])
    oracle = vectors.astype(np.float64) @ vectors.astype(np.float64).T
    expected = {(i, j) for i in range(len(unique)) for j in range(i + 1, len(unique))
                if oracle[i, j] >= DEFAULT_THRESHOLD + 1e-6}
    got = {(p.a.position, p.b.position) for p in result.pairs}
    assert expected and expected <= got
    assert all(oracle[p] >= DEFAULT_THRESHOLD - 1e-6 for p in got)
