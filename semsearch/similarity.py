"""Cosine similarity on embedding matrices: the one place where rows are L2-normalised.

One rule for every caller, the encoder's own (torch's ``F.normalize``): a row is divided by
``max(‖row‖, 1e-12)``. A zero row therefore stays zero and has cosine 0 with every row, never NaN.
Norms are computed in slices of rows, so a large matrix needs no second full-size temporary.
"""

from __future__ import annotations

import numpy as np

from .errors import SemsearchError

EPS = 1e-12  # norms are clipped here: zero rows stay zero
_SLICE_VALUES = 1 << 20  # values per slice of rows (8 MB in float64)


def _matrix(matrix, dtype, copy: bool) -> np.ndarray:
    out = np.array(matrix, dtype=dtype) if copy else np.asarray(matrix, dtype=dtype)
    if out.ndim != 2:
        raise SemsearchError(f"expected a 2-d matrix of row vectors, got shape {tuple(out.shape)}")
    return out


def _step(matrix: np.ndarray) -> int:
    return max(1, _SLICE_VALUES // max(1, matrix.shape[1]))


def normalise_rows(matrix, *, copy: bool = True, dtype=np.float32) -> np.ndarray:
    """``matrix`` with each row scaled to unit length (float32 unless ``dtype`` says otherwise).

    Zero rows stay zero (the norm is clipped at 1e-12). With ``copy=False`` an input that already has
    ``dtype`` is normalised in place and returned; anything else is converted into a new array.
    """
    out = _matrix(matrix, dtype, copy)
    step = _step(out)
    for start in range(0, len(out), step):
        part = out[start:start + step]
        norms = np.linalg.norm(part, axis=1, keepdims=True)
        np.maximum(norms, EPS, out=norms)
        part /= norms
    return out


def inverse_norms(matrix) -> np.ndarray:
    """``1 / max(‖row‖, 1e-12)`` of each row, computed in float64 (0 stays 0 once multiplied)."""
    matrix = _matrix(matrix, None, copy=False)
    out = np.empty(len(matrix), dtype=np.float64)
    step = _step(matrix)
    for start in range(0, len(matrix), step):
        norms = np.linalg.norm(matrix[start:start + step].astype(np.float64), axis=1)
        out[start:start + step] = 1.0 / np.maximum(norms, EPS)
    return out


def cosine(a, b) -> np.ndarray:
    """Cosine (float64) of paired rows: ``a[i]`` with ``b[i]``, or each row of ``a`` with the vector ``b``."""
    a = _matrix(a, np.float64, copy=False)
    b = np.asarray(b, dtype=np.float64)
    if b.ndim == 1:
        return (a @ b) * inverse_norms(a) * inverse_norms(b[None, :])[0]
    b = _matrix(b, np.float64, copy=False)
    if a.shape != b.shape:
        raise SemsearchError(f"cosine of paired rows needs two matrices of one shape, got {a.shape} and {b.shape}")
    return np.einsum("ij,ij->i", a, b) * inverse_norms(a) * inverse_norms(b)


__all__ = ["EPS", "normalise_rows", "inverse_norms", "cosine"]
