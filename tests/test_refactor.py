"""Issue 12's "while there" refactors: one home for similarity, formats, STS readers, typed errors, exports."""

from __future__ import annotations

import numpy as np
import pytest

from semsearch.errors import SemsearchError
from semsearch.similarity import cosine, inverse_norms, normalise_rows


# ------------------------------------------------------------------------------------------- similarity
def test_normalise_rows_gives_unit_float32_rows_and_keeps_zero_rows_zero():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [1e-3, 0.0]], dtype=np.float64)
    unit = normalise_rows(x)
    assert unit.dtype == np.float32
    np.testing.assert_allclose(unit, [[0.6, 0.8], [0.0, 0.0], [1.0, 0.0]], rtol=1e-6)
    assert not np.isnan(unit).any()
    np.testing.assert_array_equal(x[0], [3.0, 4.0])  # copy=True leaves the input alone


def test_normalise_rows_in_place_when_asked():
    x = np.array([[3.0, 4.0]], dtype=np.float32)
    out = normalise_rows(x, copy=False)
    assert out is x
    np.testing.assert_allclose(x, [[0.6, 0.8]], rtol=1e-6)


def test_normalise_rows_matches_the_old_formula_bit_for_bit():
    x = np.random.default_rng(0).standard_normal((50, 17)).astype(np.float32)
    old = x / np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)
    np.testing.assert_array_equal(normalise_rows(x), old)
    x64 = x.astype(np.float64)
    old64 = x64 / np.linalg.norm(x64, axis=1, keepdims=True).clip(min=1e-12)
    np.testing.assert_array_equal(normalise_rows(x64, dtype=np.float64), old64)


def test_normalise_rows_slices_give_the_same_result(monkeypatch):
    import semsearch.similarity as similarity

    x = np.random.default_rng(1).standard_normal((40, 9)).astype(np.float32)
    whole = normalise_rows(x)
    monkeypatch.setattr(similarity, "_SLICE_VALUES", 20)  # slices of 2 rows
    np.testing.assert_array_equal(normalise_rows(x), whole)
    np.testing.assert_array_equal(inverse_norms(x), 1.0 / np.linalg.norm(x.astype(np.float64), axis=1))


def test_normalise_rows_refuses_a_vector():
    with pytest.raises(SemsearchError, match="2-d matrix"):
        normalise_rows(np.ones(3))


def test_cosine_of_paired_rows_and_of_rows_with_one_vector():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    b = np.array([[2.0, 0.0], [-1.0, -1.0], [1.0, 0.0]])
    np.testing.assert_allclose(cosine(a, b), [1.0, -1.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(cosine(a, np.array([0.0, 3.0])), [0.0, 2 ** -0.5, 0.0], atol=1e-15)
    with pytest.raises(SemsearchError, match="one shape"):
        cosine(a, b[:2])
