"""Request bodies of the JSON endpoints, validated by pydantic (a bad value is a 400 that names its field)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..errors import InvalidArgument

MAX_K = 1000
MAX_HITS = 100_000  # k times the number of queries, per request
MODES = ("dense",)  # hybrid (BM25 + dense) is not built yet: refused, not ignored


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchIn(_Strict):
    """``query`` (one text) or ``queries`` (several), and how to search."""

    query: str | None = None
    queries: list[str] | None = None
    k: int = Field(10, ge=1, le=MAX_K)
    threshold: float | None = Field(None, ge=-1.0, le=1.0)
    filters: list[str] = Field(default_factory=list, description='metadata conditions such as "lang=en"')
    nprobe: int | None = Field(None, ge=1)
    ef_search: int | None = Field(None, ge=1)
    mode: str = "dense"

    @field_validator("mode")
    @classmethod
    def _mode(cls, value: str) -> str:
        if value not in MODES:
            raise InvalidArgument(f"{value!r} is not available; this server searches: {', '.join(MODES)}")
        return value


class IdsIn(_Strict):
    ids: list[str] = Field(min_length=1)


class DocumentsIn(_Strict):
    """Documents to add or update: each an object with ``text``, an optional ``id``, and metadata fields."""

    documents: list[dict[str, Any]]


class DeleteIn(_Strict):
    """What to delete: ids, metadata conditions, or both (a document matching either goes)."""

    ids: list[str] = Field(default_factory=list)
    filters: list[str] = Field(default_factory=list)


class DedupeIn(_Strict):
    threshold: float = Field(0.8, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=1)
    keep: Literal["first", "longest"] = "first"
    mode: Literal["exact", "approximate"] = "exact"
    view: Literal["pairs", "clusters", "plan"] = "clusters"
