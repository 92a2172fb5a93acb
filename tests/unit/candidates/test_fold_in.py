"""The base contract's id spaces and fold-in, through ALS (the library's user recalculation)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from tastemaker.candidates import ALS, ALSConfig, History, Popularity
from tastemaker.data import Dataset, Snapshot
from tastemaker.errors import DataFormatError

DAY = 86_400 * 1_000_000


def events(rows: list[tuple[str, str, int]], start: int = 0) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp_us"])
    return frame.assign(event_id=[f"e{start + i}" for i in range(len(frame))], type="click", value=np.nan)


def two_taste_world() -> Snapshot:
    """Users 0-49 like items a0-a9, users 50-99 like b0-b9 (6 of the 10 each): two blocks ALS separates."""
    rng = np.random.default_rng(0)
    rows = [
        (f"u{u}", f"{'a' if u < 50 else 'b'}{i}", DAY * (u + i))
        for u in range(100)
        for i in rng.choice(10, size=6, replace=False)
    ]
    return Snapshot.from_frames(events(rows))


@pytest.fixture(scope="module")
def als() -> ALS:
    return ALS(ALSConfig(factors=2, regularization=0.1, iterations=20)).fit(two_taste_world())


def test_a_new_user_known_only_from_later_events_gets_candidates_of_their_taste(als: ALS) -> None:
    source = ALS(als.config).fit(als.snapshot)
    later = events([("newcomer", "b0", DAY * 999), ("newcomer", "b1", DAY * 999), ("newcomer", "b2", DAY * 999)])
    history = History.from_events(later, source.item_ids)
    source.fold_in(history)
    user = source.user_index("newcomer")
    assert user.tolist() == [als.snapshot.n_users]  # appended after the snapshot's users
    ids, _ = source.candidates(user, 7, exclude=source.user_items(user))
    assert {source.item_ids[i][0] for i in ids[0]} == {"b"}  # the 7 b's not yet seen, no a


def test_fold_in_moves_a_known_user_and_is_idempotent(als: ALS) -> None:
    source = ALS(als.config).fit(als.snapshot)
    user = source.user_index("u0")
    before = source.user_factors[user].copy()
    switch = History.from_events(
        events([("u0", f"b{i}", DAY * 200) for i in range(10)] * 3), source.item_ids
    )  # a heavy burst of the other taste
    source.fold_in(switch)
    once = source.user_factors[user].copy()
    source.fold_in(switch)
    assert not np.allclose(before, once)
    assert np.allclose(once, source.user_factors[user])  # folding the same history again changes nothing
    scores = source.user_factors[user] @ source.item_factors.T
    a_items, b_items = source.item_index([f"a{i}" for i in range(10)]), source.item_index([f"b{i}" for i in range(10)])
    assert scores[0, b_items].mean() > scores[0, a_items].mean()  # the burst outweighs the snapshot
    assert source.user_items(user).nnz == 16  # 6 a's from the snapshot + 10 b's folded in
    assert source.user_last_us(user).max() == DAY * 200


def test_user_and_item_spaces_only_grow(small_world: Dataset) -> None:
    snap = Snapshot.from_dataset(small_world)
    pop = Popularity().fit(snap)
    got = pop.add_items(pd.DataFrame({"item_id": ["brand-new", snap.item_ids[0], "brand-new"]}))
    assert got.tolist() == [snap.n_items, 0, snap.n_items] and pop.n_items == snap.n_items + 1
    assert pop.item_ids[: snap.n_items].equals(snap.item_ids)
    history = History.from_events(events([("x", "brand-new", 1)]), pop.item_ids)
    pop.fold_in(history)
    assert pop.user_items(pop.user_index("x")).indices.tolist() == [snap.n_items]
    with pytest.raises(DataFormatError, match="history columns must follow"):
        pop.fold_in(History.from_events(events([("x", "a", 1)]), pd.Index(["zz"], dtype=object)))


def test_history_keeps_onboarding_only_users() -> None:
    users = pd.DataFrame({"user_id": ["quiet"], "attributes": [{"preferred_categories": ["Jazz"]}]})
    history = History.from_events(events([]).iloc[:0], pd.Index(["a"], dtype=object), users=users)
    assert list(history.user_ids) == ["quiet"] and history.matrix.nnz == 0
    assert history.attributes == ({"preferred_categories": ["Jazz"]},)


def test_a_user_without_signal_gets_no_als_list_rather_than_arbitrary_items(als: ALS) -> None:
    source = ALS(als.config).fit(als.snapshot)
    source.add_items(pd.DataFrame({"item_id": ["late-item"]}))
    source.fold_in(History.from_events(events([("only-late", "late-item", DAY * 999)]), source.item_ids))
    ids, scores = source.candidates(source.user_index(["only-late"]), 5)
    assert (ids == -1).all() and np.isneginf(scores).all()


def test_fold_in_follows_the_snapshots_max_aggregate() -> None:
    from tastemaker.data import SnapshotConfig

    config = SnapshotConfig(aggregate="max")
    snap = Snapshot.from_frames(events([("u", "a", 1), ("u", "b", 2)]), config=config)
    pop = Popularity().fit(snap)
    pop.fold_in(History.from_events(events([("u", "a", 3)], start=10), pop.item_ids, config=config))
    assert pop.user_items(pop.user_index("u")).toarray().tolist() == [[2.0, 2.0]]  # click weight 2, not 2 + 2


def test_a_stored_zero_in_exclude_excludes_nothing(als: ALS) -> None:
    user = als.user_index("u0")
    exclude = sp.csr_matrix((np.zeros(1, np.float32), ([0], [0])), shape=(1, als.n_items))
    assert exclude.nnz == 1
    with_zero, _ = als.candidates(user, als.n_items, exclude=exclude)
    plain, _ = als.candidates(user, als.n_items)
    assert with_zero.tolist() == plain.tolist() and 0 in with_zero[0]


def test_replacing_rows_matches_its_definition_on_random_matrices() -> None:
    from tastemaker.candidates.base import _replace_rows

    rng = np.random.default_rng(0)
    for trial in range(200):
        n, m = int(rng.integers(1, 30)), int(rng.integers(1, 20))
        matrix = sp.random(n, m, density=rng.random(), format="csr", random_state=trial, dtype=np.float32)
        rows = rng.choice(n, int(rng.integers(0, n + 1)), replace=False)
        values = sp.random(len(rows), m, density=rng.random(), format="csr", random_state=trial + 999)
        want = matrix.toarray().astype(np.float64)
        want[rows] = values.toarray()
        got = _replace_rows(matrix, rows, values)
        assert got.dtype == np.float64 and got.shape == (n, m)
        np.testing.assert_array_equal(got.toarray(), want)


@pytest.mark.parametrize("aggregate", ["sum", "max"])
def test_folded_rows_are_the_snapshot_row_combined_with_the_history_row(aggregate: str) -> None:
    """Random fold-ins of known and new users, repeated, some on items added since: each user's row (weights and
    latest times) is their snapshot row combined with the history given for them last, nothing else."""
    from tastemaker.data import SnapshotConfig

    rng = np.random.default_rng(1)
    config = SnapshotConfig(aggregate=aggregate)
    start = [(f"u{u}", f"i{i}", int(rng.integers(1, 50))) for u in range(8) for i in rng.choice(6, 3, replace=False)]
    snap = Snapshot.from_frames(events(start), config=config)
    pop = Popularity().fit(snap)
    pop.add_items(pd.DataFrame({"item_id": ["i-late-1", "i-late-2"]}))
    weight, last = {}, {}  # what each user's row must be: (user, item) -> value
    for u, i, t in start:
        weight[u, i] = max(weight.get((u, i), 0), 2.0) if aggregate == "max" else weight.get((u, i), 0) + 2.0
        last[u, i] = max(last.get((u, i), 0), t)
    snapshot_weight, snapshot_last, later = dict(weight), dict(last), {}
    for step in range(12):
        users = [f"u{u}" for u in rng.choice(12, int(rng.integers(1, 4)), replace=False)]  # u8-u11 are new
        rows = [(u, str(rng.choice(pop.item_ids)), 1_000 + 10 * step + n) for u in users for n in range(2)]
        pop.fold_in(History.from_events(events(rows, start=100 * step), pop.item_ids, config=config))
        for u in users:
            later[u] = [(i, t) for v, i, t in rows if v == u]
        for u in [f"u{n}" for n in range(12)]:
            if u not in later and u not in {s[0] for s in start}:
                continue
            want_w = {i: w for (v, i), w in snapshot_weight.items() if v == u}
            want_t = {i: t for (v, i), t in snapshot_last.items() if v == u}
            for i, t in later.get(u, []):
                add = 2.0
                want_w[i] = max(want_w.get(i, 0), add) if aggregate == "max" else want_w.get(i, 0) + add
                want_t[i] = max(want_t.get(i, 0), t)
            row = pop.user_index(u)
            items = [str(pop.item_ids[j]) for j in range(pop.n_items)]
            got_w = dict(zip(items, pop.user_items(row).toarray()[0].tolist(), strict=True))
            got_t = dict(zip(items, pop.user_last_us(row).toarray()[0].tolist(), strict=True))
            assert {i: w for i, w in got_w.items() if w} == want_w
            assert {i: t for i, t in got_t.items() if t} == want_t
            assert pop.has_history(row)[0] == bool(want_w)


def test_a_source_pickled_with_plain_user_matrices_loads_and_folds_in() -> None:
    """Artifacts of format 3 hold each source's user rows (and category shares) as CSR matrices: unpickled,
    they are wrapped, and the source serves and folds in as one saved today."""
    import pickle

    from tastemaker.candidates.base import UserRows
    from tastemaker.candidates.popular import PopularSource

    snap = two_taste_world()
    source = PopularSource().fit(snap)
    old = pickle.loads(pickle.dumps(source))
    for name in ("_user_items", "_user_last", "_shares"):  # as format 3 pickled them
        old.__dict__[name] = old.__dict__[name].merged()
    restored = pickle.loads(pickle.dumps(old))
    assert all(isinstance(restored.__dict__[n], UserRows) for n in ("_user_items", "_user_last", "_shares"))
    users = np.arange(snap.n_users)
    assert restored.candidates(users, 5)[0].tolist() == source.candidates(users, 5)[0].tolist()
    later = History.from_events(events([("u0", "b1", 10 * DAY), ("new", "a1", 10 * DAY)], start=500), snap.item_ids)
    for s in (restored, source):
        s.fold_in(later)
    assert restored.user_items(restored.user_index(["u0", "new"])).toarray().tolist() == source.user_items(
        source.user_index(["u0", "new"])).toarray().tolist()  # fmt: skip


def test_a_history_from_event_arrays_equals_the_one_from_a_frame() -> None:
    """The request path's ``History.of_events`` (no frame) and ``from_events`` give the same history."""
    from tastemaker.store.base import EMPTY_EVENTS, UserEvents

    rng = np.random.default_rng(4)
    item_ids = pd.Index([f"i{n}" for n in range(30)], dtype=object)
    types = ["click", "view", "rating", "purchase", "skipped"]  # (the default config does not weigh "skipped")
    for size in [*rng.integers(1, 5, 30).tolist(), 300]:  # (300 users: past the few looked up one by one)
        users = [f"u{n}" for n in range(size)]
        per_user = []
        for _user in users:
            n = int(rng.integers(0, 8))
            kinds = rng.choice(types, n)
            per_user.append(UserEvents.of_rows([
                (f"e{rng.integers(1e9)}", f"i{rng.integers(0, 34)}", str(kind),  # some items unknown
                 float(rng.integers(1, 6)) if kind == "rating" else None, int(rng.integers(0, 5) * DAY))
                for kind in kinds
            ]) if n else EMPTY_EVENTS)  # fmt: skip
        attributes = {users[0]: {"preferred_categories": ["x"]}}
        arrays = History.of_events(np.array(users, dtype=object), per_user, item_ids, attributes=attributes)
        frame = pd.concat([e.frame(u) for u, e in zip(users, per_user, strict=True)], ignore_index=True)
        known = pd.DataFrame({"user_id": users, "attributes": [attributes.get(u, {}) for u in users]})
        framed = History.from_events(frame, item_ids, users=known)
        assert list(arrays.user_ids) == list(framed.user_ids)
        assert arrays.attributes == framed.attributes
        for mine, theirs in ((arrays.matrix, framed.matrix), (arrays.last_us, framed.last_us)):
            assert mine.dtype == theirs.dtype and (mine != theirs).nnz == 0
