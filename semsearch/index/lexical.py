"""User text as an FTS5 query: every term quoted, so FTS5's query syntax can neither fail nor be injected."""

from __future__ import annotations

import re

_TERM = re.compile(r"\w+", re.UNICODE)
MAX_TERMS = 64  # a longer query keeps its first terms: bm25 over more adds time, not ranking


def fts_query(text: str) -> str | None:
    """``'"rare" OR "part" OR "x123"'`` for the word characters of ``text``; None when it has none.

    Terms are OR-ed (bm25 ranks documents with more and rarer terms first) and each is a quoted string, the
    one FTS5 form in which no character is an operator.
    """
    terms = list(dict.fromkeys(t.lower() for t in _TERM.findall(text)))[:MAX_TERMS]
    if not terms:
        return None
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
