"""Precomputed embeddings on disk: the one reader of ``.npy`` and Parquet vector files.

Two layouts are read (``semsearch index --embeddings FILE``, ``semsearch dedupe --embeddings FILE``):

* ``.npy``: a float matrix, ``n × d``; row ``i`` belongs to record ``i``. No ids.
* ``.parquet`` (``.pq``): an ``id`` column (strings or integers) and an ``embedding`` column holding a list of
  floats per row, all of one length.

Every row is checked (dimension, NaN or infinity, all zeros) and L2-normalised to float32. A problem is an
:class:`~semsearch.errors.InputError` naming the file and the row (1-based; for Parquet also the row's id).
The file is read in slices, so a memory-mapped ``.npy`` larger than memory needs only its float32 copy.

>>> emb = read_embeddings("vectors.parquet", dimension=384)
>>> emb.ids[:2], emb.vectors.shape
(['d1', 'd2'], (1000, 384))
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError
from .similarity import normalise_rows

SUFFIXES = {".npy": "npy", ".parquet": "parquet", ".pq": "parquet"}
ID_COLUMN, VECTOR_COLUMN = "id", "embedding"
_SLICE = 1 << 16  # rows converted at a time


@dataclass(frozen=True)
class Embeddings:
    """Vectors read from a file: float32, one unit row per record; the file's ids (Parquet) or None (.npy)."""

    ids: list[str] | None
    vectors: np.ndarray

    def __len__(self) -> int:
        return len(self.vectors)

    @property
    def dimension(self) -> int:
        return int(self.vectors.shape[1])


def embeddings_format(path: str | os.PathLike) -> str:
    """``"npy"`` or ``"parquet"`` from the file's suffix; an unknown suffix is an :class:`InputError`."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(path, f"cannot tell the embeddings format from {suffix or 'no suffix'!r}; "
                               "use a .npy matrix or a .parquet file with 'id' and 'embedding' columns")
    return SUFFIXES[suffix]


def read_embeddings(path: str | os.PathLike, *, dimension: int | None = None,
                    count: int | None = None) -> Embeddings:
    """Read, check and normalise the vectors of ``path``.

    ``dimension``: the length every row must have (the model's); ``count``: the number of rows there must be
    (the records they belong to). Either is checked only when given.
    """
    kind = embeddings_format(path)
    p = Path(path)
    if p.is_dir():
        raise InputError(p, "is a directory, not an embeddings file")
    if not p.exists():
        raise InputError(p, "no such file")
    if kind == "npy":
        return _read_npy(p, dimension, count)
    return _read_parquet(p, dimension, count)


# ----------------------------------------------------------------------------------------------- .npy
def _read_npy(path: Path, dimension: int | None, count: int | None) -> Embeddings:
    try:
        matrix = np.load(path, mmap_mode="r", allow_pickle=False)
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror or exc})") from None
    except ValueError as exc:  # not a .npy file, or an object array that would need pickle
        raise InputError(path, f"not a .npy array file ({_first_line(exc)})") from None
    if matrix.ndim != 2:
        raise InputError(path, f"expected a 2-d matrix (rows × dimensions), got shape {tuple(matrix.shape)}")
    if not np.issubdtype(matrix.dtype, np.floating):
        raise InputError(path, f"holds {matrix.dtype} values, not floats")
    n, d = matrix.shape
    _check_count(path, n, count)
    if n == 0:
        raise InputError(path, "holds no rows")
    if dimension is not None and d != dimension:
        raise InputError(path, f"row 1 has {d} values, expected {dimension} (the model's dimension)")
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, _SLICE):
        out[start:start + _SLICE] = _checked_unit_rows(path, matrix[start:start + _SLICE], start)
    return Embeddings(None, out)


# ----------------------------------------------------------------------------------------------- Parquet
def _read_parquet(path: Path, dimension: int | None, count: int | None) -> Embeddings:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(path, f"cannot be read as Parquet ({_first_line(exc)})") from None
    schema = parquet.schema_arrow
    for column in (ID_COLUMN, VECTOR_COLUMN):
        if column not in schema.names:
            raise InputError(path, f"no {column!r} column (columns: {', '.join(schema.names) or 'none'}); "
                                   f"expected {ID_COLUMN!r} and {VECTOR_COLUMN!r} (a list of floats per row)")
    vector_type = schema.field(VECTOR_COLUMN).type
    if not (_is_list(pa, vector_type) and pa.types.is_floating(vector_type.value_type)):
        raise InputError(path, f"column {VECTOR_COLUMN!r} is {vector_type}, not a list of floats")
    id_type = schema.field(ID_COLUMN).type
    if not (pa.types.is_string(id_type) or pa.types.is_large_string(id_type) or pa.types.is_integer(id_type)):
        raise InputError(path, f"column {ID_COLUMN!r} is {id_type}, not strings or integers")
    n = parquet.metadata.num_rows
    _check_count(path, n, count)
    if n == 0:
        raise InputError(path, "holds no rows")

    ids: list[str] = []
    seen: dict[str, int] = {}
    out: np.ndarray | None = None
    start = 0
    try:
        batches = parquet.iter_batches(batch_size=_SLICE, columns=[ID_COLUMN, VECTOR_COLUMN])
        for batch in batches:
            batch_ids = batch.column(ID_COLUMN)
            vectors = batch.column(VECTOR_COLUMN)
            names = [None if v is None else str(v) for v in batch_ids.to_pylist()]
            for offset, name in enumerate(names):
                row = start + offset + 1
                if name is None or name == "":
                    raise InputError(path, f"row {row}: no id")
                if name in seen:
                    raise InputError(path, f"row {row} (id {name!r}): the id repeats row {seen[name]}")
                seen[name] = row
            ids.extend(names)
            lengths = pc.list_value_length(vectors).to_numpy(zero_copy_only=False)
            missing = np.flatnonzero(pc.is_null(vectors).to_numpy(zero_copy_only=False))
            if len(missing):
                raise InputError(path, _at(start + int(missing[0]), names[missing[0]], "no embedding (null)"))
            if out is None:
                d = int(lengths[0]) if dimension is None else dimension
                if d == 0:
                    raise InputError(path, _at(start, names[0], "an empty embedding"))
                out = np.empty((n, d), dtype=np.float32)
            wrong = np.flatnonzero(lengths != out.shape[1])
            if len(wrong):
                i = int(wrong[0])
                expected = f"{out.shape[1]} (the model's dimension)" if dimension is not None else \
                    f"{out.shape[1]} like row 1"
                raise InputError(path, _at(start + i, names[i], f"{int(lengths[i])} values, expected {expected}"))
            values = vectors.flatten()
            if values.null_count:
                i = _first_null_row(values, out.shape[1])
                raise InputError(path, _at(start + i, names[i], "a null value in the embedding"))
            matrix = values.to_numpy(zero_copy_only=False).reshape(len(names), out.shape[1])
            out[start:start + len(names)] = _checked_unit_rows(path, matrix, start, names)
            start += len(names)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(path, f"cannot be read as Parquet (row {start + 1} on: {_first_line(exc)})") from None
    assert out is not None and start == n
    return Embeddings(ids, out)


def _is_list(pa, type_) -> bool:
    return pa.types.is_list(type_) or pa.types.is_large_list(type_) or pa.types.is_fixed_size_list(type_)


def _first_null_row(values, d: int) -> int:
    import pyarrow.compute as pc

    nulls = np.flatnonzero(pc.is_null(values).to_numpy(zero_copy_only=False))
    return int(nulls[0]) // d


# ----------------------------------------------------------------------------------------------- checks
def _check_count(path: Path, n: int, count: int | None) -> None:
    if count is None or n == count:
        return
    if n > count:
        raise InputError(path, f"row {count + 1} has no record: {n:,} rows for {count:,} records")
    raise InputError(path, f"{n:,} rows for {count:,} records: record {n + 1} has no row")


def _checked_unit_rows(path: Path, rows: np.ndarray, start: int, ids: list[str] | None = None) -> np.ndarray:
    """``rows`` as float32 unit vectors; a NaN/infinite or all-zero row is an error naming it."""
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf: caught below
        matrix = np.asarray(rows, dtype=np.float32)
    bad = ~np.isfinite(matrix).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(path, _at(start + i, ids[i] if ids else None,
                                   "NaN or infinity in the embedding (or a value beyond float32's range)"))
    unit = normalise_rows(matrix)
    zero = ~unit.any(axis=1)  # all zeros, or too small for float32 to normalise
    if zero.any():
        i = int(np.flatnonzero(zero)[0])
        raise InputError(path, _at(start + i, ids[i] if ids else None, "a zero vector (it has no direction)"))
    return unit


def _at(index: int, name: str | None, message: str) -> str:
    """``row N: message`` (1-based), with the id when the file has ids."""
    return f"row {index + 1}{f' (id {name!r})' if name is not None else ''}: {message}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


__all__ = ["Embeddings", "read_embeddings", "embeddings_format", "SUFFIXES"]


def check_matrix(matrix: np.ndarray, name: str = "<embeddings>", dimension: int | None = None) -> np.ndarray:
    """An in-memory matrix checked like a file's rows (2-d, dimension, NaN, zero rows) and normalised."""
    if matrix.ndim != 2:
        raise InputError(name, f"expected a 2-d matrix (rows × dimensions), got shape {tuple(matrix.shape)}")
    if dimension is not None and matrix.shape[1] != dimension:
        raise InputError(name, f"row 1 has {matrix.shape[1]} values, expected {dimension} (the model's dimension)")
    return _checked_unit_rows(Path(name), matrix, 0)
