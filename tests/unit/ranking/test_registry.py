"""Model artifacts round-trip; the registry promotes, rolls back and refuses what it cannot serve."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tastemaker.candidates import AnnConfig, VectorIndex
from tastemaker.candidates.merge import MergeConfig
from tastemaker.clock import FixedClock
from tastemaker.data import Dataset, Snapshot
from tastemaker.errors import ArtifactError, ConfigError
from tastemaker.models import Registry, load_engine, save_engine
from tastemaker.models.registry import ARTIFACT_FORMAT
from tastemaker.ranking import SCHEMA_VERSION, Engine, EngineConfig, RankerConfig

CONFIG = EngineConfig(merge=MergeConfig(total=100), ranker=RankerConfig(max_rounds=30))


@pytest.fixture(scope="module")
def fitted(small_world: Dataset) -> tuple[Engine, Snapshot]:
    snap = Snapshot.from_dataset(small_world)
    return Engine(CONFIG, seed=4).fit(snap), snap


def test_an_artifact_loads_into_an_engine_that_ranks_the_same(fitted: tuple[Engine, Snapshot], tmp_path: Path) -> None:
    engine, snap = fitted
    artifact = save_engine(engine, tmp_path, clock=FixedClock("2026-11-27T10:00:00Z"))
    assert artifact.version.startswith("20261127T100000Z-")
    manifest = json.loads((artifact.path / "manifest.json").read_text())
    assert manifest["feature_schema"]["names"] == engine.schema.names
    assert manifest["config_hash"] == CONFIG.hash() and manifest["libraries"]["lightgbm"]
    assert manifest["training_set"]["train"]["queries"] > 0 and "validation_ndcg" in manifest["offline_metrics"]
    members = engine.ranker.members
    assert manifest["format"] == ARTIFACT_FORMAT == 4 and len(manifest["ranker"]["members"]) == len(members) == 3
    assert set(manifest["files"]) == {"engine.pkl", "ranker-0.txt", "ranker-1.txt", "ranker-2.txt"}
    compiled = sum(not m.prior_only for m in members)  # a booster no tree of which helped serves no trees
    assert len(list((artifact.path / "native").glob("ranker-*.o"))) == compiled
    loaded, _ = load_engine(artifact.path)
    assert loaded.ranker.compiled != engine.ranker.prior_only  # the trees run as native code when served
    users = np.arange(0, snap.n_users, 7)
    want = engine.candidates(users, 10, exclude=snap.matrix[users])
    got = loaded.candidates(users, 10, exclude=snap.matrix[users])
    assert np.array_equal(want[0], got[0])
    np.testing.assert_allclose(want[1], got[1])


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_faiss_indexes_survive_pickling(kind: str) -> None:
    import pickle

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((2_000, 8)).astype(np.float32)
    index = VectorIndex(AnnConfig(exact_below=0, large=kind)).build(vectors)
    copy = pickle.loads(pickle.dumps(index))
    assert copy.kind == kind
    np.testing.assert_allclose(copy.vectors, vectors)
    assert np.array_equal(copy.search(vectors[:5], 10)[0], index.search(vectors[:5], 10)[0])


def test_promote_and_rollback_move_the_served_version(fitted: tuple[Engine, Snapshot], tmp_path: Path) -> None:
    engine, _ = fitted
    first = save_engine(engine, tmp_path, clock=FixedClock("2026-11-20T00:00:00Z"))
    second = save_engine(engine, tmp_path, clock=FixedClock("2026-11-27T00:00:00Z"))
    registry = Registry(tmp_path)
    assert registry.current is None and [a.version for a in registry.versions()] == [first.version, second.version]
    with pytest.raises(ArtifactError, match="no model promoted"):
        registry.load_current()
    with pytest.raises(ConfigError, match="nothing to roll back to"):
        registry.rollback()
    registry.promote(first.version)
    registry.promote(second.version)
    assert registry.current == second.version
    assert registry.rollback().version == first.version and registry.current == first.version
    with pytest.raises(ConfigError, match=r"unknown model version 'nope'; known: 2026"):
        registry.promote("nope")


def test_a_tampered_or_foreign_artifact_is_refused(fitted: tuple[Engine, Snapshot], tmp_path: Path) -> None:
    engine, _ = fitted
    artifact = save_engine(engine, tmp_path, clock=FixedClock("2026-11-27T00:00:00Z"))
    (artifact.path / "engine.pkl").write_bytes(b"not a pickle")
    with pytest.raises(ArtifactError, match="does not match its manifest checksum"):
        load_engine(artifact.path)
    other = save_engine(engine, tmp_path / "b", clock=FixedClock("2026-11-27T00:00:00Z"))
    manifest = json.loads((other.path / "manifest.json").read_text())
    (other.path / "manifest.json").write_text(json.dumps({**manifest, "schema_version": 0}))
    with pytest.raises(ArtifactError, match=f"has feature schema v0; this tastemaker reads v{SCHEMA_VERSION}"):
        load_engine(other.path)
    older = {key: value for key, value in manifest.items() if key != "format"}  # written by older code
    (other.path / "manifest.json").write_text(json.dumps(older))
    with pytest.raises(ArtifactError, match="has format 1; this tastemaker reads format 4: train a new model"):
        load_engine(other.path)
    with pytest.raises(ArtifactError, match="has format 1"):  # nor is it promoted
        Registry(tmp_path / "b").promote(other.version)
    (other.path / "manifest.json").write_text(json.dumps({**manifest, "format": 3}))
    assert isinstance(load_engine(other.path)[0], Engine)  # format 3 still loads (its user matrices are wrapped)
    (other.path / "manifest.json").write_text(json.dumps({**manifest, "format": 5}))
    with pytest.raises(ArtifactError, match="has format 5; this tastemaker reads format 4: upgrade tastemaker"):
        load_engine(other.path)
    with pytest.raises(ArtifactError, match="not a model artifact"):
        load_engine(tmp_path / "missing")


def test_promoting_the_served_version_again_changes_nothing(fitted: tuple[Engine, Snapshot], tmp_path: Path) -> None:
    engine, _ = fitted
    first = save_engine(engine, tmp_path, clock=FixedClock("2026-11-20T00:00:00Z"))
    second = save_engine(engine, tmp_path, clock=FixedClock("2026-11-27T00:00:00Z"))
    registry = Registry(tmp_path)
    for version in (first.version, second.version, second.version):
        registry.promote(version)
    assert registry.rollback().version == first.version
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{not json")
    assert [a.version for a in registry.versions()] == [first.version, second.version]
