"""Issue 11, items 3, 7, 8 and 9: careless input is reported, never silently merged, ignored or obeyed."""

from __future__ import annotations

import csv
import json
import sqlite3

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from semsearch.cli import main
from semsearch.corpus import read_records
from semsearch.errors import InputError


def run(*args, **kwargs):
    return CliRunner().invoke(main, [str(a) for a in args], **kwargs)


# ----------------------------------------------------------------------- 3: unterminated CSV/TSV quotes
def stray_csv(tmp_path, name="stray.csv", delimiter=",", stray_line=4, rows=100, closing_line=None):
    """The issue's file: a header and ``rows`` rows (101 lines), one stray quote opening a field on
    ``stray_line``; optionally a properly quoted field on ``closing_line`` that closes it."""
    lines = ["id", "text", "year"]
    out = [delimiter.join(lines)]
    for number in range(2, rows + 2):
        text = f"row number {number}"
        if number == stray_line:
            text = '"' + text + " has a stray quote"
        elif number == closing_line:
            text = '"quoted' + delimiter + ' fine"'
        out.append(delimiter.join([str(number), text, "2020"]))
    path = tmp_path / name
    path.write_text("\n".join(out) + "\n")
    return path


@pytest.mark.parametrize("name, delimiter", [("stray.csv", ","), ("stray.tsv", "\t")])
def test_a_stray_quote_is_an_error_at_the_line_that_opened_it(tmp_path, name, delimiter):
    path = stray_csv(tmp_path, name, delimiter)
    assert len(path.read_text().splitlines()) == 101
    with pytest.raises(InputError) as info:
        list(read_records(path))
    assert info.value.line == 4
    assert str(info.value) == f"{path}:4: unterminated quote (the field runs to the end of the input)"


def test_a_stray_quote_closed_by_a_later_quoted_field_is_caught_too(tmp_path):
    path = stray_csv(tmp_path, closing_line=50)
    with pytest.raises(InputError, match=r"stray\.csv:4: unterminated quote \(the field runs to line 50\)"):
        list(read_records(path))


@pytest.mark.parametrize("closing_line", [None, 50])
def test_skip_invalid_skips_the_stray_line_and_keeps_the_rest(tmp_path, closing_line):
    path = stray_csv(tmp_path, closing_line=closing_line)
    errors: list[InputError] = []
    records = list(read_records(path, on_invalid=errors.append))
    assert [e.line for e in errors] == [4] and "unterminated quote" in str(errors[0])
    assert [r.line for r in records] == [n for n in range(2, 102) if n != 4]  # 99 rows, each its own
    assert [r.id for r in records] == [str(r.line) for r in records]
    assert max(len(r.text) for r in records) < 30  # nothing merged
    if closing_line:
        assert next(r.text for r in records if r.line == closing_line) == "quoted, fine"


def test_legit_quoted_fields_still_read(tmp_path):
    path = tmp_path / "ok.csv"
    path.write_text('id,text\n1,"two\nlines, fine"\n2,"say ""hi"""\n3,12" pipe\n4,"abc"def\n'
                    '5,"a\n\n\nfour-line field"\n6,last\n')
    records = list(read_records(path))
    assert [(r.id, r.text, r.line) for r in records] == [
        ("1", "two\nlines, fine", 2), ("2", 'say "hi"', 4), ("3", '12" pipe', 5), ("4", "abcdef", 6),
        ("5", "a\n\n\nfour-line field", 7), ("6", "last", 11)]


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(st.text(alphabet='ab ",\n\t\'', min_size=1, max_size=12).filter(str.strip), min_size=1,
                      max_size=8),
       delimiter=st.sampled_from([",", "\t"]))
def test_whatever_csv_writer_writes_reads_back_unchanged(tmp_path_factory, texts, delimiter):
    """No false alarm: quotes, delimiters and line breaks inside properly quoted fields read as written."""
    path = tmp_path_factory.mktemp("w") / ("w.csv" if delimiter == "," else "w.tsv")
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, delimiter=delimiter, lineterminator="\n")
        writer.writerow(["id", "text", "note"])
        writer.writerows([[str(i), text, f'"{text}"'] for i, text in enumerate(texts)])
    records = list(read_records(path))
    assert [(r.id, r.text, r.meta["note"]) for r in records] == [(str(i), t, f'"{t}"') for i, t in enumerate(texts)]


def test_a_quoted_field_longer_than_the_bound_is_taken_for_a_stray_quote(tmp_path, monkeypatch):
    import semsearch.corpus as corpus

    monkeypatch.setattr(corpus, "MAX_QUOTED_LINES", 5)
    ok = tmp_path / "ok.csv"
    ok.write_text('id,text\n1,"' + "\n".join("abcd") + '"\n')  # 4 lines: fine
    assert [r.text for r in read_records(ok)] == ["a\nb\nc\nd"]
    long = tmp_path / "long.csv"
    long.write_text('id,text\n1,"' + "\n".join("abcdefgh") + '"\n2,after\n')
    with pytest.raises(InputError, match=r"long\.csv:2: unterminated quote \(the field runs over more than 5 lines\)"):
        list(read_records(long))


def test_an_unclosed_quote_in_the_last_row_and_in_the_header(tmp_path):
    last = tmp_path / "last.csv"
    last.write_text('id,text\n1,fine\n2,"never closed\n')
    with pytest.raises(InputError, match=r"last\.csv:3: unterminated quote"):
        list(read_records(last))
    header = tmp_path / "header.csv"
    header.write_text('id,"text\n1,a\n2,b\n')
    errors: list[InputError] = []
    with pytest.raises(InputError, match=r"header\.csv:1: unterminated quote"):
        list(read_records(header, on_invalid=errors.append))  # no columns to read the rest by: not skippable


def test_cli_index_stops_on_a_stray_quote_and_skip_invalid_counts_it(tmp_path, tiny_model_dir, index_home):
    from semsearch.errors import SemsearchError
    from semsearch.index import Index

    path = stray_csv(tmp_path)
    result = run("index", path, "--index", "stray", "--model", tiny_model_dir, "-q")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        f"Error: {path}:4: unterminated quote (the field runs to the end of the input)")
    with pytest.raises(SemsearchError):  # nothing was written
        with Index.open("stray") as index:
            assert len(index) == 0
    result = run("index", path, "--index", "stray", "--model", tiny_model_dir, "-q", "--skip-invalid")
    assert result.exit_code == 0, result.output
    assert "99 read" in result.output and "skipped 1 invalid records" in result.output
    with Index.open("stray") as index:
        assert len(index) == 99


# -------------------------------------------------------------------------------------- 7: usage errors
@pytest.mark.parametrize("args, message", [
    (["query", ""], "the query TEXT is empty"),
    (["query", "  \t "], "the query TEXT is empty"),
    (["query", "x", "--threshold", "nan"], "Invalid value for '--threshold' / '-t': nan is not a finite number"),
    (["query", "x", "-t", "NaN"], "is not a finite number"),
    (["query", "x", "-t", "1.5"], "1.5 is not in the range -1<=x<=1"),
    (["dedupe", "c.txt", "-t", "nan"], "Invalid value for '--threshold' / '-t': nan is not a finite number"),
    (["eval", "pairs", "p.csv", "-t", "nan"], "nan is not a finite number"),
    (["train", "d.csv", "-o", "regression", "-O", "m", "--lr", "nan"], "Invalid value for '--lr'"),
    (["train", "d.csv", "-o", "regression", "-O", "m", "--score-range", "0", "nan"], "'--score-range'"),
])
def test_usage_errors_exit_2_before_any_work(args, message, index_home):
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not index_home.exists()


@pytest.fixture
def docs_table():
    """A table shaped like the index's: docs(rowid, id, text, meta JSON)."""
    conn = sqlite3.connect(":memory:")
    conn.execute("create table docs(rowid integer primary key, id text, text text, meta text)")
    rows = [("a", {"year": 2020, "lang": "en", "tags": ["x"], "code": "123", "ok": True, "gone": None}),
            ("b", {"year": 2021.5, "lang": "de", "code": "7", "ok": False}),
            ("c", {}), ("d", None)]
    conn.executemany("insert into docs(id, text, meta) values (?, 'text', ?)",
                     [(i, None if m is None else json.dumps(m)) for i, m in rows])
    yield conn
    conn.close()


def test_field_types_reads_the_json_types_of_each_key(docs_table):
    from semsearch.filters import field_types

    assert field_types(docs_table, ["year", "lang", "tags", "code", "ok", "gone", "nope", "id", "year"]) == {
        "year": {"integer", "real"}, "lang": {"text"}, "tags": {"array"}, "code": {"text"},
        "ok": {"true", "false"}, "gone": {"null"}, "nope": set(), "id": {"text"}}


def test_field_types_binds_keys_and_checks_the_table_name(docs_table):
    from semsearch.filters import FilterError, field_types

    with pytest.raises(FilterError, match="not a table name"):
        field_types(docs_table, ["year"], table="docs; drop table docs")
    with pytest.raises(FilterError, match="cannot read filter key"):
        field_types(docs_table, ['year") or 1=1 --'])
    assert field_types(docs_table, ["year"]) == {"year": {"integer", "real"}}  # the table is still there


@pytest.mark.parametrize("condition", ["year>=2020", "year<2021.5", "lang=en", "lang!=de", 'code="123"', "ok=true",
                                       "ok=1", "gone=null", "year=null", "id=7", "id=a"])
def test_conditions_of_the_right_type_pass_without_warning(docs_table, condition):
    from semsearch.filters import check_conditions, field_types, parse_condition

    key = parse_condition(condition).key
    assert check_conditions([condition], field_types(docs_table, [key])) == []


@pytest.mark.parametrize("condition, message", [
    ("year>=abc", "filter year>=abc: 'year' holds numbers, but \"abc\" is text"),
    ("year<=abc", "filter year<=abc: 'year' holds numbers, but \"abc\" is text"),
    ("lang=3", "filter lang=3: 'lang' holds text, but 3 is a number (to compare as text, quote it: lang=\"3\")"),
    ("code>100", "filter code>100: 'code' holds text, but 100 is a number (to compare as text, quote it: code>\"100\")"),
    ("ok=yes", "filter ok=yes: 'ok' holds true/false, but \"yes\" is text"),
    ("tags=x", "filter tags=x: 'tags' holds arrays; filters compare text, numbers, true/false and null"),
])
def test_a_value_of_the_wrong_type_is_one_line_naming_key_and_value(docs_table, condition, message):
    from semsearch.errors import SemsearchError
    from semsearch.filters import FilterError, check_conditions, field_types, parse_condition

    types = field_types(docs_table, [parse_condition(condition).key])
    with pytest.raises(FilterError) as info:
        check_conditions([condition], types)
    assert str(info.value) == message and "\n" not in str(info.value)
    assert isinstance(info.value, SemsearchError)


def test_an_unknown_key_is_a_warning(docs_table):
    from semsearch.filters import check_conditions, field_types, parse_condition

    conditions = [parse_condition("nope=1"), "lang=en", "gone=1"]
    types = field_types(docs_table, ["nope", "lang", "gone"])
    assert check_conditions(conditions, types) == [
        "no document has metadata key 'nope'", "every document's 'gone' is null (compare with gone=null)"]


# ---------------------------------------------------------------------------------- 8: terminal output
HOSTILE = "evil\x1b]0;pwned\x07\x1b[2J\x00 \u202eoof\u202c \u2066x\u2069 \x9b31m\rhidden\tend\u2028next"


def test_printable_escapes_controls_and_bidi_but_keeps_text():
    from semsearch.cli.render import one_line, printable

    shown = printable(HOSTILE)
    assert shown == ("evil\\x1b]0;pwned\\x07\\x1b[2J\\x00 \\u202eoof\\u202c \\u2066x\\u2069 \\x9b31m\\rhidden\\tend"
                     "\\u2028next")
    assert one_line(HOSTILE).endswith("\\x9b31m hidden end\\u2028next")
    kept = "Ünïcödé ✓ 日本語 עברית C:\\path \u200d"
    assert printable(kept) == kept
    for char in map(chr, [*range(0x20), *range(0x7f, 0xa0), 0x202a, 0x202b, 0x202c, 0x202d, 0x202e,
                          0x2066, 0x2067, 0x2068, 0x2069]):
        assert char not in printable(f"a{char}b"), hex(ord(char))


def _no_raw_controls(text: str) -> None:
    from semsearch.cli.render import _UNSAFE

    assert not _UNSAFE.search(text.replace("\n", "")), repr(text)


def test_query_text_output_escapes_stored_text_and_prints_metadata_as_json(monkeypatch):
    from semsearch.index import Hit

    hits = [Hit(1, 0.9, "id\x1b[31m", HOSTILE, {"lang": "en\x1b[0m", "tags": ["a", "b"],
                                                 "nested": {"k": [1, None, True]}, "n": 3, "ok": False})]
    monkeypatch.setattr("semsearch.api.search", lambda queries, *a, **k: [hits for _ in queries])
    result = run("query", "what\x1b[2J", "--index", "x")
    assert result.exit_code == 0, result.output
    _no_raw_controls(result.output)
    line = result.output.splitlines()[1]
    assert "id\\x1b[31m" in line and "evil\\x1b]0;pwned\\x07" in line and "\\u202eoof" in line
    assert line.endswith('lang=en\\x1b[0m tags=["a", "b"] nested={"k": [1, null, true]} n=3 ok=false')
    queries = CliRunner().invoke(main, ["query", "--queries", "-", "--index", "x"], input="one\x1b[2J\ntwo\n")
    assert "query: one\\x1b[2J" in queries.output
    _no_raw_controls(queries.output)
    as_json = run("query", "q", "--index", "x", "--json")
    assert as_json.output.count("\n") == 1 and len(as_json.output.splitlines()) == 1  # U+2028 escaped too
    _no_raw_controls(as_json.output)
    assert json.loads(as_json.output)["text"] == HOSTILE and json.loads(as_json.output)["meta"] == hits[0].meta


def test_dedupe_text_output_escapes_stored_text(tmp_path, tiny_model_dir):
    path = tmp_path / "hostile.jsonl"
    path.write_text("".join(json.dumps({"id": doc_id, "text": HOSTILE}) + "\n" for doc_id in ("a\x1b[1m", "b\u202e")))
    for view in ([], ["--clusters"], ["--keep", "first"]):
        result = CliRunner().invoke(main, ["dedupe", str(path), "--model", str(tiny_model_dir), "-t", "1", *view])
        assert result.exit_code == 0, result.output
        assert "a\\x1b[1m" in result.stdout and "b\\u202e" in result.stdout
        if not view or view == ["--clusters"]:
            assert "evil\\x1b]0;pwned" in result.stdout
        _no_raw_controls(result.stdout)


# ----------------------------------------------------------------------------------------- 9: small
@pytest.mark.parametrize("line, message", [
    ('{"text": "unterminated\n', "invalid JSON (Unterminated string starting at column 10)"),
    ('{"text": "bad \x01 control"}\n', "invalid JSON (Invalid control character at column 15)"),
    ('{"text": }\n', "invalid JSON (Expecting value at column 10)"),
])
def test_json_errors_read_once(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(line)
    with pytest.raises(InputError) as info:
        list(read_records(path))
    assert str(info.value) == f"{path}:1: {message}"
    assert "at at" not in str(info.value)


def test_number_and_string_ids_are_the_same_document(tmp_path):
    """The rule the README states: an id is kept as text, so 7 and "7" name one document."""
    path = tmp_path / "ids.jsonl"
    path.write_text('{"id": 7, "text": "seven"}\n{"id": "7", "text": "seven again"}\n')
    assert [r.id for r in read_records(path)] == ["7", "7"]
