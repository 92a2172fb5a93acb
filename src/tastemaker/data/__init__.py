"""Data in and out of the engine: readers, the synthetic world, import, snapshots and splits."""

from __future__ import annotations

from tastemaker.data.dataset import Dataset, frame_records
from tastemaker.data.importer import ImportReport, import_dataset
from tastemaker.data.movielens import detect_layout, read_movielens
from tastemaker.data.snapshot import EventWeight, Snapshot, SnapshotConfig, to_interactions
from tastemaker.data.splits import PROTOCOLS, Split, evaluation_pairs, split
from tastemaker.data.synthetic import SyntheticConfig, generate
from tastemaker.data.tabular import read_events_table
from tastemaker.errors import DataFormatError

__all__ = [
    "PROTOCOLS",
    "Dataset",
    "EventWeight",
    "ImportReport",
    "Snapshot",
    "SnapshotConfig",
    "Split",
    "SyntheticConfig",
    "detect_layout",
    "evaluation_pairs",
    "frame_records",
    "generate",
    "import_dataset",
    "load_dataset",
    "read_events_table",
    "read_movielens",
    "split",
    "to_interactions",
]


def load_dataset(spec: str) -> Dataset:
    """A dataset by spec: ``movielens:PATH``, ``synthetic`` / ``synthetic:SEED``, or a store URL
    (``sqlite:///PATH``, ``postgresql://...``) whose events, items and users are read whole."""
    scheme, _, rest = spec.partition(":")
    if scheme == "movielens":
        return read_movielens(rest)
    if scheme == "synthetic":
        return generate(SyntheticConfig(seed=int(rest)) if rest else None)
    if scheme.startswith(("sqlite", "postgresql", "postgres")):
        from tastemaker.store import open_store

        with open_store(spec, migrate_schema=False) as store:
            events = store.events_frame()
            return Dataset(name=spec.split("@")[-1], events=events, items=store.items_frame(),
                           users=store.users_frame())  # fmt: skip
    raise DataFormatError(
        f"unknown data spec {spec!r}; use movielens:PATH, synthetic[:SEED], sqlite:///PATH or postgresql://..."
    )
