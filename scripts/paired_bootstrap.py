#!/usr/bin/env python3
"""How sure is "model A beats model B by X"? A paired bootstrap over users of A's nDCG@k over B's.

    tastemaker evaluate --data movielens:../shared/data/ml-latest-small --protocol recommenders \\
        --model ease --model engine --dump-dir DUMP
    python scripts/paired_bootstrap.py DUMP engine ease [--k 10] [--target 1.03]

Reads the dump folder (train, test, recs_A, recs_B parquet files), scores each evaluated user's nDCG@k for
both models with scripts/recompute_metrics.py (without a rating threshold), resamples the users 10,000
times (seeded) and prints the ratio of means, its 95% interval and the share of resamples at or above
``--target``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from recompute_metrics import per_user_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dump", type=Path)
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--target", type=float, default=1.03)
    args = parser.parse_args()
    train, test = pd.read_parquet(args.dump / "train.parquet"), pd.read_parquet(args.dump / "test.parquet")
    a, b = (per_user_metrics(train, test, pd.read_parquet(args.dump / f"recs_{m}.parquet"), args.k, None)
            for m in (args.a, args.b))  # fmt: skip
    users = list(a)
    a, b = np.array([a[u]["ndcg"] for u in users]), np.array([b[u]["ndcg"] for u in users])
    draws = np.random.default_rng(0).integers(0, len(users), (10_000, len(users)))
    ratios = a[draws].mean(axis=1) / b[draws].mean(axis=1)
    low, high = np.percentile(ratios, [2.5, 97.5])
    above = np.mean(ratios >= args.target)
    print(f"{len(users)} users: {args.a} {a.mean():.4f}, {args.b} {b.mean():.4f}, ratio {a.mean() / b.mean():.4f} "
          f"(95% interval {low:.4f}–{high:.4f}); resamples at or above {args.target}: {above:.1%}; "
          f"users better / worse / equal: {(a > b).sum()} / {(a < b).sum()} / {(a == b).sum()}")  # fmt: skip


if __name__ == "__main__":
    main()
