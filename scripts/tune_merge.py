#!/usr/bin/env python3
"""Compare merge configurations by recall@depth on validation splits carved from the train side.

    python scripts/tune_merge.py --data movielens:../shared/data/ml-latest-small \\
        --config '{}' --config '{"rule": "fusion", "depth": 5}'

Every source is fitted once per protocol on the inner train side (see tune_sources.py for the carving;
the outer test side is never read); each ``--config`` (a JSON object over ``MergeConfig``'s defaults) is
then only a different merge of the same source lists; the sources and the defaults are the engine's under
each protocol (``engine_config``). Prints each single source's recall too, because
the merged set is only worth its cost if it beats every source alone.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from tune_sources import train_side

from tastemaker.candidates.merge import CandidateGenerator, MergeConfig
from tastemaker.data import Snapshot, load_dataset
from tastemaker.data.splits import evaluation_pairs, split
from tastemaker.evaluation.harness import _relevance
from tastemaker.evaluation.models import engine_config
from tastemaker.metrics import offline as m


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="movielens:../shared/data/ml-latest-small")
    parser.add_argument("--protocol", action="append", default=None)
    parser.add_argument("--config", action="append", default=None, help="JSON object of MergeConfig fields")
    parser.add_argument("--depth", type=int, default=500)
    args = parser.parse_args()
    configs = [json.loads(c) for c in args.config or ["{}"]]
    dataset = load_dataset(args.data)
    for protocol in args.protocol or ["recommenders", "temporal"]:
        inner = train_side(dataset, protocol, 42)
        parts = split(inner.events, protocol, seed=42)
        snap = Snapshot.from_interactions(parts.train, inner.items, inner.users)
        pairs = evaluation_pairs(parts, None)
        users = np.sort(pairs["user_id"].unique())
        idx, relevant = snap.user_index(users), _relevance(pairs, users, snap)

        def recall(ids: np.ndarray, relevant=relevant) -> float:
            return round(float(np.mean(m.recall(m.hits(ids, relevant), relevant))), 4)

        held = engine_config(protocol).merge  # the merge, and its sources' settings, as the engine holds them
        gen = CandidateGenerator(held).fit(snap)
        for name, source in gen.sources.items():
            ids, _ = source.candidates(idx, args.depth, exclude=snap.matrix[idx])
            print(f"{protocol} source {name}: recall@{args.depth} {recall(ids)}")
        for config in configs:
            if "settings" in config:  # the sources are fitted once, above: their settings cannot change here
                raise SystemExit("--config cannot set settings: sources are fitted once (tune_sources.py refits)")
            gen.config = MergeConfig.from_dict({**held.model_dump(), **config})
            merged = gen.generate(idx, exclude=snap.matrix[idx], total=args.depth).items
            print(f"{protocol} merge {json.dumps(config)}: recall@{args.depth} {recall(merged)}", flush=True)


if __name__ == "__main__":
    main()
