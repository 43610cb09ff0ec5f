"""Vector ids of passages: a long document is several vectors, one per passage, all naming its SQLite row.

A vector id is ``rowid | (j << 40)`` for passage ``j`` of the document in row ``rowid``. Passage 0 is the row id
itself, so a document of one passage (every document of an index built before passages, and every short one)
has exactly the vector id it always had. A chunked document stores its passages' character offsets in the
``passages`` column of ``docs`` (JSON ``[[start, end], ...]``); a NULL there means one passage, the whole text.

Row ids stay below 2**40 and passages below 2**22, so every vector id is a positive int64 (FAISS marks dead
vectors by negating them).
"""

from __future__ import annotations

import json
from typing import Iterable, Sequence

import numpy as np

PASSAGE_SHIFT = 40
ROWID_MASK = (1 << PASSAGE_SHIFT) - 1
MAX_ROWID = ROWID_MASK
MAX_PASSAGES = 1 << 22


def vector_id(rowid: int, passage: int) -> int:
    return int(rowid) | (int(passage) << PASSAGE_SHIFT)


def rowids_of(ids: np.ndarray) -> np.ndarray:
    """The row id of each vector id."""
    return np.asarray(ids, dtype=np.int64) & ROWID_MASK


def passages_of(ids: np.ndarray) -> np.ndarray:
    """The passage number of each vector id."""
    return np.asarray(ids, dtype=np.int64) >> PASSAGE_SHIFT


def expand(rowids: Sequence[int] | np.ndarray, counts: Sequence[int] | np.ndarray) -> np.ndarray:
    """Every vector id of documents ``rowids`` with ``counts`` passages each, sorted."""
    rowids = np.asarray(rowids, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    if not len(rowids):
        return np.zeros(0, np.int64)
    repeated = np.repeat(rowids, counts)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    numbers = np.arange(len(repeated), dtype=np.int64) - starts
    return np.sort(repeated | (numbers << PASSAGE_SHIFT))


def encode_offsets(spans: Sequence[tuple[int, int]]) -> str | None:
    """The ``passages`` column value of a document split into ``spans`` (None: one passage)."""
    if len(spans) <= 1:
        return None
    return json.dumps([[int(s), int(e)] for s, e in spans], separators=(",", ":"))


def decode_offsets(value: str | None, length: int) -> list[tuple[int, int]]:
    """The passages of a stored document: its spans, or the whole text."""
    if not value:
        return [(0, length)]
    return [(int(s), int(e)) for s, e in json.loads(value)]


def group_best(scores: np.ndarray, ids: np.ndarray) -> list[tuple[int, int, float]]:
    """``(rowid, passage, score)`` per document, best passage only, in the order of the (sorted) input.

    ``scores``/``ids`` are one query's results best first (id -1: none).
    """
    out, seen = [], set()
    for score, vid in zip(scores.tolist(), ids.tolist()):
        if vid < 0:
            continue
        rowid = vid & ROWID_MASK
        if rowid in seen:
            continue
        seen.add(rowid)
        out.append((rowid, vid >> PASSAGE_SHIFT, score))
    return out


def counts_of(rows: Iterable[tuple[int, str | None]]) -> tuple[list[int], list[int]]:
    """``(rowids, passage counts)`` from rows of ``(rowid, passages column)``."""
    rowids, counts = [], []
    for rowid, value in rows:
        rowids.append(int(rowid))
        counts.append(len(json.loads(value)) if value else 1)
    return rowids, counts
