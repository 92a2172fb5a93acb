"""Issue 3's acceptance on ml-latest-small: every candidate source against the baselines, in one run."""

from __future__ import annotations

import pytest

from tastemaker.data.movielens import read_movielens
from tastemaker.evaluation import evaluate

from ..conftest import MOVIELENS_SMALL, needs_movielens

SOURCES = ["als", "item_knn", "ease", "content", "popular", "trending", "fresh"]


@needs_movielens
@pytest.mark.parametrize("protocol", ["recommenders", "temporal"])
def test_sources_beat_the_baselines_and_the_merge_beats_every_source(protocol: str) -> None:
    models = ["popularity", "random", "implicit-als", *SOURCES, "candidates"]
    result = evaluate(read_movielens(MOVIELENS_SMALL), protocol, models, k=10, recall_at=[100, 500])
    got = result["models"]
    ndcg = {name: got[name]["ndcg@10"] for name in models}
    for name in ("als", "item_knn", "ease"):
        assert ndcg[name] > ndcg["popularity"], (name, ndcg)
    assert ndcg["als"] > ndcg["implicit-als"]
    assert ndcg["content"] > ndcg["random"]
    recall = {name: got[name]["recall@500"] for name in models}
    assert all(recall["candidates"] > recall[name] for name in models if name != "candidates"), recall
