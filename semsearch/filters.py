"""Metadata filters: ``key=value`` conditions turned into parameterised SQL over the documents' metadata.

A condition is ``KEY OP VALUE`` with OP one of ``= != < <= > >=``. KEY names a metadata field (``id`` names the
document id). VALUE is read as JSON when it parses (``3``, ``true``, ``"x"``), else as a plain string. Keys are
checked against a strict pattern and values are bound as SQL parameters, so no input reaches the SQL text.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .errors import SemsearchError

_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CONDITION = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*(!=|<=|>=|=|<|>)\s*(.*?)\s*$", re.S)


class FilterError(SemsearchError):
    """A filter expression that cannot be read."""


class FilterWarning(UserWarning):
    """A filter that can match nothing (a key no document has); the command line prints it as ``warning: ...``."""


@dataclass(frozen=True)
class Condition:
    key: str
    op: str
    value: Any

    def __str__(self) -> str:
        """The condition as it would be typed (a string that reads as JSON is shown quoted)."""
        shown = json.dumps(self.value, ensure_ascii=False)
        if isinstance(self.value, str):
            try:
                json.loads(self.value)
            except json.JSONDecodeError:
                shown = self.value
        return f"{self.key}{self.op}{shown}"

    def sql(self) -> tuple[str, list]:
        if self.key == "id":
            column = "id"
        else:
            column = "json_extract(meta, ?)"
        params = [] if self.key == "id" else [json_path(self.key)]
        if self.value is None:
            if self.op not in ("=", "!="):
                raise FilterError(f"{self.key}{self.op}null: only = and != compare with null")
            return f"{column} is {'not ' if self.op == '!=' else ''}null", params
        if isinstance(self.value, bool):  # SQLite's json_extract gives 1/0 for true/false
            return f"{column} {self.op} ?", params + [int(self.value)]
        return f"{column} {self.op} ?", params + [self.value]


def parse_condition(text: str) -> Condition:
    """``"lang=en"`` → ``Condition("lang", "=", "en")``."""
    match = _CONDITION.match(text)
    if not match:
        raise FilterError(f"cannot read filter {text!r}: expected KEY=VALUE (or !=, <, <=, >, >=)")
    key, op, raw = match.groups()
    try:
        value = json.loads(raw)
        if isinstance(value, (list, dict)):
            raise FilterError(f"filter {text!r}: compare with a string, number, true, false or null")
    except json.JSONDecodeError:
        value = raw
    return Condition(key, op, value)


def where_clause(conditions: Iterable[Condition | str]) -> tuple[str, list]:
    """``(sql, params)`` for all conditions joined with AND; ``("1", [])`` when there are none."""
    parts, params = [], []
    for condition in conditions:
        if isinstance(condition, str):
            condition = parse_condition(condition)
        sql, values = condition.sql()
        parts.append(sql)
        params.extend(values)
    return (" and ".join(parts) or "1"), params


def json_path(key: str) -> str:
    """The SQLite JSON path of a top-level metadata key (keys are checked by the condition pattern)."""
    return '$."' + key + '"'


# What SQLite's json_type() reports, grouped by what a filter value can be compared with.
_NUMERIC = {"integer", "real", "true", "false"}  # json_extract gives true/false as 1/0
_KINDS = {"integer": "numbers", "real": "numbers", "true": "true/false", "false": "true/false", "text": "text",
          "array": "arrays", "object": "objects", "null": "null"}


def field_types(conn: sqlite3.Connection, keys: Iterable[str], table: str = "docs") -> dict[str, set[str]]:
    """For each metadata key, the set of SQLite ``json_type`` values it has in ``table`` (``meta`` column);
    an empty set when no document has the key. ``id`` is the document id column (``{"text"}``).

    One scan of the table per key, keys bound as parameters. The types change only when documents are
    written, so a long-lived reader may keep the answer for one generation of the index.
    """
    if not _TABLE.match(table):
        raise FilterError(f"not a table name: {table!r}")
    out: dict[str, set[str]] = {}
    for key in dict.fromkeys(keys):
        if key == "id":
            out[key] = {"text"}
            continue
        if not _CONDITION.match(f"{key}=x"):
            raise FilterError(f"cannot read filter key {key!r}")
        rows = conn.execute(f"select distinct json_type(meta, ?) from {table} where json_type(meta, ?) is not null",
                            (json_path(key), json_path(key)))
        out[key] = {row[0] for row in rows}
    return out


def check_conditions(conditions: Iterable[Condition | str], types: Mapping[str, set[str]]) -> list[str]:
    """Check conditions against the stored types of their keys (from :func:`field_types`).

    Returns warnings (a key that no document has: the condition matches nothing). Raises
    :class:`FilterError` for a value that cannot compare with any value the key holds (``year>=abc`` when
    every ``year`` is a number), which would silently match nothing or, with ``!=``, everything.
    """
    warnings: list[str] = []
    for condition in conditions:
        if isinstance(condition, str):
            condition = parse_condition(condition)
        stored = set(types.get(condition.key, set()))
        if condition.key == "id":
            continue  # the id column: text, and SQLite compares a number with it as text
        if not stored:
            warnings.append(f"no document has metadata key {condition.key!r}")
            continue
        value = condition.value
        if value is None:
            continue  # "is null" / "is not null" is meaningful whatever the key holds
        stored.discard("null")  # a null value matches no comparison, whatever the others are
        if not stored:
            warnings.append(f"every document's {condition.key!r} is null (compare with {condition.key}=null)")
            continue
        if stored <= {"array", "object"}:
            raise FilterError(f"filter {condition}: {condition.key!r} holds {_describe(stored)}; filters compare "
                              "text, numbers, true/false and null")
        compatible = "text" in stored if isinstance(value, str) else bool(stored & _NUMERIC)
        if not compatible:
            what = "text" if isinstance(value, str) else "true/false" if isinstance(value, bool) else "a number"
            hint = (f" (to compare as text, quote it: {condition.key}{condition.op}\"{json.dumps(value)}\")"
                    if "text" in stored else "")
            raise FilterError(f"filter {condition}: {condition.key!r} holds {_describe(stored)}, but "
                              f"{json.dumps(value, ensure_ascii=False)} is {what}{hint}")
    return warnings


def _describe(types: set[str]) -> str:
    return " and ".join(sorted({_KINDS.get(t, t) for t in types}))
