"""Implicit-feedback ALS (Hu, Koren & Volinsky 2008) through the ``implicit`` library, retrieved with FAISS.

Confidence is ``1 + alpha * w`` (``linear``) or ``1 + alpha * log1p(w / epsilon)`` (``log``) of the
snapshot weight ``w``; ``raw`` passes ``alpha * w`` as the library does by default (the baseline).
Fold-in recomputes a user's factors from their current interactions with the
library's user recalculation (one least-squares solve against the fixed item factors), so events after
training move the user's vector without a retrain. The defaults come from a grid search on a validation
split carved from the train side (``scripts/tune_sources.py``), never from a test split.
"""

from __future__ import annotations

import copy
import functools
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from pydantic import Field
from threadpoolctl import ThreadpoolController, threadpool_limits

from tastemaker.candidates.ann import AnnConfig, VectorIndex
from tastemaker.candidates.base import CandidateSource, take_rows
from tastemaker.config import ConfigModel
from tastemaker.data.snapshot import Snapshot

__all__ = ["ALS", "ALSConfig", "ImplicitALS"]


class ALSConfig(ConfigModel):
    factors: int = Field(default=128, ge=1)
    regularization: float = Field(default=20.0, ge=0)
    alpha: float = Field(default=2.0, gt=0)
    iterations: int = Field(default=15, ge=1)
    #: iterations when the fit starts from another fit's factors on the same users and items (see ``warm_from``)
    warm_iterations: int = Field(default=5, ge=1)
    confidence: Literal["raw", "linear", "log"] = "linear"
    epsilon: float = Field(default=1.0, gt=0)
    ann: AnnConfig = AnnConfig()


#: ``implicit``'s own defaults: the peer baseline of the harness (``implicit-als``)
LIBRARY_DEFAULTS = ALSConfig(factors=100, regularization=0.01, alpha=1.0, iterations=15, confidence="raw")


class ALS(CandidateSource):
    name = "als"

    def __init__(self, config: ALSConfig | None = None, *, seed: int = 42) -> None:
        self.config = config or ALSConfig()
        self.seed = seed

    def warm_from(self, previous: CandidateSource) -> ALS:
        """Start the next fit from ``previous``'s factors (an ALS of the same config fitted on the same users
        and items, e.g. on less of the data) and run ``warm_iterations`` instead of ``iterations``."""
        same = isinstance(previous, ALS) and _but_iterations(previous.config) == _but_iterations(self.config)
        self._warm = previous if same else None
        return self

    def first_part(self) -> ALS:
        """This ALS, unfitted, running ``iterations - warm_iterations`` (at least 1): a later fit warm-started
        from it (``warm_from``) brings the factors to ``iterations`` in all, as one fit would (when
        ``iterations > warm_iterations``)."""
        cfg = self.config
        part = copy.copy(self)
        part.config = cfg.model_copy(update={"iterations": max(cfg.iterations - cfg.warm_iterations, 1)})
        return part

    def _fit(self, snapshot: Snapshot) -> None:
        cfg = self.config
        warm, self._warm = getattr(self, "_warm", None), None
        if warm is not None and warm.user_factors.shape[0] != snapshot.n_users:
            warm = None
        if warm is not None and warm.item_factors.shape[0] != snapshot.n_items:
            warm = None
        with threadpool_limits(1, "blas"):  # implicit checks BLAS threads when the model is built
            self.model = AlternatingLeastSquares(
                factors=cfg.factors,
                regularization=cfg.regularization,
                alpha=1.0,  # the confidence transform below already applies alpha
                iterations=cfg.iterations if warm is None else cfg.warm_iterations,
                random_state=self.seed,
            )
            if warm is not None:  # implicit continues from factors that are already set
                self.model.user_factors = np.array(warm.model.user_factors, copy=True)
                self.model.item_factors = np.array(warm.model.item_factors, copy=True)
            self.model.fit(self._confidence(snapshot.matrix), show_progress=False)
        self.user_factors = np.asarray(self.model.user_factors, dtype=np.float32)
        self.item_factors = np.asarray(self.model.item_factors, dtype=np.float32)
        self.index = VectorIndex(cfg.ann).build(self.item_factors)

    def _candidates(self, users: np.ndarray, n: int, exclude: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        ids = np.full((len(users), n), -1, np.int64)
        scores = np.full((len(users), n), -np.inf, np.float32)
        factors = self.user_factors[users]
        # a zero vector (no history in the trained columns) scores every item 0: no opinion, not a list
        known = np.flatnonzero(np.abs(factors).sum(axis=1) > 0)
        if len(known):
            banned = exclude if len(known) == len(users) else take_rows(exclude, known)
            ids[known], scores[known] = self.index.search(factors[known], n, exclude=banned)
        return ids, scores

    def _folded(self, users: np.ndarray) -> None:
        if len(self.user_factors) < self.n_users:
            # new users: rows of a buffer with room to spare (grown by a quarter at a time), so users joining one
            # by one cost a copy of every user's factors now and then, not at each fold-in
            room = self.__dict__.get("_room")
            if room is None or len(room) < self.n_users or not np.shares_memory(room, self.user_factors):
                room = np.zeros((max(self.n_users, len(self.user_factors) * 5 // 4 + 64), self.user_factors.shape[1]),
                                np.float32)  # fmt: skip
                room[: len(self.user_factors)] = self.user_factors
                self._room = room
            self.user_factors = room[: self.n_users]
        self.user_factors[users] = self.recalculate(self.user_items(users))

    def recalculate(self, user_items: sp.csr_matrix) -> np.ndarray:
        """Factors for users with these interaction rows, against the trained item factors."""
        rows = self._confidence(user_items[:, : len(self.item_factors)])
        with one_blas_thread():
            return np.asarray(self.model.recalculate_user(np.arange(rows.shape[0]), rows), dtype=np.float32)

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        if "_room" in state:  # an artifact holds the factors, not the spare room
            state["user_factors"] = np.array(state.pop("_room")[: len(self.user_factors)])
        return state

    def _confidence(self, weights: sp.csr_matrix) -> sp.csr_matrix:
        conf = sp.csr_matrix(weights, dtype=np.float32, copy=True)
        if self.config.confidence == "log":
            conf.data = np.log1p(conf.data / self.config.epsilon)
        conf.data *= self.config.alpha
        if self.config.confidence != "raw":
            conf.data += 1.0
        return conf


@functools.cache
def _blas() -> ThreadpoolController:
    return ThreadpoolController()


def one_blas_thread() -> Any:
    """BLAS limited to one thread while inside (implicit asks for it), through one controller found once: a
    ``threadpool_limits`` call searches the loaded libraries each time (~3 ms, a fold-in's request path)."""
    return _blas().limit(limits=1, user_api="blas")


def _but_iterations(config: ALSConfig) -> ALSConfig:
    return config.model_copy(update={"iterations": 0, "warm_iterations": 0})


class ImplicitALS(ALS):
    """Plain ``implicit`` ALS with the library's defaults: the baseline every later layer must beat."""

    name = "implicit-als"

    def __init__(self, seed: int = 42) -> None:
        super().__init__(LIBRARY_DEFAULTS, seed=seed)
