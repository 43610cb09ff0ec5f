"""Metadata filters: ``key=value`` conditions turned into parameterised SQL over the documents' metadata.

A condition is ``KEY OP VALUE`` with OP one of ``= != < <= > >=``. KEY names a metadata field (``id`` names the
document id). VALUE is read as JSON when it parses (``3``, ``true``, ``"x"``), else as a plain string. Keys are
checked against a strict pattern and values are bound as SQL parameters, so no input reaches the SQL text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterable

from .errors import SemsearchError

_CONDITION = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*(!=|<=|>=|=|<|>)\s*(.*?)\s*$", re.S)


class FilterError(SemsearchError):
    """A filter expression that cannot be read."""


@dataclass(frozen=True)
class Condition:
    key: str
    op: str
    value: Any

    def sql(self) -> tuple[str, list]:
        if self.key == "id":
            column = "id"
        else:
            column = "json_extract(meta, ?)"
        params = [] if self.key == "id" else ['$."' + self.key + '"']
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
