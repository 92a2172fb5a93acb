#!/usr/bin/env python3
"""How much the engine's trees gain on its own validation queries (inner sources, inner labels).

    python scripts/ranker_gap.py --protocol recommenders [--data movielens:../shared/data/ml-latest-small]

Fits the engine as the harness does (``engine_config(protocol)``) on the validation train side that
``scripts/tune_sources.py`` uses (the outer train side split again by the protocol; test never read) and
prints the ranker's validation nDCG with and without its trees, and the features the trees use most. Set
beside the harness validation score of the same engine, the difference is what is lost between the inner
sources the ranker learns on and the sources refitted for serving.
"""

from __future__ import annotations

import argparse

from tune_sources import train_side

from tastemaker.data import Snapshot, load_dataset
from tastemaker.evaluation.models import engine_config
from tastemaker.ranking import Engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="movielens:../shared/data/ml-latest-small")
    parser.add_argument("--protocol", default="recommenders")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    outer_train = train_side(load_dataset(args.data), args.protocol, 42)
    snapshot = Snapshot.from_dataset(train_side(outer_train, args.protocol, 42))
    engine = Engine(engine_config(args.protocol), seed=args.seed).fit(snapshot)
    ranker = engine.ranker
    for i, m in enumerate(ranker.members):
        print(f"ranker {i}: validation nDCG@{ranker.config.eval_at} {m.validation_score():.4f} with its trees "
              f"({m.booster.num_trees()}), {m.prior_score:.4f} as {m.base}'s order alone")  # fmt: skip
    gain = ranker.importances()
    total = sum(gain.values()) or 1.0
    print("share of the trees' gain: " + ", ".join(f"{n} {v / total:.3f}" for n, v in list(gain.items())[:10]))


if __name__ == "__main__":
    main()
