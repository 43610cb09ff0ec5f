"""The command line, through click's CliRunner: exact output shapes and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from semsearch.cli import main

from .conftest import write_st_folder


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def built(tmp_path, index_home, tiny_model_dir, runner):
    path = tmp_path / "docs.jsonl"
    docs = [{"id": "fox", "text": "The quick brown fox jumps over the lazy dog", "lang": "en"},
            {"id": "code", "text": "Write the data to a file on disk", "lang": "en"},
            {"id": "bread", "text": "Bake bread with flour water and salt", "lang": "en"}]
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    result = runner.invoke(main, ["index", str(path), "--index", "t", "--model", str(tiny_model_dir), "-q"])
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith(f"{index_home / 't'}: 3 read, 3 added, 0 updated, 0 unchanged in ")
    return path


def test_query_table(built, runner):
    result = runner.invoke(main, ["query", "--index", "t", "-k", "2", "--mode", "dense",
                                  "The quick brown fox jumps over the lazy dog"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["rank", "score", "id", "text"]
    assert lines[1].split()[:3] == ["1", "1.0000", "fox"] and lines[1].endswith("lang=en")
    assert len(lines) == 3 and lines[2].split()[0] == "2"
    hybrid = runner.invoke(main, ["query", "--index", "t", "-k", "2", "The quick brown fox jumps over the lazy dog"])
    lines = hybrid.stdout.splitlines()  # the default: hybrid, with each side's rank
    assert lines[0].split() == ["rank", "score", "dense", "lex", "id", "text"]
    assert lines[1].split()[:5] == ["1", f"{2 / 61:.4f}", "1", "1", "fox"]


def test_query_json_lines(built, runner):
    result = runner.invoke(main, ["query", "--index", "t", "-k", "3", "--json", "bake some bread"])
    assert result.exit_code == 0
    hits = [json.loads(line) for line in result.stdout.splitlines()]
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert {h["id"] for h in hits} == {"fox", "code", "bread"}
    assert all(h["query"] == "bake some bread" and h["meta"] == {"lang": "en"} for h in hits)
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]


def test_queries_file_and_threshold(built, runner, tmp_path):
    queries = tmp_path / "q.txt"
    queries.write_text("Bake bread with flour water and salt\n\nWrite the data to a file on disk\n")
    result = runner.invoke(main, ["query", "--index", "t", "--queries", str(queries), "--threshold", "0.9999", "--json"])
    assert result.exit_code == 0
    hits = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(h["query"].split()[0], h["id"]) for h in hits] == [("Bake", "bread"), ("Write", "code")]


def test_reindex_reports_unchanged(built, runner, tiny_model_dir):
    result = runner.invoke(main, ["index", str(built), "--index", "t", "-q"])
    assert result.exit_code == 0
    assert ": 3 read, 0 added, 0 updated, 3 unchanged in " in result.stderr


def test_model_mismatch_is_refused(built, runner, tmp_path, tiny_encoder):
    other = write_st_folder(tmp_path / "other", type(tiny_encoder.model)(tiny_encoder.model.config),
                            tiny_encoder.tokenizer)
    result = runner.invoke(main, ["query", "--index", "t", "--model", str(other), "fox"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and "differs in fingerprint: drop --model" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args, code, message", [
    (["query", "--index", "missing", "x"], 1, "Error: indexes/missing: no such index; build it with"),
    (["index", "nope.jsonl", "--index", "t"], 1, "Error: nope.jsonl: no such file"),
    (["query", "--index", "t"], 2, "give a query TEXT or --queries FILE"),
    (["query", "-k", "0", "x"], 2, "Invalid value for '-k'"),
    (["query", "--threshold", "1.5", "x"], 2, "Invalid value for '--threshold'"),
])
def test_errors_and_exit_codes(runner, index_home, monkeypatch, tmp_path, args, code, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEMSEARCH_INDEXES", "indexes")
    result = runner.invoke(main, args)
    assert result.exit_code == code
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_bad_line_names_file_and_line(built, runner, tmp_path, index_home):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": "no closing brace"\n')
    result = runner.invoke(main, ["index", str(bad), "--index", "t", "-q"])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {bad}:2: invalid JSON (")
    assert len(result.stderr.strip().splitlines()) == 1
    again = runner.invoke(main, ["query", "--index", "t", "-k", "5", "--json", "fine"])
    assert len(again.stdout.splitlines()) == 3  # what was indexed before is intact


def test_help_does_not_import_torch():
    code = "import sys; from semsearch.cli import main; sys.argv=['semsearch','--help']\n" \
           "try:\n    main()\nexcept SystemExit:\n    pass\n" \
           "print('torch' in sys.modules, 'transformers' in sys.modules, 'faiss' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False False False"
