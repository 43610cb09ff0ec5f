"""Fusing a dense (vector) ranking with a lexical (bm25) ranking: pure functions over ranked lists.

Two ways, both on the candidates each side returned:

- **Reciprocal rank fusion** (Cormack et al. 2009): ``score(d) = sum over rankings of 1 / (k + rank(d))``, ranks
  from 1, a ranking that lacks ``d`` adds nothing. It needs no scores, so cosines and bm25 need no common scale.
- **Weighted fusion**: each side's scores min-max normalised to [0, 1] over its own candidates, then
  ``alpha * dense + (1 - alpha) * lexical`` (a side that lacks ``d`` gives it 0).

Ties are broken by the best dense rank, then the best lexical rank, then the key: the order is total, so the
same inputs always give the same output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Hashable, Sequence

from .errors import InvalidArgument

RRF_K = 60  # the constant of the original paper, the common default
FUSION_DEPTH = 100  # candidates each side contributes at least (a query asking for more gets k of each)


class SearchMode(str, Enum):
    DENSE = "dense"      # cosine of the query's and the documents' vectors
    LEXICAL = "lexical"  # SQLite FTS5 bm25 over the texts
    HYBRID = "hybrid"    # both, fused


@dataclass(frozen=True)
class Ranked:
    """One key in a ranking: its 1-based rank and the score the ranking gave it (higher is better)."""

    key: Hashable
    rank: int
    score: float


@dataclass(frozen=True)
class Fused:
    """One fused result: its fused score, and where each side ranked it (None: that side did not return it)."""

    key: Hashable
    score: float
    dense: Ranked | None
    lexical: Ranked | None


def ranking(pairs: Sequence[tuple[Hashable, float]]) -> list[Ranked]:
    """``[(key, score), ...]`` best first as :class:`Ranked`; a repeated key keeps its first (best) place."""
    out, seen = [], set()
    for key, score in pairs:
        if key in seen:
            continue
        seen.add(key)
        out.append(Ranked(key, len(out) + 1, float(score)))
    return out


def rrf(dense: Sequence[Ranked], lexical: Sequence[Ranked], k: int = RRF_K) -> list[Fused]:
    """Reciprocal rank fusion of two rankings, best first."""
    if k < 0:
        raise InvalidArgument(f"the RRF constant must be >= 0, got {k}")
    return _fuse(dense, lexical, lambda d, l: (1.0 / (k + d.rank) if d else 0.0) + (1.0 / (k + l.rank) if l else 0.0))


def min_max(scores: Sequence[float]) -> list[float]:
    """Scores scaled to [0, 1] (the best 1, the worst 0); all equal (or one): all 1."""
    if not scores:
        return []
    low, high = min(scores), max(scores)
    if not high > low:
        return [1.0] * len(scores)
    return [(s - low) / (high - low) for s in scores]


def weighted(dense: Sequence[Ranked], lexical: Sequence[Ranked], alpha: float) -> list[Fused]:
    """``alpha * dense + (1 - alpha) * lexical`` of min-max normalised scores, best first."""
    if not (0.0 <= alpha <= 1.0) or math.isnan(alpha):
        raise InvalidArgument(f"alpha must be between 0 and 1, got {alpha}")
    dense_norm = dict(zip((r.key for r in dense), min_max([r.score for r in dense])))
    lexical_norm = dict(zip((r.key for r in lexical), min_max([r.score for r in lexical])))
    return _fuse(dense, lexical, lambda d, l: alpha * (dense_norm[d.key] if d else 0.0)
                 + (1.0 - alpha) * (lexical_norm[l.key] if l else 0.0))


def _fuse(dense: Sequence[Ranked], lexical: Sequence[Ranked], score) -> list[Fused]:
    by_dense = {r.key: r for r in dense}
    by_lexical = {r.key: r for r in lexical}
    keys = list(dict.fromkeys([*by_dense, *by_lexical]))
    fused = [Fused(key, score(by_dense.get(key), by_lexical.get(key)), by_dense.get(key), by_lexical.get(key))
             for key in keys]
    never = len(keys) + 1
    fused.sort(key=lambda f: (-f.score, f.dense.rank if f.dense else never, f.lexical.rank if f.lexical else never,
                              _order(f.key)))
    return fused


def _order(key: Hashable):
    return (0, key) if isinstance(key, (int, float)) else (1, str(key))


__all__ = ["FUSION_DEPTH", "RRF_K", "Fused", "Ranked", "SearchMode", "min_max", "ranking", "rrf", "weighted"]
