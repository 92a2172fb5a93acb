"""VectorIndex: exact search against brute force, HNSW and IVF against exact, exclusions, padding and growth."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pytest
import scipy.sparse as sp

from tastemaker.candidates import AnnConfig, VectorIndex
from tastemaker.errors import NotFittedError, UnknownNameError

Kind = Literal["exact", "hnsw", "ivf"]


def clustered(items: int, dim: int, seed: int) -> np.ndarray:
    """Unit vectors around 50 centres: shaped like embeddings, unlike isotropic noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, dim))
    vectors = centres[rng.integers(0, 50, items)] + 0.5 * rng.standard_normal((items, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def brute_force(vectors: np.ndarray, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    scores = queries.astype(np.float64) @ vectors.astype(np.float64).T
    ids = np.argsort(-scores, axis=1, kind="stable")[:, :n]
    return ids, np.take_along_axis(scores, ids, axis=1)


def excluding(rows: list[list[int]], width: int) -> sp.csr_matrix:
    r = [i for i, cols in enumerate(rows) for _ in cols]
    c = [col for cols in rows for col in cols]
    return sp.csr_matrix((np.ones(len(c), np.float32), (r, c)), shape=(len(rows), width))


@pytest.fixture(scope="module")
def catalog() -> np.ndarray:
    return clustered(5_000, 16, seed=0)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return clustered(200, 16, seed=1)


@pytest.fixture(scope="module")
def indexes(catalog: np.ndarray) -> dict[str, VectorIndex]:
    """One index of each kind over the same catalog, built once (the HNSW build is the slow part)."""
    return {kind: VectorIndex(AnnConfig(threads=1)).build(catalog, kind=kind) for kind in ("exact", "hnsw", "ivf")}


def test_exact_search_equals_a_brute_force_argsort() -> None:
    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((500, 12)).astype(np.float32)  # not normalised: inner product, not cosine
    queries = rng.standard_normal((30, 12)).astype(np.float32)
    index = VectorIndex().build(vectors, kind="exact")
    for n in (1, 10, 500):
        ids, scores = index.search(queries, n)
        want_ids, want_scores = brute_force(vectors, queries, n)
        assert ids.shape == scores.shape == (30, n)
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_ann_agrees_with_exact_search(indexes: dict[str, VectorIndex], queries: np.ndarray, kind: Kind) -> None:
    assert indexes[kind].kind == kind
    for n in (10, 300):  # a deep request searches wider (ef_search, nprobe), so deep lists keep their recall
        exact, _ = indexes["exact"].search(queries, n)
        approx, scores = indexes[kind].search(queries, n)
        hits = sum(len(np.intersect1d(a, e)) for a, e in zip(approx, exact, strict=True))
        assert hits / exact.size >= 0.95, n
        assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
        np.testing.assert_allclose(scores, np.einsum("qd,qnd->qn", queries, indexes[kind].vectors[approx]), atol=1e-5)


def test_ivf_lists_are_sized_by_the_catalog_and_trained_reproducibly(catalog: np.ndarray) -> None:
    first = VectorIndex().build(catalog, kind="ivf")
    assert first._index.nlist == 128  # 4·√5000 = 283, capped at 5000 / 39 so every list trains on enough points
    assert VectorIndex(AnnConfig(ivf_lists=50)).build(catalog, kind="ivf")._index.nlist == 50
    again = VectorIndex().build(catalog, kind="ivf")
    query = catalog[:20]
    assert np.array_equal(first.search(query, 50)[0], again.search(query, 50)[0])


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivf"])
def test_excluded_items_are_never_returned_and_users_still_get_n(
    indexes: dict[str, VectorIndex], queries: np.ndarray, kind: Kind
) -> None:
    index, n = indexes[kind], 20
    top, _ = indexes["exact"].search(queries[:4], 200)
    rng = np.random.default_rng(3)
    rows = [
        top[0, :180].tolist(),  # most of this user's best 200 items: the first fetch comes up short
        [],
        rng.choice(5_000, 1_000, replace=False).tolist(),
        top[3, ::2].tolist(),  # every other item of the best 200
    ]
    exclude = excluding(rows, 5_000)
    ids, scores = index.search(queries[:4], n, exclude=exclude)
    assert ids.shape == (4, n) and (ids >= 0).all() and np.isfinite(scores).all()
    for row, banned in enumerate(rows):
        assert not set(ids[row]) & set(banned)
        assert len(set(ids[row])) == n
    # and what is left is still the best of what is allowed
    want, _ = indexes["exact"].search(queries[:4], n, exclude=exclude)
    assert np.mean([len(np.intersect1d(a, w)) / n for a, w in zip(ids, want, strict=True)]) >= 0.9
    if kind == "exact":
        np.testing.assert_array_equal(ids, want)
        np.testing.assert_array_equal(ids[0], top[0, 180 : 180 + n])


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivf"])
def test_one_query_at_a_time_finds_what_the_batch_finds(
    indexes: dict[str, VectorIndex], queries: np.ndarray, kind: Kind
) -> None:
    top, _ = indexes["exact"].search(queries[:6], 60)
    exclude = excluding([top[r, : 10 * r].tolist() for r in range(6)], 5_000)  # 0 to 50 excluded items
    batch = indexes[kind].search(queries[:6], 25, exclude=exclude)
    for r in range(6):
        one = indexes[kind].search(queries[r : r + 1], 25, exclude=exclude[r])
        np.testing.assert_array_equal(one[0][0], batch[0][r])
        np.testing.assert_allclose(one[1][0], batch[1][r], rtol=1e-5)  # BLAS sums a batch in another order


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivf"])
def test_a_user_who_excluded_almost_everything_gets_what_is_left(
    indexes: dict[str, VectorIndex], queries: np.ndarray, kind: Kind
) -> None:
    exclude = excluding([[i for i in range(5_000) if i not in (7, 70, 700)]], 5_000)
    ids, scores = indexes[kind].search(queries[:1], 5, exclude=exclude)
    assert sorted(ids[0, :3]) == [7, 70, 700] and ids[0, 3:].tolist() == [-1, -1]
    assert np.isfinite(scores[0, :3]).all() and np.isneginf(scores[0, 3:]).all()


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivf"])
def test_asking_for_more_than_the_catalog_pads_with_minus_one_and_minus_inf(kind: Kind) -> None:
    vectors = clustered(7, 8, seed=4)
    query = vectors[:1] + 0.1
    ids, scores = VectorIndex().build(vectors, kind=kind).search(query, 10)
    want, want_scores = brute_force(vectors, query, 7)
    assert ids[0, :7].tolist() == want[0].tolist() and ids[0, 7:].tolist() == [-1, -1, -1]
    np.testing.assert_allclose(scores[0, :7], want_scores[0], rtol=1e-5)
    assert np.isneginf(scores[0, 7:]).all()


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivf"])
def test_added_items_take_the_next_ids_and_are_searchable(kind: Kind) -> None:
    vectors = clustered(300, 8, seed=5)
    index = VectorIndex().build(vectors, kind=kind)
    new = 5.0 * np.eye(8, dtype=np.float32)[:3]  # longer than any unit item: each wins its own direction
    assert index.add(new).tolist() == [300, 301, 302]
    assert len(index) == 303 and np.array_equal(index.vectors[300:], new)
    ids, scores = index.search(np.eye(8, dtype=np.float32)[:3], 2)
    assert ids[:, 0].tolist() == [300, 301, 302]
    np.testing.assert_allclose(scores[:, 0], 5.0)
    # an exclusion matrix as wide as the catalog was before the add still applies
    ids, _ = index.search(np.eye(8, dtype=np.float32)[:1], 4, exclude=excluding([[0, 1, 2]], 300))
    assert ids[0, 0] == 300 and not {0, 1, 2} & set(ids[0])


def test_using_the_index_before_build_is_a_clear_error() -> None:
    index = VectorIndex()
    assert len(index) == 0
    for call in (lambda: index.search(np.zeros((1, 4)), 3), lambda: index.add(np.zeros((1, 4))), lambda: index.kind):
        with pytest.raises(NotFittedError, match="VectorIndex is not fitted yet"):
            call()


def test_auto_picks_exact_below_the_threshold_and_the_large_index_from_it() -> None:
    vectors = clustered(101, 8, seed=6)
    config = AnnConfig(exact_below=100)
    assert VectorIndex(config).build(vectors[:99]).kind == "exact"
    assert VectorIndex(config).build(vectors[:100]).kind == "ivf"
    assert VectorIndex(config.model_copy(update={"large": "hnsw"})).build(vectors[:100]).kind == "hnsw"
    assert VectorIndex(config).build(vectors[:100], kind="exact").kind == "exact"
    assert VectorIndex(AnnConfig(exact_below=0)).build(vectors[:5]).kind == "ivf"


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(UnknownNameError, match="unknown index kind 'flat'; known: auto, exact, hnsw, ivf"):
        VectorIndex().build(np.ones((3, 2)), kind="flat")  # type: ignore[arg-type]
