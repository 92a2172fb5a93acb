"""ItemKNN: neighbours of recent items, their weights, the reason per item, exclusions and fold-in."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from tastemaker.candidates import History
from tastemaker.candidates.item_knn import ItemKNN, ItemKNNConfig, rp3_similarity, sequence_similarity
from tastemaker.data import Dataset, Snapshot
from tastemaker.errors import ConfigError, DataFormatError, NotFittedError

DAY_US = 86_400 * 1_000_000
CATALOG = ["a", "b", "c", "d", "e", "f", "g", "h"]  # e..h only in the catalog: BM25's idf needs room


def snapshot(pairs: list[tuple[str, str, int]]) -> Snapshot:
    inter = pd.DataFrame(pairs, columns=["user_id", "item_id", "timestamp_us"]).assign(weight=1.0, rating=np.nan)
    inter["last_timestamp_us"] = inter["timestamp_us"]
    return Snapshot.from_interactions(inter, pd.DataFrame({"item_id": CATALOG}))


def two_pairs() -> Snapshot:
    # a goes with b, c goes with d; t saw a long ago and c ten days later
    pairs = [("u1", "a", 0), ("u1", "b", 0), ("u2", "a", 0), ("u2", "b", 0)]
    pairs += [("u3", "c", 0), ("u3", "d", 0), ("u4", "c", 0), ("u4", "d", 0)]
    return snapshot([*pairs, ("t", "a", 0), ("t", "c", 10 * DAY_US), ("s", "a", 0)])


def events(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp_us"])
    return frame.assign(event_id=[f"e{i}" for i in range(len(rows))], type="view", value=np.nan)


@pytest.mark.parametrize("similarity", ["cosine", "bm25", "rp3", "sequence"])
def test_a_user_who_saw_a_gets_b_first_because_of_a(similarity: str) -> None:
    snap = two_pairs()
    knn = ItemKNN(ItemKNNConfig(similarity=similarity)).fit(snap)
    s = knn.user_index("s")
    ids, scores = knn.candidates(s, 3, exclude=snap.matrix[s])
    # b shares two users with a, c only t; d is no neighbour of a, so it is not proposed at all
    assert ids.tolist() == [[1, 2, -1]]
    assert scores[0, 0] > scores[0, 1] > 0 and np.isneginf(scores[0, 2])
    assert knn.because(s, ids).tolist() == [[0, 0, -1]]
    with pytest.raises(DataFormatError, match=r"items has shape \(3,\); expected \(1, n\)"):
        knn.because(s, ids[0])
    # neighbour rows in any order (an artifact written before they were sorted): the same reasons
    every = np.array([[1, 2, 0, 3, -1, 7]])
    expected = knn.because(s, every)
    order = np.concatenate([np.arange(a, b)[::-1] for a, b in zip(knn.similarity.indptr[:-1],
                                                                   knn.similarity.indptr[1:], strict=True)])
    knn.similarity = sp.csr_matrix((knn.similarity.data[order], knn.similarity.indices[order],
                                    knn.similarity.indptr), shape=knn.similarity.shape)  # fmt: skip
    knn.similarity.has_sorted_indices = False  # (a row of one neighbour reads as sorted either way)
    assert knn.because(s, every).tolist() == expected.tolist()


def test_scores_sum_similarities_and_a_half_life_favours_the_newer_item() -> None:
    snap = two_pairs()
    plain = ItemKNN(ItemKNNConfig(similarity="cosine")).fit(snap)
    t = plain.user_index("t")
    # cosine of a (u1, u2, t, s) and b (u1, u2): 2 / (2 * sqrt 2); c (u3, u4, t) and d (u3, u4): 2 / sqrt 6
    ab, cd = 2 / (2 * np.sqrt(2)), 2 / np.sqrt(6)
    ids, scores = plain.candidates(t, 2, exclude=snap.matrix[t])
    assert ids.tolist() == [[3, 1]]
    np.testing.assert_allclose(scores[0], [cd, ab], rtol=1e-6)
    decayed = ItemKNN(ItemKNNConfig(similarity="cosine", half_life_days=5.0)).fit(snap)
    _, scores = decayed.candidates(t, 2, exclude=snap.matrix[t])
    np.testing.assert_allclose(scores[0], [cd, ab / 4], rtol=1e-6)  # a is two half-lives older than c
    assert decayed.because(t, ids).tolist() == [[2, 0]]


def test_only_the_newest_recent_items_are_used() -> None:
    snap = two_pairs()
    knn = ItemKNN(ItemKNNConfig(similarity="cosine", recent_items=1)).fit(snap)
    t = knn.user_index("t")
    assert knn.recent_weights(t).toarray().tolist() == [[0, 0, 1, 0, 0, 0, 0, 0]]
    ids, _ = knn.candidates(t, 3, exclude=snap.matrix[t])
    assert ids.tolist() == [[3, -1, -1]]  # from c only; a is older, so b is out


def test_folded_history_counts_without_a_retrain() -> None:
    snap = two_pairs()
    knn = ItemKNN(ItemKNNConfig(recent_items=1)).fit(snap)
    similarity = knn.similarity.copy()
    # a newcomer who saw only a, and u3 (c, d at time 0) who now saw a after them
    history = History.from_events(events([("z", "a", DAY_US), ("u3", "a", DAY_US)]), knn.item_ids, config=snap.config)
    knn.fold_in(history)
    users = knn.user_index(["z", "u3"])
    ids, _ = knn.candidates(users, 2, exclude=knn.user_items(users))
    assert ids.tolist() == [[1, 2], [1, -1]]  # a is the newest item of both, so b comes first, from a
    assert knn.because(users, ids).tolist() == [[0, 0], [0, -1]]
    assert (knn.similarity != similarity).nnz == 0


def test_a_user_without_history_gets_no_candidates_and_no_reasons() -> None:
    knn = ItemKNN().fit(two_pairs())
    empty = events([]).iloc[:0]
    knn.fold_in(History.from_events(empty, knn.item_ids, users=pd.DataFrame({"user_id": ["onboarded"]})))
    user = knn.user_index("onboarded")
    ids, scores = knn.candidates(user, 3)
    assert ids.tolist() == [[-1, -1, -1]] and np.isneginf(scores).all()
    assert knn.because(user, np.array([[1, -1, 2]])).tolist() == [[-1, -1, -1]]


def test_because_names_the_largest_contribution(small_world: Dataset) -> None:
    snap = Snapshot.from_dataset(small_world)
    knn = ItemKNN(ItemKNNConfig(recent_items=10, half_life_days=3.0)).fit(snap)
    users = np.arange(40)
    ids, scores = knn.candidates(users, 15, exclude=snap.matrix[users])
    reasons = knn.because(users, ids)
    weights, similarity = knn.recent_weights(users).toarray(), knn.similarity.toarray()
    contribution = weights[:, :, None] * similarity[:, np.maximum(ids, 0)].transpose(1, 0, 2)  # user, source, slot
    listed = ids >= 0
    assert listed.sum() > 0.9 * ids.size
    np.testing.assert_allclose(scores[listed], contribution.sum(axis=1)[listed], rtol=1e-4)
    assert np.array_equal(reasons[listed], contribution.argmax(axis=1)[listed])
    assert (reasons[~listed] == -1).all()


def test_seen_and_late_items_are_never_proposed(small_world: Dataset) -> None:
    snap = Snapshot.from_dataset(small_world)
    knn = ItemKNN().fit(snap)
    late = knn.add_items(pd.DataFrame({"item_id": ["late-1", "late-2"]}))
    users = np.arange(80)
    exclude = sp.hstack([snap.matrix[users], sp.csr_matrix((80, 2))]).tocsr()
    ids, scores = knn.candidates(users, 30, exclude=exclude)
    assert not np.isin(ids, late).any()
    assert all(not set(ids[r]) & set(snap.matrix[r].indices) for r in range(80))
    finite = np.where(ids >= 0, scores, -np.inf)
    assert (np.diff(finite, axis=1) <= 0).all()


def test_using_item_knn_before_fit_is_a_clear_error() -> None:
    with pytest.raises(NotFittedError, match="ItemKNN is not fitted yet; call fit"):
        ItemKNN().candidates(np.array([0]), 3)
    with pytest.raises(NotFittedError, match="ItemKNN is not fitted yet"):
        ItemKNN().because(np.array([0]), np.array([[1]]))


def test_an_unknown_similarity_is_refused() -> None:
    with pytest.raises(ConfigError, match="similarity"):
        ItemKNNConfig.from_dict({"similarity": "jaccard"})


def test_a_small_request_summed_by_hand_equals_the_sparse_product(
    small_world: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    snap = Snapshot.from_dataset(small_world)
    knn = ItemKNN().fit(snap)
    users = np.arange(0, snap.n_users, 3)
    exclude = snap.matrix[users]
    by_hand = knn.candidates(users, 40, exclude=exclude)
    monkeypatch.setattr("tastemaker.candidates.item_knn._BY_HAND", -1)  # every request through scipy
    by_scipy = knn.candidates(users, 40, exclude=exclude)
    np.testing.assert_allclose(by_hand[1], by_scipy[1], rtol=1e-5)
    # the same items wherever scores differ beyond float32 rounding (sums taken in another order may swap ties)
    scores = by_scipy[1]
    gap = np.minimum(np.abs(np.diff(scores, axis=1, prepend=np.inf)), np.abs(np.diff(scores, axis=1, append=-np.inf)))
    distinct = (gap > 1e-4 * np.abs(scores)) | ~np.isfinite(scores)
    assert distinct.mean() > 0.5
    assert np.array_equal(by_hand[0][distinct], by_scipy[0][distinct])


def assert_keeps_each_rows_largest(got: sp.csr_matrix, expected: np.ndarray, neighbours: int) -> None:
    """Each row of ``got`` holds the ``neighbours`` largest positive entries of ``expected``'s row (ties may pick
    either item), exact where kept."""
    for item in range(expected.shape[0]):
        row = got[item].toarray().ravel()
        kept = np.flatnonzero(row)
        best = np.sort(expected[item][expected[item] > 0])[::-1][:neighbours]
        np.testing.assert_allclose(np.sort(row[kept])[::-1], best, rtol=1e-5)
        np.testing.assert_allclose(row[kept], expected[item, kept], rtol=1e-5)


def rp3_dense(x: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """RP3β by its definition: P(item → user)^α · P(user → item)^α summed over users, over popularity^β."""
    to_user = (x / np.maximum(x.sum(axis=0), 1)).T ** alpha
    to_item = (x / np.maximum(x.sum(axis=1), 1)[:, None]) ** alpha
    walk = to_user @ to_item / np.maximum(x.sum(axis=0), 1)[None, :] ** beta
    np.fill_diagonal(walk, 0.0)
    return walk


@pytest.mark.parametrize("block", [10**9, 40, 1])
@pytest.mark.parametrize(("alpha", "beta", "neighbours"), [(0.5, 0.5, 15), (1.0, 0.0, 200), (0.75, 0.3, 1)])
def test_rp3_keeps_each_items_largest_walk_probabilities(
    block: int, alpha: float, beta: float, neighbours: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(7)
    x = (rng.random((200, 90)) < 0.1).astype(np.float32)
    x[3] = 0  # a user without items
    x[:, 11] = 0  # an item nobody took
    weights = sp.csr_matrix(x * rng.integers(1, 5, x.shape))  # weights are binarised
    monkeypatch.setattr("tastemaker.candidates.item_knn._WALK_ENTRIES", block)  # one block, some, one item each
    got = rp3_similarity(weights, alpha, beta, neighbours)
    expected = rp3_dense(x, alpha, beta)
    assert got.shape == expected.shape and got.dtype == np.float32
    assert got.diagonal().sum() == 0 and got[11].nnz == 0 and got[:, 11].nnz == 0
    assert_keeps_each_rows_largest(got, expected, neighbours)


def test_rp3_beta_moves_neighbours_towards_the_long_tail() -> None:
    # item 0 co-occurs with a popular item 1 (in 8 users) and a rarer item 2 (in 3): beta 0 ranks the popular
    # one first (more walks end there), beta 1 the rare one
    x = np.zeros((10, 3), np.float32)
    x[:4, 0] = 1
    x[:8, 1] = 1
    x[:3, 2] = 1
    for beta, first in [(0.0, 1), (1.0, 2)]:
        row = rp3_similarity(sp.csr_matrix(x), 1.0, beta, 2)[0].toarray().ravel()
        assert row.argmax() == first


def sequence_by_loop(
    histories: dict[str, list[tuple[int, int]]], n_items: int, config: ItemKNNConfig
) -> np.ndarray:
    """The sequence similarity by its definition, one pair of positions at a time; ``histories`` hold
    (item, time) in order, and a pair begun at the same time counts the mean of both directions."""
    pairs = np.zeros((n_items, n_items))
    users = np.zeros(n_items)
    forward, tied = config.sequence_forward, (config.sequence_forward + 1) / 2
    for history in histories.values():
        users[[i for i, _ in history]] += 1
        for p, (i, t) in enumerate(history):
            for q, (j, u) in enumerate(history):
                distance = abs(q - p)
                if 1 <= distance <= config.sequence_window:
                    weight = config.sequence_decay ** (distance - 1)
                    pairs[i, j] += weight * (tied if u == t else forward if q > p else 1.0)
    scale = np.where(users > 0, np.maximum(users, 1) ** -config.sequence_power, 0.0)
    return scale[:, None] * pairs * scale[None, :]


@pytest.mark.parametrize("block", [10**9, 1])
@pytest.mark.parametrize(
    ("window", "decay", "forward", "power", "neighbours"),
    [(3, 0.5, 1.0, 0.5, 200), (1, 1.0, 3.0, 0.0, 200), (30, 0.9, 0.0, 1.0, 4)],
)
def test_sequence_similarity_counts_pairs_near_each_other_in_each_history(
    block: int, window: int, decay: float, forward: float, power: float, neighbours: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    rng = np.random.default_rng(3)
    items = [f"i{j}" for j in range(25)]
    histories = {
        f"u{u}": [(int(i), p * DAY_US) for p, i in enumerate(rng.choice(25, rng.integers(1, 15), replace=False))]
        for u in range(40)
    }
    # each history's order is when its pairs began (rows given shuffled); items begun at one instant stand in
    # item-index order (i2 < i5 < i7 by name too) but count the same either way
    histories["tie"] = [(4, 1), (2, 5), (5, 5), (7, 5), (3, 9)]
    rows = [(u, items[i], t) for u, history in histories.items() for i, t in history]
    rows = [rows[k] for k in rng.permutation(len(rows))]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp_us"]).assign(weight=1.0, rating=np.nan)
    inter["last_timestamp_us"] = inter["timestamp_us"]
    snap = Snapshot.from_interactions(inter, pd.DataFrame({"item_id": items}))
    config = ItemKNNConfig(similarity="sequence", sequence_window=window, sequence_decay=decay,
                           sequence_forward=forward, sequence_power=power, neighbours=neighbours)  # fmt: skip
    monkeypatch.setattr("tastemaker.candidates.item_knn._SEQUENCE_PAIRS", block)  # every distance, or one a time
    got = sequence_similarity(snap, config)
    index = snap.item_index(items)
    expected_by_name = sequence_by_loop(histories, 25, config)
    expected = np.zeros_like(expected_by_name)
    expected[np.ix_(index, index)] = expected_by_name
    assert got.dtype == np.float32 and got.diagonal().sum() == 0
    assert_keeps_each_rows_largest(got, expected, neighbours)


def test_items_last_taken_at_one_instant_share_their_positional_weight() -> None:
    # t took b and d at the same instant, a before them: a has two newer items, b and d none
    base = [("u1", "a", 0), ("u1", "b", 0), ("u2", "c", 0), ("u2", "d", 0)]
    snap = snapshot([*base, ("t", "a", 0), ("t", "d", 5 * DAY_US), ("t", "b", 5 * DAY_US)])
    knn = ItemKNN(ItemKNNConfig(similarity="cosine", half_life_items=1.0)).fit(snap)
    weights = knn.recent_weights(knn.user_index("t")).toarray()[0]
    np.testing.assert_allclose(weights[snap.item_index(["a", "b", "d"])], [0.25, 1, 1])


def test_a_positional_half_life_halves_each_older_items_weight() -> None:
    # t saw a, then c ten days later: with a half-life of one item, a (one newer item) weighs half of c
    snap = two_pairs()
    knn = ItemKNN(ItemKNNConfig(similarity="cosine", half_life_items=1.0)).fit(snap)
    t = knn.user_index("t")
    np.testing.assert_allclose(knn.recent_weights(t).toarray()[0, :4], [0.5, 0, 1, 0])
    assert ItemKNN(ItemKNNConfig(similarity="cosine")).fit(snap).recent_weights(t).toarray()[0, :4].tolist() == [
        1, 0, 1, 0]  # fmt: skip


def test_a_source_pickled_before_a_config_field_existed_loads_with_its_default() -> None:
    # an artifact written before ``half_life_items`` (and the ``sequence_*`` fields) existed
    snap = two_pairs()
    knn = ItemKNN(ItemKNNConfig(similarity="cosine")).fit(snap)
    t = knn.user_index("t")
    expected = knn.candidates(t, 3, exclude=snap.matrix[t])
    for name in ("half_life_items", "sequence_window", "sequence_forward"):
        del knn.config.__dict__[name]
    old = pickle.loads(pickle.dumps(knn))
    assert old.config.half_life_items is None and old.config.sequence_window == 20
    got = old.candidates(t, 3, exclude=snap.matrix[t])
    assert got[0].tolist() == expected[0].tolist() and np.allclose(got[1], expected[1])
