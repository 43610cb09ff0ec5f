"""Corpus readers: formats, ids, metadata, and one-line errors that name the file and line."""

from __future__ import annotations

import io
import json
import sys

import pytest

from semsearch.corpus import content_hash, read_records
from semsearch.errors import InputError


def write(tmp_path, name, content: str | bytes):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def test_jsonl_keeps_id_and_metadata(tmp_path):
    path = write(tmp_path, "c.jsonl", '{"id": "a", "text": "first", "lang": "en"}\n\n{"id": 7, "text": "second"}\n')
    records = list(read_records(path))
    assert [(r.id, r.text, r.line, r.meta) for r in records] == [("a", "first", 1, {"lang": "en"}), ("7", "second", 3, {})]


def test_missing_id_becomes_content_hash(tmp_path):
    path = write(tmp_path, "c.jsonl", '{"text": "same"}\n{"text": "same", "id": ""}\n')
    assert [r.id for r in read_records(path)] == [content_hash("same")[:16]] * 2


def test_custom_field_names(tmp_path):
    path = write(tmp_path, "c.jsonl", '{"key": "k1", "body": "hello", "x": 1}\n')
    (record,) = read_records(path, text_field="body", id_field="key")
    assert (record.id, record.text, record.meta) == ("k1", "hello", {"x": 1})


def test_csv_with_quoted_multiline_field_reports_row_start(tmp_path):
    path = write(tmp_path, "c.csv", 'id,text,tag\n1,"a, b",x\n2,"line one\nline two",y\n3,,z\n')
    records = read_records(path)
    assert next(records).text == "a, b"
    second = next(records)
    assert (second.text, second.line, second.meta) == ("line one\nline two", 3, {"tag": "y"})
    with pytest.raises(InputError) as err:
        next(records)
    assert str(err.value) == f"{path}:5: field 'text' is empty"


def test_tsv_and_text(tmp_path):
    tsv = write(tmp_path, "c.tsv", "text\tsource\nhello there\tweb\n")
    assert [(r.text, r.meta) for r in read_records(tsv)] == [("hello there", {"source": "web"})]
    txt = write(tmp_path, "c.txt", "one line\n\n  \nanother line\r\n")
    assert [(r.text, r.line) for r in read_records(txt)] == [("one line", 1), ("another line", 4)]


def test_stdin_sniffs_jsonl(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'{"text": "from stdin"}\n')))
    assert [r.text for r in read_records("-")] == ["from stdin"]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"plain text line\n")))
    assert [r.text for r in read_records("-")] == ["plain text line"]


@pytest.mark.parametrize("content, message", [
    ('{"text": "ok"}\n{"text": "broken"\n', "2: invalid JSON (Expecting ',' delimiter at column 18)"),
    ('{"text": "ok"}\n["a list"]\n', "2: expected a JSON object, got list"),
    ('{"title": "no text"}\n', "1: no 'text' field (fields: title; use --text-field to name another)"),
    ('{"text": "   "}\n', "1: field 'text' is empty"),
    ('{"text": 42}\n', "1: field 'text' is int, not a string"),
    ('{"text": "a", "id": [1]}\n', "1: field 'id' must be a string or an integer"),
])
def test_bad_jsonl_records(tmp_path, content, message):
    path = write(tmp_path, "bad.jsonl", content)
    with pytest.raises(InputError) as err:
        list(read_records(path))
    assert str(err.value) == f"{path}:{message}"


def test_invalid_utf8_names_line(tmp_path):
    path = write(tmp_path, "bad.jsonl", b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(InputError) as err:
        list(read_records(path))
    assert str(err.value) == f"{path}:2: invalid UTF-8 at byte 13 of the line"


def test_csv_row_with_wrong_width(tmp_path):
    path = write(tmp_path, "bad.csv", "id,text\n1,hello,extra\n")
    with pytest.raises(InputError, match=r"bad.csv:2: 3 fields where the header has 2"):
        list(read_records(path))


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(InputError) as err:
        list(read_records(tmp_path / "nope.jsonl"))
    assert str(err.value) == f"{tmp_path / 'nope.jsonl'}: no such file"
    with pytest.raises(InputError) as err:
        list(read_records(tmp_path))
    assert str(err.value) == f"{tmp_path}: is a directory, not a corpus file"


def test_utf8_bom_is_ignored(tmp_path):
    path = write(tmp_path, "bom.jsonl", "\ufeff" + json.dumps({"text": "x y"}) + "\n")
    assert [r.text for r in read_records(path)] == ["x y"]
