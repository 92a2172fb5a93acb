"""tastemaker: a personalization engine. Events in, ranked personal lists out, with proof they help."""

from tastemaker.candidates import History
from tastemaker.candidates.merge import CandidateGenerator, MergeConfig
from tastemaker.client import Client
from tastemaker.clock import Clock, FixedClock, SystemClock
from tastemaker.data import (
    Dataset,
    Snapshot,
    SnapshotConfig,
    import_dataset,
    load_dataset,
    read_movielens,
    split,
)
from tastemaker.errors import (
    ConfigError,
    DataFormatError,
    InvalidBatchError,
    NotFittedError,
    RecordError,
    StoreError,
    TastemakerError,
    UnknownNameError,
)
from tastemaker.evaluation import evaluate
from tastemaker.store import ExposedItem, Exposure, Store, open_store

__version__ = "0.1.0"

__all__ = [
    "CandidateGenerator",
    "History",
    "MergeConfig",
    "Client",
    "Clock",
    "ConfigError",
    "DataFormatError",
    "Dataset",
    "ExposedItem",
    "Exposure",
    "FixedClock",
    "InvalidBatchError",
    "NotFittedError",
    "RecordError",
    "Snapshot",
    "SnapshotConfig",
    "Store",
    "StoreError",
    "SystemClock",
    "TastemakerError",
    "UnknownNameError",
    "evaluate",
    "import_dataset",
    "load_dataset",
    "open_store",
    "read_movielens",
    "split",
]
