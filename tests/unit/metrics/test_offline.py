"""Offline metrics on tiny cases worked out by hand (the arithmetic is written out, not recomputed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from tastemaker.metrics import offline as m

L2, L3, L4 = math.log2(2), math.log2(3), math.log2(4)

# Three users, k = 3, ten items.
#   A: recs 1 2 3, relevant {2, 3, 9} -> hits at ranks 2 and 3
#   B: recs 4 5 -, relevant {4}       -> hit at rank 1 (list padded with -1)
#   C: recs 6 7 8, relevant {0, 1, 2, 3, 4} -> no hit
RECS = np.array([[1, 2, 3], [4, 5, -1], [6, 7, 8]])
REL = sp.csr_matrix((np.ones(9), ([0, 0, 0, 1, 2, 2, 2, 2, 2], [2, 3, 9, 4, 0, 1, 2, 3, 4])), shape=(3, 10))


@pytest.fixture
def h() -> np.ndarray:
    return m.hits(RECS, REL)


def test_hits_mark_relevant_slots_and_never_padding(h: np.ndarray) -> None:
    assert h.tolist() == [[False, True, True], [True, False, False], [False, False, False]]


def test_precision_and_recall(h: np.ndarray) -> None:
    assert m.precision(h, 3) == pytest.approx([2 / 3, 1 / 3, 0])
    assert m.recall(h, REL) == pytest.approx([2 / 3, 1, 0])


def test_ndcg_counts_unreachable_relevant_items_in_the_ideal(h: np.ndarray) -> None:
    a = (1 / L3 + 1 / L4) / (1 / L2 + 1 / L3 + 1 / L4)  # three relevant: ideal fills all three slots
    assert m.ndcg(h, REL, 3) == pytest.approx([a, 1.0, 0.0])


def test_map_divides_by_relevant_count_and_map_at_k_by_its_cap() -> None:
    # One user, five relevant items, hits at ranks 1 and 3 of k = 3: precisions 1/1 and 2/3.
    recs = np.array([[0, 7, 1]])
    rel = sp.csr_matrix((np.ones(5), ([0] * 5, [0, 1, 2, 3, 4])), shape=(1, 10))
    h = m.hits(recs, rel)
    assert m.average_precision(h, rel, 3) == pytest.approx([(1 + 2 / 3) / 5])
    assert m.average_precision(h, rel, 3, at_k=True) == pytest.approx([(1 + 2 / 3) / 3])


def test_average_precision_of_the_three_users(h: np.ndarray) -> None:
    assert m.average_precision(h, REL, 3) == pytest.approx([(1 / 2 + 2 / 3) / 3, 1.0, 0.0])


def test_hit_rate_and_reciprocal_rank(h: np.ndarray) -> None:
    assert m.hit_rate(h).tolist() == [1.0, 1.0, 0.0]
    assert m.reciprocal_rank(h) == pytest.approx([1 / 2, 1.0, 0.0])


def test_catalog_coverage_counts_catalog_items_shown() -> None:
    assert m.catalog_coverage(RECS, np.arange(10)) == pytest.approx(8 / 10)
    assert m.catalog_coverage(RECS, np.arange(5)) == pytest.approx(4 / 5)  # items 1-4 of 0-4


def test_novelty_is_mean_self_information_with_unseen_items_floored_at_one_user() -> None:
    counts = np.array([4, 2, 1, 0])  # of 4 users: shares 1, 1/2, 1/4, and 0 -> floored to 1/4
    assert m.novelty(np.array([[0, 1], [2, 3]]), counts, 4) == pytest.approx((0 + 1 + 2 + 2) / 4)


def test_intra_list_diversity_by_category_jaccard() -> None:
    cats = sp.csr_matrix(np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1]]))  # {A}, {A,B}, {C}
    ild = m.intra_list_diversity(np.array([[0, 1, 2], [0, -1, -1]]), cats)
    assert ild[0] == pytest.approx((0.5 + 1 + 1) / 3)  # pairs: 1 - 1/2, 1 - 0, 1 - 0
    assert np.isnan(ild[1])  # one item: no pairs


def test_category_coverage_is_the_share_of_categories_a_list_covers() -> None:
    cats = sp.csr_matrix(np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]))  # D has no item
    cover = m.category_coverage(np.array([[0, 1, 2], [0, -1, -1], [3, -1, -1]]), cats)
    assert cover.tolist() == pytest.approx([1.0, 1 / 3, 0.0])


def test_exposure_gini_from_even_to_concentrated() -> None:
    catalog = np.arange(3)
    assert m.exposure_gini(np.array([[0, 1, 2], [2, 1, 0]]), catalog) == pytest.approx(0.0)
    # counts sorted 0, 0, 10: sum((2i - n - 1) x) / (n sum x) = (2*3 - 4) * 10 / 30
    assert m.exposure_gini(np.array([[2]] * 10), catalog) == pytest.approx(2 / 3)
