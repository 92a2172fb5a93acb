#!/usr/bin/env python3
"""`engine` on the test split under several re-ranking seeds: how much the exploration draws move a figure.

    python scripts/rerank_seeds.py --protocol temporal --seeds 1,2,3,4,5

Each seed is the default chain with ``rerank.seed`` set (the engine itself is fitted with the harness's seed,
so every fit is the same); the lists are k = 10, as `tastemaker evaluate` scores them.
"""

from __future__ import annotations

import argparse

import numpy as np

from tastemaker.data import load_dataset
from tastemaker.evaluation import evaluate
from tastemaker.evaluation.models import MODELS, engine_config

KEYS = ("ndcg@10", "coverage", "diversity", "category_coverage", "gini")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="movielens:../shared/data/ml-latest-small")
    parser.add_argument("--protocol", default="temporal")
    parser.add_argument("--seeds", default="1,2,3,4,5")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    from tastemaker.ranking import Engine
    from tastemaker.reranking import RerankConfig

    for s in seeds:
        config = engine_config(args.protocol).model_copy(update={"rerank": RerankConfig(seed=s), "list_length": 10})
        MODELS[f"engine-rerank-seed{s}"] = lambda seed, c=config: Engine(c, seed=seed)
    names = [f"engine-rerank-seed{s}" for s in seeds]
    result = evaluate(load_dataset(args.data), args.protocol, names, k=10)
    for name in names:
        print(name, {key: round(result["models"][name][key], 4) for key in KEYS})
    print("mean", {key: round(float(np.mean([result["models"][n][key] for n in names])), 4) for key in KEYS})


if __name__ == "__main__":
    main()
