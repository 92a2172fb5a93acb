#!/usr/bin/env python3
"""Learned ranking: the engine's full retrain, and ranking 500 candidates for one user (features + LightGBM).

    python benchmarks/ranking.py [--users 100000] [--items 100000] [--interactions 1000000] [--requests 300]

The world is the candidate benchmark's (benchmarks/candidates.py). The retrain is what `tastemaker train`
runs (one global time cut, sources refitted for serving). Targets: full retrain on 1M interactions <= 60 s;
ranking 500 candidates (features + LightGBM, the candidates already generated) p50 <= 2 ms, p99 <= 5 ms
in-process. Each request counts its fastest of ``--passes`` passes, as in the candidate benchmark.

Ranking is timed as served: the trees compiled to native code (lleaves; what loading an artifact does, timed
apart as ``compile_seconds``). LightGBM's own predictor on the same features is timed too, for comparison.
Each request's candidates are generated (untimed) right before its ranking, as served: the content profile
the candidate step computed is reused by the ranking step's content similarity, as in a served request.
Requests are asked at the snapshot's end, so they share one minute's cache of item statistics, as a busy
server's do; ``one_request_a_second`` asks each request a second after the previous one, so each minute's
cache starts empty, as on a quiet server.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import write
from candidates import world
from threadpoolctl import threadpool_limits

from tastemaker.ranking import Context, Engine, EngineConfig, SplitConfig

P50_TARGET_MS, P99_TARGET_MS = 2.0, 5.0
FIT_TARGET_S = 60.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args()

    snap = world(args.users, args.items, args.interactions, seed=2)
    started = time.perf_counter()
    engine = Engine(EngineConfig(split=SplitConfig(kind="global"))).fit(snap)  # as `tastemaker train`
    fit_seconds = time.perf_counter() - started
    print(f"engine fit (inner sources + training set + ranker + sources on everything): {fit_seconds:.1f} s; "
          f"training set {engine.training}; steps ended at {engine.fit_seconds}")  # fmt: skip
    users = np.random.default_rng(1).integers(0, snap.n_users, args.requests)
    first = engine.generator.generate(users[:1], exclude=snap.matrix[users[:1]])
    schema = engine.schema
    by_lightgbm = time_ranking(engine, snap, users, args.passes)
    compile_seconds = engine.ranker.compile()  # as a server loading the artifact (or `tastemaker train` saving it)
    rank_ms, feature_ms = time_ranking(engine, snap, users, args.passes)
    best, best_features = rank_ms.min(axis=0), feature_ms.min(axis=0)
    # a quiet server: one request a second, so every minute starts the item statistics' cache afresh
    # (an item's first request in a minute searches for it); every request counted, not each one's fastest
    quiet, _ = time_ranking(engine, snap, users, args.passes, step_us=1_000_000)

    def q(values: np.ndarray, at: float) -> float:
        return round(float(np.percentile(values, at)), 3)

    result = {
        "world": {"users": args.users, "items": args.items, "interactions": args.interactions},
        "fit_seconds": round(fit_seconds, 1), "fit_steps_ended_at": engine.fit_seconds,
        "training_set": engine.training,
        "candidates_per_request": int((first.items >= 0).sum()), "features": len(schema.names),
        "rank_p50_ms": q(best, 50), "rank_p99_ms": q(best, 99), "rank_p99_ms_every_pass": q(rank_ms, 99),
        "features_p50_ms": q(best_features, 50), "trees_p50_ms": q(best - best_features, 50),
        "compile_seconds": round(compile_seconds, 2),
        "one_request_a_second": {"rank_p50_ms": q(quiet, 50), "rank_p99_ms": q(quiet, 99)},
        "lightgbm_predictor": {"rank_p50_ms": q(by_lightgbm[0].min(axis=0), 50),
                               "rank_p99_ms": q(by_lightgbm[0].min(axis=0), 99),
                               "trees_p50_ms": q(by_lightgbm[0].min(axis=0) - by_lightgbm[1].min(axis=0), 50)},
        "passes": args.passes,
        "target": {"p50_ms": P50_TARGET_MS, "p99_ms": P99_TARGET_MS, "fit_seconds": FIT_TARGET_S},
        "trees": [m.booster.num_trees() for m in engine.ranker.members if not m.prior_only],
    }  # fmt: skip
    print(f"ranking {result['candidates_per_request']} candidates: p50 {result['rank_p50_ms']} ms, "
          f"p99 {result['rank_p99_ms']} ms (features p50 {result['features_p50_ms']} ms, "
          f"compiled trees p50 {result['trees_p50_ms']} ms, {result['trees']} trees; compiled in "
          f"{result['compile_seconds']} s); LightGBM's predictor instead: {result['lightgbm_predictor']}; "
          f"one request a second (the minute cache cold each minute): {result['one_request_a_second']}")  # fmt: skip
    write("ranking", result)


def time_ranking(
    engine: Engine, snap, users: np.ndarray, passes: int, step_us: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Milliseconds to rank each user's candidates (features + trees) and to compute the features, per pass.
    Request ``r`` (over all passes) is asked at the snapshot's end + ``r · step_us``. As in a served request,
    the user's candidates are generated (untimed) just before they are ranked: what the candidate step leaves
    for the ranking step (the content source's profile of this user) is there, as it is when served."""
    schema = engine.schema
    rank_ms = np.empty((passes, len(users)))
    feature_ms = np.empty((passes, len(users)))
    with threadpool_limits(1):
        for p in range(passes):
            for i, user in enumerate(users):
                context = [Context(now_us=snap.end_us + (p * len(users) + i) * step_us, device="mobile")]
                found = engine.generator.generate(np.array([user]), exclude=snap.matrix[[user]])
                t = time.perf_counter_ns()
                x = engine.features.compute(np.array([user]), found, context)
                t_features = time.perf_counter_ns()
                valid = found.items >= 0
                engine.ranker.predict(x[valid], schema)
                done = time.perf_counter_ns()
                feature_ms[p, i], rank_ms[p, i] = (t_features - t) / 1e6, (done - t) / 1e6
    return rank_ms, feature_ms


if __name__ == "__main__":
    main()
