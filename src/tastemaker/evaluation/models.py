"""Models the harness can evaluate, by name. Later layers register theirs here."""

from __future__ import annotations

from collections.abc import Callable

from tastemaker.candidates import CandidateSource, ImplicitALS, Popularity, RandomSource
from tastemaker.candidates.merge import SOURCES, CandidateGenerator
from tastemaker.errors import UnknownNameError

__all__ = ["MODELS", "make_model"]

#: name -> factory taking the run's seed
MODELS: dict[str, Callable[[int], CandidateSource]] = {
    "popularity": lambda seed: Popularity(),
    "random": lambda seed: RandomSource(seed),
    "implicit-als": lambda seed: ImplicitALS(seed),
    **SOURCES,  # als, item_knn, ease, content, popular (all-time), trending, fresh
    "candidates": lambda seed: CandidateGenerator(seed=seed),
    "engine": lambda seed: _engine(seed),
}


#: the engine trains its ranker on an inner split of the train side shaped like the protocol's own split
INNER_SPLIT = {"recommenders": "random", "temporal": "newest", "leave-last": "newest", "global-time": "newest"}


def _engine(seed: int, protocol: str | None = None) -> CandidateSource:
    from tastemaker.ranking import Engine, EngineConfig, LabelConfig, SplitConfig  # LightGBM loads when asked

    split = SplitConfig(kind=INNER_SPLIT.get(protocol or "", "newest"))
    # the harness counts every held-out rating relevant, so the ranker learns the same (ungraded) relevance; on
    # validation this beat grading ratings >= 4 higher (`scripts/tune_sources.py engine --grid
    # labels.high_rating=4.0,99`)
    labels = LabelConfig(high_rating=None)
    return Engine(EngineConfig(split=split, labels=labels), seed=seed)


def make_model(name: str, seed: int, protocol: str | None = None) -> CandidateSource:
    """A fresh model; ``protocol`` lets a model that trains on an inner split shape it like the outer one."""
    if name not in MODELS:
        raise UnknownNameError("model", name, list(MODELS))
    if name == "engine":
        return _engine(seed, protocol)
    return MODELS[name](seed)
