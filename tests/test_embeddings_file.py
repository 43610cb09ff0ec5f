"""The precomputed-embeddings reader: .npy and Parquet round trips, and every bad file as one clear line."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from semsearch.embeddings_file import Embeddings, read_embeddings
from semsearch.errors import InputError


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def matrix() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32) * 3


def save_npy(tmp_path, array, name="emb.npy") -> str:
    path = tmp_path / name
    np.save(path, array)
    return str(path)


def save_parquet(tmp_path, ids, vectors, name="emb.parquet", vector_type=None, id_type=None, **extra) -> str:
    vector_type = vector_type or pa.list_(pa.float32())
    columns = {"id": pa.array(ids, type=id_type), "embedding": pa.array(vectors, type=vector_type)}
    columns.update({k: pa.array(v) for k, v in extra.items()})
    path = tmp_path / name
    pq.write_table(pa.table(columns), path)
    return str(path)


def error(path, **kwargs) -> str:
    with pytest.raises(InputError) as info:
        read_embeddings(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path) + ": ")
    return message[len(str(path)) + 2:]


# ------------------------------------------------------------------------------------------------ reading
def test_npy_round_trip_normalises_rows(tmp_path, matrix):
    emb = read_embeddings(save_npy(tmp_path, matrix), dimension=5, count=7)
    assert isinstance(emb, Embeddings) and emb.ids is None and len(emb) == 7 and emb.dimension == 5
    assert emb.vectors.dtype == np.float32 and emb.vectors.flags.c_contiguous
    np.testing.assert_allclose(emb.vectors, unit(matrix), atol=1e-6)


def test_npy_float64_and_float16_are_read(tmp_path, matrix):
    for dtype in (np.float64, np.float16):
        emb = read_embeddings(save_npy(tmp_path, matrix.astype(dtype)))
        np.testing.assert_allclose(emb.vectors, unit(matrix.astype(dtype)), atol=1e-6)


def test_npy_in_several_slices(tmp_path, monkeypatch):
    import semsearch.embeddings_file as module

    monkeypatch.setattr(module, "_SLICE", 3)
    x = np.random.default_rng(1).normal(size=(10, 4))
    x[7] = 0
    with pytest.raises(InputError, match=r"row 8: a zero vector"):
        read_embeddings(save_npy(tmp_path, x))
    x[7] = 1
    np.testing.assert_allclose(read_embeddings(save_npy(tmp_path, x)).vectors, unit(x), atol=1e-6)


def test_parquet_round_trip_keeps_ids_in_order(tmp_path, matrix):
    ids = [f"d{i}" for i in range(7)]
    emb = read_embeddings(save_parquet(tmp_path, ids, matrix.tolist(), extra_column=list(range(7))), dimension=5,
                          count=7)
    assert emb.ids == ids
    np.testing.assert_allclose(emb.vectors, unit(matrix), atol=1e-6)


@pytest.mark.parametrize("vector_type", [pa.list_(pa.float64()), pa.large_list(pa.float32()),
                                         pa.list_(pa.float32(), 5)])
def test_parquet_list_types(tmp_path, matrix, vector_type):
    emb = read_embeddings(save_parquet(tmp_path, list("abcdefg"), matrix.tolist(), vector_type=vector_type))
    np.testing.assert_allclose(emb.vectors, unit(matrix), atol=1e-6)


def test_parquet_integer_ids_become_strings(tmp_path, matrix):
    emb = read_embeddings(save_parquet(tmp_path, list(range(10, 17)), matrix.tolist()))
    assert emb.ids == [str(i) for i in range(10, 17)]


def test_parquet_in_several_batches(tmp_path, monkeypatch):
    import semsearch.embeddings_file as module

    monkeypatch.setattr(module, "_SLICE", 4)
    x = np.random.default_rng(2).normal(size=(11, 3))
    ids = [f"x{i}" for i in range(11)]
    path = save_parquet(tmp_path, ids, x.tolist())
    emb = read_embeddings(path)
    assert emb.ids == ids
    np.testing.assert_allclose(emb.vectors, unit(x), atol=1e-6)
    x[9, 1] = np.nan
    assert error(save_parquet(tmp_path, ids, x.tolist())) == \
        "row 10 (id 'x9'): NaN or infinity in the embedding (or a value beyond float32's range)"


# ------------------------------------------------------------------------------------------------ bad files
def test_wrong_dimension(tmp_path, matrix):
    assert error(save_npy(tmp_path, matrix), dimension=8) == "row 1 has 5 values, expected 8 (the model's dimension)"
    path = save_parquet(tmp_path, list("abcdefg"), matrix.tolist())
    assert error(path, dimension=8) == "row 1 (id 'a'): 5 values, expected 8 (the model's dimension)"


def test_ragged_parquet_rows(tmp_path, matrix):
    rows = matrix.tolist()
    rows[4] = rows[4][:3]
    assert error(save_parquet(tmp_path, list("abcdefg"), rows)) == "row 5 (id 'e'): 3 values, expected 5 like row 1"


def test_wrong_row_count(tmp_path, matrix):
    path = save_npy(tmp_path, matrix)
    assert error(path, count=5) == "row 6 has no record: 7 rows for 5 records"
    assert error(path, count=9) == "7 rows for 9 records: record 8 has no row"
    assert error(save_parquet(tmp_path, list("abcdefg"), matrix.tolist()), count=6) == \
        "row 7 has no record: 7 rows for 6 records"


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_or_infinite_row(tmp_path, matrix, value):
    matrix[3, 2] = value
    assert error(save_npy(tmp_path, matrix)) == \
        "row 4: NaN or infinity in the embedding (or a value beyond float32's range)"
    assert error(save_parquet(tmp_path, list("abcdefg"), matrix.tolist())) == \
        "row 4 (id 'd'): NaN or infinity in the embedding (or a value beyond float32's range)"


def test_float64_beyond_float32_range(tmp_path, matrix):
    big = matrix.astype(np.float64)
    big[2, 0] = 1e300
    assert error(save_npy(tmp_path, big)).startswith("row 3: NaN or infinity")


def test_zero_row(tmp_path, matrix):
    matrix[6] = 0
    assert error(save_npy(tmp_path, matrix)) == "row 7: a zero vector (it has no direction)"
    assert error(save_parquet(tmp_path, list("abcdefg"), matrix.tolist())) == \
        "row 7 (id 'g'): a zero vector (it has no direction)"


def test_missing_columns(tmp_path, matrix):
    path = tmp_path / "emb.parquet"
    pq.write_table(pa.table({"id": list("abcdefg"), "vector": matrix.tolist()}), path)
    assert error(path) == ("no 'embedding' column (columns: id, vector); expected 'id' and 'embedding' "
                           "(a list of floats per row)")
    pq.write_table(pa.table({"key": list("abcdefg"), "embedding": matrix.tolist()}), path)
    assert error(path).startswith("no 'id' column (columns: key, embedding)")


def test_wrong_column_types(tmp_path, matrix):
    path = tmp_path / "emb.parquet"
    pq.write_table(pa.table({"id": list("abcdefg"), "embedding": [str(r) for r in matrix.tolist()]}), path)
    assert error(path) == "column 'embedding' is string, not a list of floats"
    pq.write_table(pa.table({"id": [[1]] * 7, "embedding": matrix.tolist()}), path)
    message = error(path)
    assert message.startswith("column 'id' is list<") and message.endswith("int64>, not strings or integers")


def test_null_id_duplicate_id_null_embedding(tmp_path, matrix):
    rows = matrix.tolist()
    assert error(save_parquet(tmp_path, ["a", "b", None, "d", "e", "f", "g"], rows)) == "row 3: no id"
    assert error(save_parquet(tmp_path, ["a", "b", "c", "b", "e", "f", "g"], rows)) == \
        "row 4 (id 'b'): the id repeats row 2"
    rows[5] = None
    assert error(save_parquet(tmp_path, list("abcdefg"), rows)) == "row 6 (id 'f'): no embedding (null)"
    rows = matrix.tolist()
    rows[2][1] = None
    assert error(save_parquet(tmp_path, list("abcdefg"), rows)) == "row 3 (id 'c'): a null value in the embedding"


@pytest.mark.parametrize("shape", [(7,), (2, 3, 4)])
def test_not_two_dimensional(tmp_path, shape):
    assert error(save_npy(tmp_path, np.ones(shape, np.float32))) == \
        f"expected a 2-d matrix (rows × dimensions), got shape {shape}"


def test_integer_matrix_and_empty_matrix(tmp_path):
    assert error(save_npy(tmp_path, np.ones((3, 4), np.int64))) == "holds int64 values, not floats"
    assert error(save_npy(tmp_path, np.ones((0, 4), np.float32))) == "holds no rows"


def test_unreadable_files(tmp_path):
    for name in ("garbage.npy", "garbage.parquet"):
        (tmp_path / name).write_bytes(b"this is not an array file\n")
    assert error(tmp_path / "garbage.npy").startswith("not a .npy array file (")
    assert error(tmp_path / "garbage.parquet").startswith("cannot be read as Parquet (")
    assert error(tmp_path / "absent.npy") == "no such file"
    (tmp_path / "folder.npy").mkdir()
    assert error(tmp_path / "folder.npy") == "is a directory, not an embeddings file"


def test_object_array_is_refused_without_unpickling(tmp_path):
    path = tmp_path / "objects.npy"
    np.save(path, np.array([[object()]], dtype=object), allow_pickle=True)
    assert error(path).startswith("not a .npy array file (")


def test_unknown_suffix(tmp_path, matrix):
    path = tmp_path / "emb.csv"
    path.write_text("1,2,3\n")
    assert error(path) == ("cannot tell the embeddings format from '.csv'; use a .npy matrix or a .parquet file "
                           "with 'id' and 'embedding' columns")
