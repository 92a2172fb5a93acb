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
}


def make_model(name: str, seed: int) -> CandidateSource:
    if name not in MODELS:
        raise UnknownNameError("model", name, list(MODELS))
    return MODELS[name](seed)
