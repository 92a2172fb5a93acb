"""Prometheus metrics shared by several worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_WORKER = """
import os, sys
from tastemaker.api.metrics import Metrics
metrics = Metrics()
assert metrics.shared
metrics.serving(sys.argv[1])
if sys.argv[2] == "killed":
    os._exit(0)  # gone without closing, as a killed worker
print(metrics.render().decode())
"""


def _worker(folder: Path, version: str, end: str) -> str:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    done = subprocess.run([sys.executable, "-c", _WORKER, version, end], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_killed_workers_model_gauge_is_not_reported(tmp_path: Path) -> None:
    _worker(tmp_path, "old", "killed")
    assert list(tmp_path.glob("gauge_livemax_*.db"))  # it left its live gauge behind
    text = _worker(tmp_path, "new", "alive")
    assert 'tastemaker_model_info{version="new"} 1.0' in text
    assert 'version="old"' not in text
