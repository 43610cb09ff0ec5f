"""Vector maths shared by every module that compares embeddings."""

from __future__ import annotations

import numpy as np

from .errors import SemsearchError


def normalise_rows(matrix, *, copy: bool = True) -> np.ndarray:
    """Rows of ``matrix`` scaled to unit L2 norm, as float32; a zero row stays zero.

    With ``copy=False`` a float32, C-contiguous, writable input is normalised in place and returned.
    """
    out = np.array(matrix, dtype=np.float32, order="C", copy=True if copy else None)
    if out.ndim != 2:
        raise SemsearchError(f"expected a 2-d matrix, got shape {out.shape}")
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out


__all__ = ["normalise_rows"]
