"""Shared helpers for benchmark scripts: machine facts and writing results as JSON."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    import numpy
    import sqlalchemy

    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "numpy": numpy.__version__,
        "sqlalchemy": sqlalchemy.__version__,
    }


def write(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    doc = {"benchmark": name, "command": " ".join([Path(sys.executable).name, *sys.argv]),
           "measured_at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(), **payload}  # fmt: skip
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    return path
