"""The evaluation harness: split a dataset by a published protocol, fit models on train, rank for the
evaluated users, score the lists, and optionally dump everything needed to recompute each number.

Every model sees the same split and the same users in one run, so figures in one table are comparable.
A user's train items are never recommended to them. Metrics average over evaluated users (see
``data.splits.evaluation_pairs``); a user with no hit counts as 0.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from tastemaker.data.dataset import Dataset
from tastemaker.data.importer import Progress
from tastemaker.data.snapshot import Snapshot, SnapshotConfig
from tastemaker.data.splits import Split, evaluation_pairs, split
from tastemaker.errors import ConfigError
from tastemaker.evaluation.models import make_model
from tastemaker.metrics import offline as m

__all__ = ["evaluate", "score_lists"]

_USER_BATCH = 2_048


def evaluate(
    dataset: Dataset,
    protocol: str,
    models: Sequence[str],
    *,
    k: int = 10,
    seed: int = 42,
    relevance_threshold: float | None = None,
    recall_at: Sequence[int] = (),
    snapshot_config: SnapshotConfig | None = None,
    dump_dir: str | Path | None = None,
    json_path: str | Path | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run ``models`` on ``dataset`` under ``protocol`` and return the result document (see docs/EVALUATION.md).

    ``recall_at`` adds recall at deeper cut-offs (e.g. 100, 500: the ceiling a ranker over that many
    candidates can reach); every model then ranks ``max(k, *recall_at)`` items per user.
    """
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    if any(depth < 1 for depth in recall_at):
        raise ConfigError(f"recall_at cut-offs must be at least 1, got {list(recall_at)}")
    depth = max([k, *recall_at])
    if not models:
        raise ConfigError("no models to evaluate; give at least one (e.g. popularity)")
    for name in models:  # fail on a bad name before any work
        make_model(name, seed)
    report = progress or (lambda _stage, _done, _total: None)
    config = snapshot_config or SnapshotConfig()

    report(f"split by {protocol}", 0, 1)
    parts = split(dataset.events, protocol, config=config, seed=seed)
    snap = Snapshot.from_interactions(parts.train, dataset.items, dataset.users, config=config)
    pairs = evaluation_pairs(parts, relevance_threshold)
    users = np.sort(pairs["user_id"].unique())
    user_idx = snap.user_index(users)
    if (user_idx < 0).any():  # evaluated users have train pairs, so the snapshot knows them
        raise AssertionError("an evaluated user is missing from the train snapshot")
    relevant = _relevance(pairs, users, snap)
    exclude = snap.matrix[user_idx]
    report(f"split by {protocol}", 1, 1)

    result: dict[str, Any] = {
        "dataset": dataset.name,
        "protocol": protocol,
        "k": k,
        "n_users_evaluated": int(len(users)),
        "seed": seed,
        "relevance_threshold": relevance_threshold,
        "recall_at": sorted(set(recall_at)),
        "n_train": int(len(parts.train)),
        "n_test": int(len(parts.test)),
        "split": parts.params,
        "models": {},
    }
    if dump_dir is not None:
        _dump_split(Path(dump_dir), parts)
    for name in models:
        model = make_model(name, seed, protocol, k)
        report(f"fit {name}", 0, 1)
        started = time.perf_counter()
        model.fit(snap)
        fit_seconds = time.perf_counter() - started
        report(f"fit {name}", 1, 1)
        blocks = []
        ranking = 0.0
        for i in range(0, len(users), _USER_BATCH):
            started = time.perf_counter()
            batch = slice(i, i + _USER_BATCH)
            blocks.append(model.candidates(user_idx[batch], depth, exclude=exclude[batch]))
            ranking += time.perf_counter() - started
            report(f"rank {name}", min(i + _USER_BATCH, len(users)), len(users))
        recommend_seconds = ranking
        recs = np.vstack([b[0] for b in blocks]) if blocks else np.zeros((0, depth), np.int64)
        scores = np.vstack([b[1] for b in blocks]) if blocks else np.zeros((0, depth), np.float32)
        metrics = score_lists(recs[:, :k], relevant, snap, k)
        for cut in sorted(set(recall_at) - {k}):
            metrics[f"recall@{cut}"] = (
                float(np.mean(m.recall(m.hits(recs[:, :cut], relevant), relevant))) if len(recs) else 0.0
            )
        metrics.update(fit_seconds=round(fit_seconds, 4), recommend_seconds=round(recommend_seconds, 4))
        result["models"][name] = metrics
        if dump_dir is not None:
            _dump_recs(Path(dump_dir) / f"recs_{name}.parquet", users, recs, scores, snap)
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
    return result


def score_lists(recs: np.ndarray, relevant: sp.csr_matrix, snap: Snapshot, k: int) -> dict[str, float]:
    """Every offline metric of ``recs`` against ``relevant``, averaged over the rows."""
    h = m.hits(recs, relevant)
    item_users = np.diff(snap.matrix.tocsc().indptr)
    catalog = np.flatnonzero(item_users > 0)  # items seen in training (only these count as covered)
    diversity = m.intra_list_diversity(recs, snap.item_categories)

    def mean(x: np.ndarray) -> float:
        return float(np.mean(x)) if len(x) else 0.0

    return {
        f"ndcg@{k}": mean(m.ndcg(h, relevant, k)),
        "map": mean(m.average_precision(h, relevant, k)),
        f"map@{k}": mean(m.average_precision(h, relevant, k, at_k=True)),
        f"precision@{k}": mean(m.precision(h, k)),
        f"recall@{k}": mean(m.recall(h, relevant)),
        f"hit_rate@{k}": mean(m.hit_rate(h)),
        "mrr": mean(m.reciprocal_rank(h)),
        "coverage": m.catalog_coverage(recs, catalog),
        "novelty": m.novelty(recs, item_users, int((np.diff(snap.matrix.indptr) > 0).sum())),
        "diversity": float(np.nanmean(diversity)) if np.isfinite(diversity).any() else 0.0,
        "category_coverage": mean(m.category_coverage(recs, snap.item_categories)),
        "gini": m.exposure_gini(recs, catalog),
    }


def _relevance(pairs: pd.DataFrame, users: np.ndarray, snap: Snapshot) -> sp.csr_matrix:
    """Relevant pairs as a matrix over the snapshot's items, plus extra columns for test items the
    snapshot does not know (they count towards recall's denominator but can never be hit)."""
    rows = pd.Index(users).get_indexer(pairs["user_id"])
    cols = snap.item_index(pairs["item_id"].to_numpy())
    unknown = cols < 0
    extra = pd.factorize(pairs["item_id"].to_numpy()[unknown])[0]
    cols = cols.copy()
    cols[unknown] = snap.n_items + extra
    shape = (len(users), snap.n_items + (extra.max() + 1 if len(extra) else 0))
    matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=shape)
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def _dump_split(folder: Path, parts: Split) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in (("train", parts.train), ("test", parts.test)):
        pd.DataFrame({
            "user_id": frame["user_id"].astype(str),
            "item_id": frame["item_id"].astype(str),
            "rating": frame["rating"].astype(float),
            "timestamp": pd.to_datetime(frame["timestamp_us"], unit="us", utc=True),
        }).to_parquet(folder / f"{name}.parquet", index=False)  # fmt: skip


def _dump_recs(path: Path, users: np.ndarray, recs: np.ndarray, scores: np.ndarray, snap: Snapshot) -> None:
    rows, ranks = np.nonzero(recs >= 0)
    pd.DataFrame({
        "user_id": users[rows].astype(str),
        "item_id": snap.item_ids.to_numpy()[recs[rows, ranks]].astype(str),
        "rank": (ranks + 1).astype(np.int32),
        "score": scores[rows, ranks].astype(np.float64),
    }).to_parquet(path, index=False)  # fmt: skip
