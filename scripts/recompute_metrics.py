#!/usr/bin/env python3
"""Recompute an evaluation's metrics from its dump folder, independently of tastemaker's code.

    python scripts/recompute_metrics.py OUT.json DUMP_DIR

Reads train.parquet, test.parquet and recs_NAME.parquet with pandas only, applies the documented rules
(docs/EVALUATION.md), and compares every recomputable metric with OUT.json. Exits 1 if any differs by
more than 1e-6. Intra-list diversity and category coverage need item categories, which the dump does not
hold, so they are not recomputed here.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pandas as pd

TOLERANCE = 1e-6


def relevant_pairs(train: pd.DataFrame, test: pd.DataFrame, threshold: float | None) -> pd.DataFrame:
    """Test rows that count: rated at least the threshold (if any), of users who also have train rows."""
    if threshold is not None:
        test = test[test["rating"] >= threshold]
    return test[test["user_id"].isin(set(train["user_id"]))][["user_id", "item_id"]].drop_duplicates()


def per_user_metrics(
    train: pd.DataFrame, test: pd.DataFrame, recs: pd.DataFrame, k: int, threshold: float | None
) -> dict[object, dict[str, float]]:
    """Every evaluated user's nDCG, AP, precision, recall, hit and reciprocal rank at ``k`` (0 without a hit)."""
    truth = relevant_pairs(train, test, threshold)
    users = sorted(truth["user_id"].unique())
    actual = truth.groupby("user_id").size()
    recs = recs[recs["rank"] <= k]
    hits = recs.merge(truth, on=["user_id", "item_id"], how="inner").sort_values(["user_id", "rank"])

    per_user = {u: {"ndcg": 0.0, "ap": 0.0, "ap_k": 0.0, "prec": 0.0, "rec": 0.0, "hit": 0.0, "rr": 0.0}
                for u in users}  # fmt: skip
    for user, group in hits.groupby("user_id"):
        ranks = list(group["rank"])
        n_rel = int(actual[user])
        dcg = sum(1.0 / math.log2(r + 1) for r in ranks)
        idcg = sum(1.0 / math.log2(i + 1) for i in range(1, min(n_rel, k) + 1))
        precision_at_hits = sum((j + 1) / r for j, r in enumerate(ranks))
        per_user[user] = {
            "ndcg": dcg / idcg,
            "ap": precision_at_hits / n_rel,
            "ap_k": precision_at_hits / min(n_rel, k),
            "prec": len(ranks) / k,
            "rec": len(ranks) / n_rel,
            "hit": 1.0,
            "rr": 1.0 / min(ranks),
        }
    return per_user


def recompute(train: pd.DataFrame, test: pd.DataFrame, recs: pd.DataFrame, k: int, threshold: float | None) -> dict:
    per_user = per_user_metrics(train, test, recs, k, threshold)
    users, n_users = list(per_user), len(per_user)
    recs = recs[recs["rank"] <= k]

    def mean(key: str) -> float:
        return sum(v[key] for v in per_user.values()) / n_users if n_users else 0.0

    train_items = set(train["item_id"])
    item_users = train.groupby("item_id")["user_id"].nunique()
    n_train_users = train["user_id"].nunique()
    shown = recs[recs["user_id"].isin(users)]
    novelty = sum(-math.log2(max(item_users.get(i, 0), 1) / n_train_users) for i in shown["item_id"])
    counts = shown["item_id"].value_counts()
    exposure = sorted(float(counts.get(i, 0)) for i in train_items)
    n, total = len(exposure), sum(exposure)
    gini = sum((2 * (i + 1) - n - 1) * x for i, x in enumerate(exposure)) / (n * total) if total else 0.0
    return {
        f"ndcg@{k}": mean("ndcg"),
        "map": mean("ap"),
        f"map@{k}": mean("ap_k"),
        f"precision@{k}": mean("prec"),
        f"recall@{k}": mean("rec"),
        f"hit_rate@{k}": mean("hit"),
        "mrr": mean("rr"),
        "coverage": len(set(shown["item_id"]) & train_items) / len(train_items),
        "novelty": novelty / len(shown) if len(shown) else 0.0,
        "gini": gini,
        "n_users_evaluated": n_users,
    }


def main(out_json: str, dump_dir: str) -> int:
    result = json.loads(Path(out_json).read_text())
    folder = Path(dump_dir)
    train = pd.read_parquet(folder / "train.parquet")
    test = pd.read_parquet(folder / "test.parquet")
    k, threshold = result["k"], result.get("relevance_threshold")
    worst = 0.0
    for name, reported in result["models"].items():
        mine = recompute(train, test, pd.read_parquet(folder / f"recs_{name}.parquet"), k, threshold)
        if mine.pop("n_users_evaluated") != result["n_users_evaluated"]:
            print(f"{name}: n_users_evaluated differs")
            return 1
        for cut in result.get("recall_at", []):
            if cut != k:
                deep = recompute(train, test, pd.read_parquet(folder / f"recs_{name}.parquet"), cut, threshold)
                mine[f"recall@{cut}"] = deep[f"recall@{cut}"]
        for key, value in mine.items():
            diff = abs(value - reported[key])
            worst = max(worst, diff)
            flag = "" if diff <= TOLERANCE else "   <-- MISMATCH"
            print(f"{name:>14} {key:>14} reported {reported[key]:.9f} recomputed {value:.9f}{flag}")
    print(f"largest difference: {worst:.2e} (tolerance {TOLERANCE:g})")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
