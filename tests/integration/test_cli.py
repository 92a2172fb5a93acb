"""The command line, through Typer's runner: import (idempotent, strict and lenient), the demo, train and models."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from tastemaker.cli import app
from tastemaker.store import open_store

from ..conftest import FIXTURES

runner = CliRunner()


def test_importing_a_movielens_folder_twice_changes_nothing(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'ml.db'}"
    first = runner.invoke(app, ["import", "movielens", str(FIXTURES / "movielens" / "latest"), "--db", db])
    assert first.exit_code == 0, first.output
    with open_store(db) as store:
        counts = store.counts()
    second = runner.invoke(app, ["import", "movielens", str(FIXTURES / "movielens" / "latest"), "--db", db])
    assert second.exit_code == 0, second.output
    assert "events accepted 0" in second.output
    with open_store(db) as store:
        assert store.counts() == counts
        assert counts["events"] > 300 and counts["items"] > 20


def _events_csv(path: Path) -> Path:
    pd.DataFrame({
        "customer": ["c1", "c2", "c3", "c4"],
        "sku": ["s1", "s2", "s3", "s4"],
        "ts": [1_767_225_600, 1_767_225_601, 1_767_225_602, 1_767_225_603],
        "kind": ["view", "purchase", "teleport", "click"],
    }).to_csv(path, index=False)  # fmt: skip
    return path


def test_strict_import_rejects_the_batch_naming_record_and_field(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'e.db'}"
    mapping = ["--map", "user_id=customer", "--map", "item_id=sku", "--map", "timestamp=ts", "--map", "type=kind"]
    args = ["import", "events", str(_events_csv(tmp_path / "e.csv")), "--db", db, *mapping]
    strict = runner.invoke(app, args)
    assert strict.exit_code == 2
    assert "record 2: type: unknown event type 'teleport'" in strict.output
    with open_store(db) as store:
        assert store.counts()["events"] == 0
    lenient = runner.invoke(app, [*args, "--mode", "lenient"])
    assert lenient.exit_code == 0, lenient.output
    assert "accepted 3" in lenient.output and "rejected 1" in lenient.output
    with open_store(db) as store:
        assert sorted(store.events_frame()["user_id"]) == ["c1", "c2", "c4"]


def test_bad_input_is_one_clear_line_not_a_traceback(tmp_path: Path) -> None:
    result = runner.invoke(app, ["import", "movielens", str(tmp_path), "--db", f"sqlite:///{tmp_path / 'x.db'}"])
    assert result.exit_code == 1
    assert "no MovieLens ratings file" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["evaluate", "--data", "synthetic:1", "--protocol", "shuffle"])
    assert result.exit_code == 1 and "unknown protocol 'shuffle'" in result.output


def test_the_demo_imports_twice_and_prints_the_table(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'demo.db'}"
    result = runner.invoke(app, ["demo", "--db", db, "--users", "150", "--items", "120"])
    assert result.exit_code == 0, result.output
    assert "import again:  items 120 · users 150 · events accepted 0" in result.output
    for model in ("popularity", "random", "implicit-als", "engine"):
        assert model in result.output


def test_train_writes_versioned_models_that_can_be_promoted_and_rolled_back(tmp_path: Path) -> None:
    from tastemaker.data import SyntheticConfig, generate, import_dataset
    from tastemaker.store import open_store

    db, models = f"sqlite:///{tmp_path / 't.db'}", str(tmp_path / "models")
    with open_store(db) as store:
        import_dataset(store, generate(SyntheticConfig(n_users=200, n_items=150, days=21, seed=2)))
    first = runner.invoke(app, ["train", "--db", db, "--models-dir", models, "--now", "2030-01-01T00:00:00Z",
                                "--promote"])  # fmt: skip
    assert first.exit_code == 0, first.output
    assert "model 20300101T000000Z-" in first.output and "promoted" in first.output
    second = runner.invoke(app, ["train", "--db", db, "--models-dir", models, "--now", "2030-01-08T00:00:00Z"])
    assert second.exit_code == 0, second.output
    listed = runner.invoke(app, ["models", "list", "--models-dir", models])
    rows = [line for line in listed.output.splitlines() if "2030010" in line]
    assert len(rows) == 2 and "*" in rows[0] and "*" not in rows[1]  # the second is written, not served
    v1, v2 = (re.search(r"2030\d{4}T\d{6}Z-[0-9a-f]{8}", row).group(0) for row in rows)
    shown = runner.invoke(app, ["models", "show", v2, "--models-dir", models])
    assert shown.exit_code == 0 and "als_rank" in shown.output and "gain" in shown.output
    assert "ranker 0: trees correct" in shown.output and "alone" in shown.output  # the prior and its score
    assert "ranker: the mean of 3" in shown.output
    assert runner.invoke(app, ["models", "promote", v2, "--models-dir", models]).output.strip() == f"serving {v2}"
    assert runner.invoke(app, ["models", "rollback", "--models-dir", models]).output.strip() == f"serving {v1}"
    refused = runner.invoke(app, ["models", "promote", "v9", "--models-dir", models])
    assert refused.exit_code == 1 and "unknown model version 'v9'" in refused.output
    # an artifact written before the ranker was an ensemble (format 1) is shown, and refused for serving
    manifest_file = Path(models) / v2 / "manifest.json"
    old = json.loads(manifest_file.read_text())
    del old["format"], old["ranker"]["members"]
    manifest_file.write_text(json.dumps(old))
    shown = runner.invoke(app, ["models", "show", v2, "--models-dir", models])
    assert shown.exit_code == 0 and "format 1 artifact" in shown.output and "als_rank" in shown.output
    refused = runner.invoke(app, ["models", "promote", v2, "--models-dir", models])
    assert refused.exit_code == 1 and "has format 1" in refused.output
