"""The request path's sparse helpers agree with scipy and with the dense top-n on random matrices."""

from __future__ import annotations

from unittest.mock import patch

import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from tastemaker.candidates.base import Rows, UserRows, as_rows, local_columns, sparse_top_n, take_rows, top_n


@st.composite
def matrices(draw: st.DrawFn) -> sp.csr_matrix:
    rows = draw(st.integers(1, 6))
    cols = draw(st.integers(1, 12))
    density = draw(st.floats(0, 1))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    dense = np.where(rng.random((rows, cols)) < density, rng.integers(-2, 4, (rows, cols)), 0).astype(np.float32)
    matrix = sp.csr_matrix(dense)
    if draw(st.booleans()) and matrix.nnz:  # a stored zero, which excludes nothing
        matrix.data[0] = 0.0
    return matrix


@given(matrices(), st.data())
@settings(max_examples=200, deadline=None)
def test_take_rows_narrow_nonzero_match_scipy(matrix: sp.csr_matrix, data: st.DataObject) -> None:
    picked = np.array(data.draw(st.lists(st.integers(0, matrix.shape[0] - 1), max_size=8)), dtype=np.int64)
    width = data.draw(st.integers(0, matrix.shape[1] + 2))
    got = take_rows(matrix, picked)
    assert got.shape == (len(picked), matrix.shape[1])
    assert np.array_equal(got.csr().toarray(), matrix[picked].toarray())
    narrow = got.narrow(width)
    assert narrow.shape[1] == min(width, matrix.shape[1])
    assert np.array_equal(narrow.csr().toarray(), matrix[picked][:, :width].toarray())
    clean = got.nonzero()
    assert clean.data.all()
    assert np.array_equal(clean.csr().toarray(), got.csr().toarray())


@given(matrices(), st.data())
@settings(max_examples=200, deadline=None)
def test_lookup_and_contains(matrix: sp.csr_matrix, data: st.DataObject) -> None:
    matrix.sort_indices()
    rows = as_rows(matrix)
    dense = matrix.toarray()
    r = np.array(data.draw(st.lists(st.integers(0, matrix.shape[0] - 1), max_size=10)), dtype=np.int64)
    c = np.array(
        data.draw(st.lists(st.integers(0, matrix.shape[1] - 1), min_size=len(r), max_size=len(r))), dtype=np.int64
    )
    assert np.array_equal(rows.lookup(r, c), dense[r, c])
    ids = np.array(
        data.draw(st.lists(st.integers(-1, matrix.shape[1] + 1), min_size=3, max_size=3)) * matrix.shape[0]
    ).reshape(matrix.shape[0], 3)
    stored = rows.nonzero()
    expected = np.array(
        [[0 <= i < matrix.shape[1] and dense[row, i] != 0 for i in ids[row]] for row in range(len(ids))], dtype=bool
    )
    assert np.array_equal(stored.contains(ids), expected)


@given(matrices(), st.integers(0, 2**31), st.integers(1, 14))
@settings(max_examples=200, deadline=None)
def test_sparse_top_n_is_the_dense_top_n_over_stored_entries(scores: sp.csr_matrix, seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    scores.data = rng.permutation(scores.nnz).astype(np.float32) - scores.nnz / 2  # distinct: one right answer
    banned = rng.random(scores.shape) < 0.3
    exclude = sp.csr_matrix(banned.astype(np.float32))
    dense = np.full(scores.shape, -np.inf, np.float32)
    coo = scores.tocoo()
    dense[coo.row, coo.col] = coo.data
    got, expected = sparse_top_n(scores, n, exclude), top_n(dense, n, exclude)
    assert np.array_equal(got[0], expected[0])
    assert np.array_equal(got[1], expected[1])


def test_local_columns_maps_into_the_pool() -> None:
    matrix = sp.csr_matrix(np.array([[0, 1, 2, 0, 3], [4, 0, 0, 5, 0]], np.float32))
    position = np.array([-1, 0, -1, 1, 2])  # items 1, 3, 4 form the pool
    got = local_columns(matrix, position, 3)
    assert isinstance(got, Rows)
    assert got.csr().toarray().tolist() == [[1, 0, 3], [0, 5, 0]]


def test_an_exclusion_wider_than_the_scores_never_hides_another_users_item() -> None:
    scores = sp.csr_matrix(np.array([[5, 4, 3, 2, 1], [5, 4, 3, 2, 1]], np.float32))
    exclude = sp.csr_matrix(([1.0], ([0], [6])), shape=(2, 8))  # user 0 excludes item 6, beyond the scores
    ids, _ = sparse_top_n(scores, 5, exclude)
    assert ids.tolist() == [[0, 1, 2, 3, 4], [0, 1, 2, 3, 4]]


@given(st.integers(0, 2**31), st.integers(1, 40), st.sampled_from([1, 3, 256]))
@settings(max_examples=60, deadline=None)
def test_user_rows_changed_grown_and_merged_read_as_the_dense_matrix(seed: int, steps: int, merge_at: int) -> None:
    """Fold-ins replace rows (kept beside the matrix, merged once there are many), add users and items; every
    read (rows, lengths, the merged matrix) is what the same changes to a dense matrix give, and a change never
    alters an earlier ``UserRows``."""
    rng = np.random.default_rng(seed)
    dense = np.where(rng.random((5, 6)) < 0.4, rng.integers(1, 5, (5, 6)), 0).astype(np.float32)
    rows = UserRows(sp.csr_matrix(dense))
    history = [(rows, dense.copy())]
    with patch("tastemaker.candidates.base._MERGE_AT", merge_at):
        for _ in range(steps):
            if rng.random() < 0.2:  # users or items join
                grown = np.zeros((dense.shape[0] + int(rng.integers(0, 3)), dense.shape[1] + int(rng.integers(0, 3))),
                                 np.float32)  # fmt: skip
                grown[: dense.shape[0], : dense.shape[1]] = dense
                dense, rows = grown, rows.grown(*grown.shape)
            else:
                changed = rng.choice(dense.shape[0], size=int(rng.integers(1, dense.shape[0] + 1)), replace=False)
                values = np.where(rng.random((len(changed), dense.shape[1])) < 0.5,
                                  rng.integers(1, 9, (len(changed), dense.shape[1])), 0).astype(np.float32)  # fmt: skip
                dense = dense.copy()
                dense[changed] = values
                rows = rows.replaced(changed, sp.csr_matrix(values[:, ::-1])[:, ::-1])  # unsorted columns given
            history.append((rows, dense.copy()))
    for kept, expected in history:
        asked = rng.integers(0, expected.shape[0], size=int(rng.integers(0, 7)))
        got = kept.take(asked)
        assert got.shape == (len(asked), expected.shape[1])
        np.testing.assert_array_equal(got.csr().toarray(), expected[asked])
        assert all((np.diff(got.indices[a:b]) > 0).all() for a, b in zip(got.indptr[:-1], got.indptr[1:], strict=True))
        np.testing.assert_array_equal(kept.lengths(asked), (expected[asked] != 0).sum(axis=1))
        np.testing.assert_array_equal(kept.merged().toarray(), expected)
