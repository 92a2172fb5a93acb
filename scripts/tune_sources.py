#!/usr/bin/env python3
"""Choose a source's defaults on validation splits carved from the train side, never from test.

    python scripts/tune_sources.py als --data movielens:../shared/data/ml-latest-small \\
        --grid factors=64,128 --grid regularization=1,5,20 --grid alpha=1,5,20
    python scripts/tune_sources.py engine --protocol recommenders --grid features.disabled=none,als_dot+user_history

For each protocol, the outer split's train side becomes a dataset of its own, which the same protocol
splits again (train' / validation); every grid point is fitted on train' and scored on validation by
nDCG@k (or ``--metric``). A point's score is its mean metric relative to the best point of each
protocol, so both protocols weigh the same. The test side of the outer split is never read. The engine, the
merge (``candidates``) and each source start from what the engine holds under each protocol
(``engine_config``: e.g. under ``recommenders`` the sequence source reads the whole history); a grid's
fields are set over that. ``--split-seed`` (repeatable) carves the train side from other outer splits and
averages over them: under ``recommenders`` one split's validation reads the engine against EASE 2–4% apart
from another's (docs/EVALUATION.md).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd

from tastemaker.candidates.merge import SOURCES, CandidateGenerator
from tastemaker.data import Dataset, load_dataset
from tastemaker.data.splits import split
from tastemaker.evaluation import evaluate
from tastemaker.evaluation.models import MODELS, engine_config


def train_side(dataset: Dataset, protocol: str, seed: int) -> Dataset:
    """The outer train side as events (one per pair: MovieLens pairs are single ratings)."""
    train = split(dataset.events, protocol, seed=seed).train
    events = pd.DataFrame({
        "event_id": [f"t{i}" for i in range(len(train))],
        "user_id": train["user_id"], "item_id": train["item_id"], "type": "rating",
        "value": train["rating"].to_numpy(float), "timestamp_us": train["timestamp_us"].to_numpy(np.int64),
    })  # fmt: skip
    return Dataset(f"{dataset.name} (train side of {protocol})", events, dataset.items, dataset.users)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", choices=sorted([*SOURCES, "candidates", "engine"]))
    parser.add_argument("--data", default="movielens:../shared/data/ml-latest-small")
    parser.add_argument("--protocol", action="append", default=None)
    parser.add_argument("--grid", action="append", default=[], help="FIELD=V1,V2,... (repeatable)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--metric", default=None, help="what to maximise (default ndcg@K), e.g. recall@500")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--also", default="", help="other metrics to print beside it, e.g. diversity,coverage,gini")
    parser.add_argument(
        "--split-seed", type=int, action="append", default=None,
        help="the outer split's seed (default 42, the harness's); repeat it to average over several train sides "
        "(one split's users move a figure by ~2%: docs/EVALUATION.md)",
    )  # fmt: skip
    parser.add_argument(
        "--seeds", type=int, default=1,
        help="fit each point with this many model seeds (42, 43, ...) and average: steadier for noisy models",
    )  # fmt: skip
    args = parser.parse_args()
    protocols = args.protocol or ["recommenders", "temporal"]
    fields = {}
    for entry in args.grid:
        name, _, values = entry.partition("=")
        fields[name] = [_parse(v) for v in values.split(",")]
    points = [dict(zip(fields, combo, strict=True)) for combo in itertools.product(*fields.values())] or [{}]
    metric = args.metric or f"ndcg@{args.k}"
    depth = [int(metric.split("@")[1])] if metric.startswith("recall@") else []
    if args.source == "engine":
        from tastemaker.ranking import Engine

        base: object = Engine(seed=42)
    else:
        base = CandidateGenerator(seed=42) if args.source == "candidates" else SOURCES[args.source](42)
    config_type = type(base.config)

    def register(protocol: str) -> None:
        held = engine_config(protocol)  # the engine, its merge and its sources as the harness holds them here
        for i, point in enumerate(points):
            values = {**base.config.model_dump(), **held.merge.settings.get(args.source, {})}
            if args.source == "engine":  # k-item lists, as the harness scores them
                values = {**held.model_dump(by_alias=True), "list_length": args.k}
            elif args.source == "candidates":
                values = held.merge.model_dump()
            for key, value in point.items():  # "quotas.als" sets values["quotas"]["als"]
                *path, last = key.split(".")
                target = values
                for part in path:  # a number indexes a list: "rerank.stages.6.share"
                    target = target[int(part)] if isinstance(target, list) else target[part]
                if isinstance(target, dict) and isinstance(
                    target.get(last), list
                ):  # a list field: "a+b", or "none" for an empty list
                    value = [] if value is None else str(value).split("+")
                target[last] = value
            config = config_type.from_dict(values)
            for j in range(args.seeds):
                MODELS[f"grid{i}s{j}"] = lambda seed, c=config, j=j: (
                    type(base)(c) if not _takes_seed(base) else type(base)(c, seed=seed + j)
                )

    dataset = load_dataset(args.data)
    table = {}
    also = [name for name in args.also.split(",") if name]
    extra: dict[str, list[dict[str, float]]] = {}
    split_seeds = args.split_seed or [42]
    for protocol in protocols:
        register(protocol)
        names = [f"grid{i}s{j}" for i in range(len(points)) for j in range(args.seeds)]
        results = []
        for split_seed in split_seeds:  # each point's mean over the outer splits and the model seeds
            inner = train_side(dataset, protocol, split_seed)
            results.append(evaluate(inner, protocol, names, k=args.k, recall_at=depth))
            print(f"{protocol} (split seed {split_seed}): validation users {results[-1]['n_users_evaluated']}")

        def mean(point: int, name: str, results: list = results) -> float:
            return float(np.mean([r["models"][f"grid{point}s{j}"][name] for r in results for j in range(args.seeds)]))

        table[protocol] = [mean(i, metric) for i in range(len(points))]
        extra[protocol] = [{name: mean(i, name) for name in also} for i in range(len(points))]
    relative = np.mean([np.array(v) / max(v) for v in table.values()], axis=0)
    rows = sorted(range(len(points)), key=lambda i: -relative[i])
    for i in rows:
        cells = "  ".join(
            f"{p} {table[p][i]:.4f}" + "".join(f" {n} {extra[p][i][n]:.4f}" for n in also) for p in protocols
        )
        print(f"{relative[i]:.4f}  {cells}  {points[i]}")
    print(f"best: {points[rows[0]]}")
    if args.json:
        doc = {"source": args.source, "data": args.data, "k": args.k, "metric": metric, "protocols": protocols,
               "points": [{"params": points[i], "relative": float(relative[i]),
                           **{p: table[p][i] for p in protocols},
                           **{f"{p} {n}": extra[p][i][n] for p in protocols for n in also}} for i in rows]}  # fmt: skip
        args.json.write_text(json.dumps(doc, indent=2) + "\n")


def _takes_seed(source: object) -> bool:
    return hasattr(source, "seed")


def _parse(text: str) -> object:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"none": None, "true": True, "false": False}.get(text.lower(), text)


if __name__ == "__main__":
    main()
