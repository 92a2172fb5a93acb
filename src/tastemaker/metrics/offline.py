"""Offline ranking and beyond-accuracy metrics, vectorised over users.

Inputs share one shape: ``recs`` is ``(n_users, k)`` item indices best first, padded with -1;
``relevant`` is a sparse ``(n_users, n_items)`` matrix whose non-zeros are each user's relevant items
(binary relevance). Per-user functions return one value per row; the caller averages over the users it
evaluates (users with no hit count as 0). Definitions follow Microsoft Recommenders' python_evaluation:

* precision@k = hits / k; recall@k = hits / |relevant|
* nDCG@k = sum(1/log2(rank+1) over hits) / sum(1/log2(i+1), i = 1..min(|relevant|, k))
* MAP = sum(precision@rank over hit ranks) / |relevant|; MAP@k divides by min(|relevant|, k)
* hit rate@k = 1 if any hit; MRR = 1 / rank of the first hit within k (0 if none)
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = [
    "average_precision",
    "catalog_coverage",
    "exposure_gini",
    "hit_rate",
    "hits",
    "intra_list_diversity",
    "ndcg",
    "novelty",
    "precision",
    "recall",
    "reciprocal_rank",
]


def hits(recs: np.ndarray, relevant: sp.csr_matrix) -> np.ndarray:
    """Boolean ``(n_users, k)``: whether each recommended item is relevant to its user."""
    recs = np.asarray(recs)
    n_items = relevant.shape[1]
    rel = sp.csr_matrix(relevant)
    rel.sum_duplicates()
    rows, cols = rel.nonzero()
    rel_codes = np.sort(rows.astype(np.int64) * n_items + cols)
    rec_codes = np.arange(recs.shape[0], dtype=np.int64)[:, None] * n_items + recs
    return (recs >= 0) & np.isin(rec_codes, rel_codes)


def _n_relevant(relevant: sp.csr_matrix) -> np.ndarray:
    rel = sp.csr_matrix(relevant)
    rel.sum_duplicates()
    return np.diff(rel.indptr).astype(np.float64)


def precision(h: np.ndarray, k: int) -> np.ndarray:
    return h[:, :k].sum(axis=1) / k


def recall(h: np.ndarray, relevant: sp.csr_matrix) -> np.ndarray:
    n_rel = _n_relevant(relevant)
    return np.divide(h.sum(axis=1), n_rel, out=np.zeros(len(n_rel)), where=n_rel > 0)


def ndcg(h: np.ndarray, relevant: sp.csr_matrix, k: int) -> np.ndarray:
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (h[:, :k] * discounts[: h.shape[1]]).sum(axis=1)
    ideal_n = np.minimum(_n_relevant(relevant), k).astype(np.int64)
    idcg = np.concatenate([[0.0], np.cumsum(discounts)])[ideal_n]
    return np.divide(dcg, idcg, out=np.zeros(len(dcg)), where=idcg > 0)


def average_precision(h: np.ndarray, relevant: sp.csr_matrix, k: int, *, at_k: bool = False) -> np.ndarray:
    """Average precision per user: over |relevant| (Recommenders' MAP) or min(|relevant|, k) if ``at_k``."""
    h = h[:, :k]
    ranks = np.arange(1, h.shape[1] + 1)
    precision_at_hits = np.where(h, np.cumsum(h, axis=1) / ranks, 0.0).sum(axis=1)
    n_rel = _n_relevant(relevant)
    denominator = np.minimum(n_rel, k) if at_k else n_rel
    return np.divide(precision_at_hits, denominator, out=np.zeros(len(n_rel)), where=denominator > 0)


def hit_rate(h: np.ndarray) -> np.ndarray:
    return h.any(axis=1).astype(np.float64)


def reciprocal_rank(h: np.ndarray) -> np.ndarray:
    first = np.argmax(h, axis=1)
    return np.where(h.any(axis=1), 1.0 / (first + 1), 0.0)


def catalog_coverage(recs: np.ndarray, catalog: np.ndarray) -> float:
    """Share of ``catalog`` (item indices, e.g. the items seen in training) that appears in any list."""
    shown = np.unique(recs[recs >= 0])
    return float(np.isin(catalog, shown).sum() / max(len(catalog), 1))


def novelty(recs: np.ndarray, item_user_counts: np.ndarray, n_users: int) -> float:
    """Mean self-information ``-log2(users(i) / n_users)`` of the recommended items, over all slots.

    An item no training user touched counts as touched by one (so its novelty is finite and maximal).
    """
    shown = recs[recs >= 0]
    if shown.size == 0:
        return 0.0
    share = np.maximum(item_user_counts[shown], 1) / n_users
    return float(np.mean(-np.log2(share)))


def intra_list_diversity(recs: np.ndarray, item_categories: sp.csr_matrix) -> np.ndarray:
    """Per list: mean over item pairs of ``1 - Jaccard(categories)``; NaN for lists under two items.

    Two items without any category count as identical (distance 0).
    """
    cats = sp.csr_matrix(item_categories, dtype=np.float64)
    cats.data[:] = 1.0
    out = np.full(recs.shape[0], np.nan)
    for row in range(recs.shape[0]):
        items = recs[row][recs[row] >= 0]
        if len(items) < 2:
            continue
        m = cats[items]
        inter = (m @ m.T).toarray()
        size = np.asarray(m.sum(axis=1)).ravel()
        union = size[:, None] + size[None, :] - inter
        sim = np.divide(inter, union, out=np.ones_like(inter), where=union > 0)
        iu = np.triu_indices(len(items), 1)
        out[row] = float(np.mean(1.0 - sim[iu]))
    return out


def category_coverage(recs: np.ndarray, item_categories: sp.csr_matrix) -> np.ndarray:
    """Per list: the share of the catalog's categories (those any item has) that the list's items cover."""
    cats = sp.csr_matrix(item_categories, dtype=bool)
    total = int((np.diff(cats.tocsc().indptr) > 0).sum())
    out = np.zeros(recs.shape[0])
    if total == 0:
        return out
    for row in range(recs.shape[0]):
        items = recs[row][recs[row] >= 0]
        out[row] = len(np.unique(cats[items].indices)) / total
    return out


def exposure_gini(recs: np.ndarray, catalog: np.ndarray) -> float:
    """Gini of how often each ``catalog`` item appears across all lists: 0 even, towards 1 concentrated."""
    shown = recs[recs >= 0]
    counts = np.bincount(shown, minlength=int(max(catalog.max(initial=-1), shown.max(initial=-1)) + 1))
    x = np.sort(counts[catalog].astype(np.float64))
    n = len(x)
    if n == 0 or x.sum() == 0:
        return 0.0
    i = np.arange(1, n + 1)
    return float(((2 * i - n - 1) * x).sum() / (n * x.sum()))
