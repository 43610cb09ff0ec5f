"""The vector store: a FAISS inner-product index whose ids are the documents' SQLite row ids.

Vectors are L2-normalised before they get here, so inner product is cosine similarity.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import faiss

DEFAULT_FACTORY = "IDMap2,Flat"


class VectorStore:
    """Thin wrapper over a FAISS index with explicit 64-bit ids."""

    def __init__(self, index: "faiss.Index", factory: str) -> None:
        self.index = index
        self.factory = factory

    @classmethod
    def create(cls, dimension: int, factory: str = DEFAULT_FACTORY) -> "VectorStore":
        import faiss

        return cls(faiss.index_factory(dimension, factory, faiss.METRIC_INNER_PRODUCT), factory)

    @classmethod
    def load(cls, path: Path, factory: str) -> "VectorStore":
        import faiss

        return cls(faiss.read_index(str(path)), factory)

    def save(self, path: Path) -> None:
        """Write to ``path`` and flush it to disk (the caller renames it into place)."""
        import faiss

        faiss.write_index(self.index, str(path))
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def dimension(self) -> int:
        return int(self.index.d)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32),
                                    np.asarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray) -> int:
        if len(ids) == 0:
            return 0
        return int(self.index.remove_ids(np.asarray(ids, dtype=np.int64)))

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, ids)`` of shape ``(len(queries), k)``; missing neighbours have id -1.

        ``allowed`` restricts the search to those ids, exactly: inside FAISS (an id selector) for flat
        indexes, by scoring the allowed vectors directly for the others.
        """
        import faiss

        queries = np.ascontiguousarray(queries, dtype=np.float32)
        limit = len(self) if allowed is None else len(allowed)
        k = max(1, min(k, limit))
        if allowed is None:
            return self.index.search(queries, k)
        if self.factory.endswith("Flat"):
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed))
            return self.index.search(queries, k, params=params)
        vectors = np.stack([self.index.reconstruct(int(i)) for i in allowed])
        scores = queries @ vectors.T
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, top, axis=1), allowed[top]

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """All ``(ids, vectors)`` stored, ids ascending (for mining without re-encoding)."""
        import faiss

        ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        flat = faiss.downcast_index(self.index.index)
        data = faiss.rev_swig_ptr(flat.get_xb(), len(ids) * self.dimension).reshape(len(ids), self.dimension)
        order = np.argsort(ids, kind="stable")
        return ids[order], np.array(data[order], dtype=np.float32)
