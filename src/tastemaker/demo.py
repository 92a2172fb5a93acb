"""The demo job: a synthetic world imported into a store, then evaluated. Needs nothing downloaded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tastemaker.clock import FixedClock, to_us
from tastemaker.data import Dataset, SyntheticConfig, generate, import_dataset, load_dataset
from tastemaker.data.importer import ImportReport, Progress
from tastemaker.data.synthetic import DAY_US
from tastemaker.evaluation import evaluate
from tastemaker.store import open_store

__all__ = ["DemoResult", "run_demo"]

DEMO_MODELS = (
    "popularity", "random", "implicit-als", "als", "item_knn", "sequence", "ease", "content", "candidates", "engine",
)  # fmt: skip


@dataclass
class DemoResult:
    dataset: Dataset
    first_import: ImportReport
    second_import: ImportReport
    counts: dict[str, int]
    evaluation: dict[str, Any]


def run_demo(
    db_url: str,
    *,
    synthetic: SyntheticConfig | None = None,
    protocol: str = "temporal",
    progress: Progress | None = None,
) -> DemoResult:
    """Generate, import (twice, to show the import is idempotent), read back from the store, evaluate."""
    cfg = synthetic or SyntheticConfig()
    dataset = generate(cfg)
    # Time is injected: the store's "now" is the end of the synthetic window, whatever today's date is.
    clock = FixedClock.from_us(to_us(cfg.start) + cfg.days * DAY_US)
    with open_store(db_url, clock=clock) as store:
        first = import_dataset(store, dataset, progress=progress)
        second = import_dataset(store, dataset, progress=progress)
        counts = store.counts()
    stored = load_dataset(db_url)
    evaluation = evaluate(stored, protocol, DEMO_MODELS, k=10, progress=progress)
    return DemoResult(dataset, first, second, counts, evaluation)
