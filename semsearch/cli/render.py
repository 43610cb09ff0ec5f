"""Text output of stored documents: a terminal shows what a document says, never does what it asks.

Texts, ids and metadata come from users' files. Printed raw, an escape sequence in one could recolour,
retitle or clear the user's terminal, a bidi override could make a line read differently from its bytes,
and a carriage return could hide what precedes it. :func:`printable` shows every such character escaped.
JSON escapes C0 controls itself; :func:`json_line` escapes the rest (C1, separators, bidi) as ``\\uXXXX``,
which leaves the JSON equal and keeps a JSON line on one line for readers that split on U+2028 too.
"""

from __future__ import annotations

import json
import os
import re
import sys

import click

# C0 controls, DEL, C1 controls, line/paragraph separators, bidi embeddings/overrides (U+202A-202E) and
# isolates (U+2066-2069).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_BEYOND_JSON = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")  # what json.dumps leaves raw
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_LINE_BREAKS = re.compile("\r\n|[\n\r\t]")


def _escape(match: re.Match) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def printable(text: str) -> str:
    """``text`` with control characters, line separators and bidi controls shown as escapes (``\\x1b``,
    ``\\u202e``, ``\\n``); everything else, backslashes included, as it is."""
    return _UNSAFE.sub(_escape, str(text))


def json_line(value) -> str:
    """``value`` as one line of JSON (UTF-8 kept) with every unsafe character escaped."""
    return _BEYOND_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(value, ensure_ascii=False))


def one_line(text: str) -> str:
    """``text`` on one line: line breaks and tabs become spaces, other unsafe characters escapes."""
    return printable(_LINE_BREAKS.sub(" ", text))


def clip(text: str, room: int) -> str:
    """:func:`one_line`, cut to ``room`` characters with an ellipsis."""
    text = one_line(text)
    return text if len(text) <= room else text[: room - 1] + "…"


def meta_value(value) -> str:
    """A metadata value for text output: a string as itself, anything else (numbers, lists, objects) as JSON."""
    if isinstance(value, str):
        return one_line(value)
    return printable(json.dumps(value, ensure_ascii=False))


def text_room(used: int) -> int:
    """Characters left for a text column when ``used`` are taken by the others (at least 20)."""
    columns = max(60, os.get_terminal_size().columns if sys.stdout.isatty() else 120)
    return max(20, columns - used)


def render_hits(hits) -> None:
    """The result table of one query: rank, score, id, text (clipped to the terminal), then metadata."""
    if not hits:
        click.echo("(no results)")
        return
    ids = [one_line(hit.id) for hit in hits]
    width = max(len(i) for i in ids)
    room = text_room(width + 18)
    click.echo(f"{'rank':>4}  {'score':>6}  {'id':<{width}}  text")
    for hit, doc_id in zip(hits, ids):
        line = f"{hit.rank:>4}  {hit.score:6.4f}  {doc_id:<{width}}  {clip(hit.text, room)}"
        if hit.meta:
            line += "  " + " ".join(f"{one_line(key)}={meta_value(value)}" for key, value in hit.meta.items())
        click.echo(line)


__all__ = ["printable", "json_line", "one_line", "clip", "meta_value", "text_room", "render_hits"]
