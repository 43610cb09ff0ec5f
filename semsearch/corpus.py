"""Reading corpora: JSONL, CSV/TSV with a header, plain text (one document per line), or stdin.

Readers stream: they yield one :class:`Record` at a time and never hold the file in memory. Every problem
is an :class:`~semsearch.errors.InputError` that names the file and line.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

from .errors import InputError, choice

OnInvalid = Callable[[InputError], None]

STDIN = "-"


class Format(str, Enum):
    JSONL = "jsonl"
    CSV = "csv"
    TSV = "tsv"
    TEXT = "text"


_SUFFIXES = {".jsonl": Format.JSONL, ".ndjson": Format.JSONL, ".json": Format.JSONL, ".csv": Format.CSV,
             ".tsv": Format.TSV, ".tab": Format.TSV, ".txt": Format.TEXT}


@dataclass
class Record:
    """One document: its text, its id (given, or a content hash), other fields as metadata."""

    text: str
    id: str
    line: int
    meta: dict = field(default_factory=dict)

    @property
    def hash(self) -> str:
        return content_hash(self.text)


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def guess_format(path: str | Path, default: Format | None = Format.TEXT) -> Format | None:
    """The format a path's suffix names (``.jsonl``/``.ndjson``/``.json``, ``.csv``, ``.tsv``/``.tab``,
    ``.txt``, in any case); ``default`` when it names none. The one suffix table of the project."""
    return _SUFFIXES.get(Path(str(path)).suffix.lower(), default)


def _open(path: str | Path) -> BinaryIO:
    if str(path) == STDIN:
        return sys.stdin.buffer
    p = Path(path)
    if p.is_dir():
        raise InputError(p, "is a directory, not a corpus file")
    if not p.exists():
        raise InputError(p, "no such file")
    try:
        return p.open("rb")
    except OSError as exc:
        raise InputError(p, f"cannot be read ({exc.strerror})") from None


def _lines(fh: BinaryIO, name: str, on_invalid: OnInvalid | None = None) -> Iterator[tuple[int, str]]:
    """Decoded lines with their 1-based numbers; invalid UTF-8 is reported with its line."""
    for number, raw in enumerate(fh, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            error = InputError(name, f"invalid UTF-8 at byte {exc.start} of the line", number)
            if on_invalid is None:
                raise error from None
            on_invalid(error)
            continue
        if number == 1:
            line = line.lstrip("\ufeff")
        yield number, line


def read_records(path: str | Path, *, format: Format | str | None = None, text_field: str = "text",
                 id_field: str | None = "id", on_invalid: OnInvalid | None = None) -> Iterator[Record]:
    """Stream the records of a corpus file (``"-"`` for stdin).

    ``format`` defaults to the one the suffix names (stdin: JSONL when the first line starts with ``{``).
    Records without an id get the SHA-256 of their text, so the same text is never stored twice.
    A bad record raises :class:`InputError`, or, when ``on_invalid`` is given, is passed to it and skipped.
    """
    name = "<stdin>" if str(path) == STDIN else str(path)
    fmt = choice(Format, format, "format") if format is not None else None
    fh = _open(path)
    try:
        lines = _lines(fh, name, on_invalid)
        if fmt is None:
            if str(path) == STDIN:
                first = next(lines, None)
                if first is None:
                    return
                fmt = Format.JSONL if first[1].lstrip().startswith("{") else Format.TEXT
                lines = _chain(first, lines)
            else:
                fmt = guess_format(path)
        if fmt is Format.JSONL:
            records = _jsonl(lines, name, text_field, id_field)
        elif fmt in (Format.CSV, Format.TSV):
            records = _table(lines, name, "," if fmt is Format.CSV else "\t", text_field, id_field)
        else:
            records = _text(lines)
        for record in records:
            if isinstance(record, InputError):
                if on_invalid is None:
                    raise record
                on_invalid(record)
            else:
                yield record
    finally:
        if fh is not sys.stdin.buffer:
            fh.close()


def _chain(first, rest):
    yield first
    yield from rest


def _make(values: dict, name: str, line: int, text_field: str, id_field: str | None) -> Record | InputError:
    """A record, or the error that says why these values are not one."""
    try:
        return _record(values, name, line, text_field, id_field)
    except InputError as error:
        return error


def record_from_fields(values: dict, name: str, line: int, *, text_field: str = "text",
                       id_field: str | None = "id") -> Record:
    """One record from an already parsed object (a JSON object sent to the server, say), by the same rules
    as a corpus line: the text field must be a non-empty string, the id a string or an integer (missing or
    empty: the first 16 hex digits of the text's SHA-256), every other field is metadata. ``values`` is not
    changed. Raises :class:`InputError` naming ``name`` and ``line``.
    """
    return _record(dict(values), name, line, text_field, id_field)


def _record(values: dict, name: str, line: int, text_field: str, id_field: str | None) -> Record:
    if text_field not in values:
        fields = ", ".join(sorted(values)) or "none"
        raise InputError(name, f"no {text_field!r} field (fields: {fields}; use --text-field to name another)", line)
    text = values.pop(text_field)
    if not isinstance(text, str):
        raise InputError(name, f"field {text_field!r} is {type(text).__name__}, not a string", line)
    if not text.strip():
        raise InputError(name, f"field {text_field!r} is empty", line)
    raw_id = values.pop(id_field, None) if id_field else None
    if raw_id is None or raw_id == "":
        doc_id = content_hash(text)[:16]
    elif isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool):
        doc_id = str(raw_id)
    else:
        raise InputError(name, f"field {id_field!r} must be a string or an integer", line)
    return Record(text=text, id=doc_id, line=line, meta=values)


def json_objects(numbered_lines: Iterable[tuple[int, str]]) -> Iterator[tuple[int, dict | None, str | None]]:
    """``(line number, object, None)`` for each non-blank JSONL line, or ``(line number, None, problem)``.

    The one JSONL parser of the project: corpus files, BEIR folders and training data report a bad line
    with the same words, and each reader decides whether a problem stops it or is counted.
    """
    for number, line in numbered_lines:
        if not line.strip():
            continue
        try:
            value = json.loads(line.rstrip("\r\n"))  # an error at the end of the line points at its last column
        except json.JSONDecodeError as exc:
            what = exc.msg.removesuffix(" at")  # "Unterminated string starting at": no "at at column"
            yield number, None, f"invalid JSON ({what} at column {exc.colno})"
            continue
        if not isinstance(value, dict):
            yield number, None, f"expected a JSON object, got {type(value).__name__}"
            continue
        yield number, value, None


def _jsonl(lines, name, text_field, id_field) -> Iterator[Record]:
    for number, value, problem in json_objects(lines):
        yield InputError(name, problem, number) if problem else _make(value, name, number, text_field, id_field)


MAX_QUOTED_LINES = 1000  # a quoted CSV field longer than this is taken for a stray quote


def _table(lines, name, delimiter, text_field, id_field) -> Iterator[Record]:
    """Rows of a CSV/TSV stream as records. A stray ``"`` (a quoted field that never closes, or that runs over
    lines and is closed by someone else's quote) is reported at the line where it opened; when that error is
    skipped, reading resumes on the next line, so one bad line costs one record, never the rest of the file."""
    source: Iterator[tuple[int, str]] = iter(lines)
    header: list[str] | None = None
    end = 0  # the last line of the previous row
    while True:
        feed = _QuoteGuard(source, delimiter)
        reader = csv.reader(feed, delimiter=delimiter)
        try:
            for row in reader:
                start, end = end + 1, feed.number
                if header is None:
                    header = [h.strip() for h in row]
                    continue
                if not row or all(not cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    yield InputError(name, f"{len(row)} fields where the header has {len(header)}", start)
                    continue
                yield _make(dict(zip(header, row)), name, start, text_field, id_field)
            return
        except _StrayQuote as stray:
            error = InputError(name, f"unterminated quote ({stray.how})", stray.line)
            if header is None:
                raise error from None  # a broken header leaves no columns to read the rest by
            yield error
            source, end = _chain_all(stray.after, source), stray.line  # resume on the line after the quote
        except csv.Error as exc:
            raise InputError(name, f"malformed CSV ({exc})", feed.number) from None


def _chain_all(first: list, rest: Iterator) -> Iterator:
    yield from first
    yield from rest


class _StrayQuote(Exception):
    def __init__(self, line: int, how: str, after: list[tuple[int, str]]) -> None:
        super().__init__(line, how)
        self.line, self.how, self.after = line, how, after


class _QuoteGuard:
    """Feeds lines to csv.reader, remembering the number of the last one, and follows the quoting as
    csv.reader does (a ``"`` opens a quoted field only at the start of a field; ``""`` inside one is a quote).

    Python's csv is lenient: a stray quote silently swallows every following line into one field. A quoted
    field that spans lines must end at a delimiter or the line's end, close before the end of the input, and
    span at most :data:`MAX_QUOTED_LINES` lines; otherwise :class:`_StrayQuote` names the line that opened it
    and hands back the lines read after it. A quoted field within one line is left to csv as before.
    """

    def __init__(self, lines: Iterator[tuple[int, str]], delimiter: str) -> None:
        self._lines = lines
        self._delimiter = delimiter
        self.number = 0
        self._opened = 0  # line of the open quoted field, 0 when none is open
        self._after: list[tuple[int, str]] = []  # lines read since it opened

    def __iter__(self):
        return self

    def __next__(self) -> str:
        try:
            self.number, line = next(self._lines)
        except StopIteration:
            if self._opened:
                raise _StrayQuote(self._opened, "the field runs to the end of the input", self._after) from None
            raise
        if self._opened:
            self._after.append((self.number, line))
            if len(self._after) >= MAX_QUOTED_LINES:
                raise _StrayQuote(self._opened, f"the field runs over more than {MAX_QUOTED_LINES:,} lines",
                                  self._after)
        self._scan(line)
        return line

    def _scan(self, line: str) -> None:
        pos, delimiter = 0, self._delimiter
        while True:
            quote = line.find('"', pos)
            if quote < 0:
                return
            if not self._opened:
                if quote == 0 or line[quote - 1] == delimiter:  # a field starts with a quote
                    self._opened, self._after = self.number, []
                pos = quote + 1  # (elsewhere a quote is a plain character)
                continue
            following = line[quote + 1:quote + 2]
            if following == '"':  # an escaped quote
                pos = quote + 2
                continue
            crossed = self.number != self._opened
            if crossed and following not in (delimiter, "\n", "\r", ""):
                raise _StrayQuote(self._opened, f"the field runs to line {self.number}", self._after)
            self._opened, self._after = 0, []
            pos = quote + 1


def _text(lines) -> Iterator[Record]:
    for number, line in lines:
        text = line.rstrip("\r\n")
        if text.strip():
            yield Record(text=text, id=content_hash(text)[:16], line=number, meta={})


def iter_batches(records: Iterator[Record], size: int) -> Iterator[list[Record]]:
    """Group a stream of records into lists of at most ``size``."""
    batch: list[Record] = []
    for record in records:
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


__all__ = ["Format", "Record", "read_records", "record_from_fields", "guess_format", "content_hash", "iter_batches", "STDIN"]
