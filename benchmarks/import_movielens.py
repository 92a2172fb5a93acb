#!/usr/bin/env python3
"""Bulk import of ml-latest-small (read + import) into a fresh SQLite store, then a re-import.

    python benchmarks/import_movielens.py [--path ../shared/data/ml-latest-small] [--repeats 3]

Target: the first import <= 10 s. The re-import must store nothing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _common import write

from tastemaker.data import import_dataset, read_movielens
from tastemaker.store import open_store

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 10.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", type=Path, default=ROOT.parent / "shared" / "data" / "ml-latest-small")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not (args.path / "ratings.csv").is_file():
        print(f"skipped: ml-latest-small not found at {args.path} (pass --path); it is never copied into the repo")
        return
    first, second, counts = [], [], {}
    for r in range(args.repeats):
        with (
            tempfile.TemporaryDirectory() as tmp,
            open_store(f"sqlite:///{Path(tmp) / f'ml{r}.db'}") as store,
        ):
            started = time.perf_counter()
            report = import_dataset(store, read_movielens(args.path))
            first.append(time.perf_counter() - started)
            started = time.perf_counter()
            again = import_dataset(store, read_movielens(args.path))
            second.append(time.perf_counter() - started)
            assert again.events_accepted == 0 and report.events_accepted == 100_836
            counts = store.counts()
    write("import_movielens", {
        "dataset": str(args.path.name), "repeats": args.repeats, "rows": counts,
        "first_import_seconds": round(statistics.median(first), 2),
        "reimport_seconds": round(statistics.median(second), 2),
        "all_runs_first": [round(x, 2) for x in first],
        "target_seconds": TARGET_SECONDS,
        "meets_target": statistics.median(first) <= TARGET_SECONDS,
    })  # fmt: skip


if __name__ == "__main__":
    main()
