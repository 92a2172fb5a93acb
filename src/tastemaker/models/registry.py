"""Model artifacts and the registry that points at one of them.

An **artifact** is a folder ``ROOT/VERSION/`` written once and never changed:

- ``manifest.json`` — version, creation time (from the injected clock), library versions, the feature
  schema, the engine config and its hash, the training window, training-set sizes, the ranker's
  validation score and feature importances, and a SHA-256 of every other file;
- ``engine.pkl`` — the fitted engine (sources, feature builder, ranker; FAISS indexes serialized by
  FAISS itself);
- ``ranker-N.txt`` — each of the ranker's LightGBM boosters (``ranker.folds``) in its text form, for reading;
- ``native/`` — the boosters' trees compiled to object code, one file per booster, CPU model and compiler
  version (a cache: written when the artifact is saved, and by the first load on another kind of machine;
  not checksummed, never required).

An artifact records its ``format``; one written in another layout (older code's) is refused on load.

The **registry** is ``ROOT/registry.json``: the version being served and the promotion history. It is
replaced atomically (write to a temporary file, then ``os.replace``), so a reader sees the old file or the
new one, never half of one. ``rollback`` goes back to the version promoted before the current one.
Promotions are meant to come from one operator at a time: two promotions racing each other may lose one
history entry (there is no lock yet).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import platform
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from tastemaker.clock import Clock, SystemClock, from_us
from tastemaker.data.snapshot import Snapshot
from tastemaker.errors import ArtifactError, ConfigError, DataFormatError
from tastemaker.ranking.engine import Engine, EngineConfig
from tastemaker.ranking.features import SCHEMA_VERSION
from tastemaker.ranking.training import SplitConfig
from tastemaker.store.base import Store

__all__ = ["Artifact", "Registry", "load_engine", "save_engine", "train"]

_log = logging.getLogger(__name__)
#: the artifact layout (bump when engine.pkl's objects or the files change): 2 — the ranker is an ensemble;
#: 3 — the engine carries its re-ranking chain and catalog; 4 — sources keep users' rows as ``UserRows``
ARTIFACT_FORMAT = 4
#: formats this code loads: 3's plain user matrices are wrapped as ``UserRows`` when unpickled
_READABLE = (3, 4)
_LIBRARIES = ("tastemaker", "numpy", "scipy", "pandas", "implicit", "faiss-cpu", "lightgbm", "lleaves", "scikit-learn")


@dataclass(frozen=True)
class Artifact:
    version: str
    path: Path
    manifest: dict[str, Any]


def save_engine(engine: Engine, root: str | Path, *, clock: Clock | None = None) -> Artifact:
    """Write ``engine`` as a new artifact under ``root``; returns it (the registry is not changed). The
    engine's ranker is compiled on the way (``LightGBMRanker.compile``), so the caller's engine serves with
    native trees afterwards too."""
    root = Path(root)
    now = (clock or SystemClock()).now_us()
    config_hash = engine.config.hash()
    version = f"{from_us(now).strftime('%Y%m%dT%H%M%SZ')}-{config_hash[:8]}"
    final = root / version
    if final.exists():
        raise ConfigError(f"model version {version!r} already exists under {root}")
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=root))  # renamed into place when complete
    (staging / "engine.pkl").write_bytes(pickle.dumps(engine, protocol=pickle.HIGHEST_PROTOCOL))
    ranker = engine.ranker
    texts = [f"ranker-{i}.txt" for i in range(len(ranker.members))]
    for name, member in zip(texts, ranker.members, strict=True):
        (staging / name).write_text(member.booster.model_to_string())
    _compile(engine, staging / "native")
    snapshot = engine.snapshot
    manifest = {
        "format": ARTIFACT_FORMAT,
        "version": version,
        "created_at": from_us(now).isoformat(),
        "created_at_us": now,
        "schema_version": SCHEMA_VERSION,
        "feature_schema": engine.schema.model_dump(),
        "config": engine.config.model_dump(mode="json"),
        "config_hash": config_hash,
        "seed": engine.seed,
        "training_window": {
            "end_us": snapshot.end_us,
            "users": snapshot.n_users,
            "items": snapshot.n_items,
            "interactions": int(snapshot.matrix.nnz),
        },  # fmt: skip
        "training_set": engine.training,
        "fit_seconds": engine.fit_seconds,
        "offline_metrics": {  # the boosters' means, each on the queries it early-stopped on
            "validation_ndcg": ranker.validation_score(),
            "validation_ndcg_base_alone": ranker.prior_score,
        },
        "ranker": {
            "base_only": ranker.prior_only,
            "trees": sum(m.booster.num_trees() for m in ranker.members if not m.prior_only),
            "members": [
                {
                    "base": m.base,
                    "base_only": m.prior_only,
                    "trees": m.booster.num_trees(),
                    "validation_ndcg": m.validation_score(),
                    "validation_ndcg_base_alone": m.prior_score,
                }
                for m in ranker.members
            ],
        },  # fmt: skip
        # serving ignores the trees when none beat the base ranking on validation: no importance to show then
        "feature_importance": {} if ranker.prior_only else ranker.importances(),
        "sources": list(engine.generator.sources),
        "skipped_sources": engine.generator.skipped,
        "libraries": {**_versions(), "python": platform.python_version()},
        "files": {name: _sha256(staging / name) for name in ("engine.pkl", *texts)},
    }
    _write_json(staging / "manifest.json", manifest)
    os.replace(staging, final)
    return Artifact(version, final, manifest)


def train(
    store: Store,
    root: str | Path,
    *,
    config: EngineConfig | None = None,
    seed: int = 42,
    promote: bool = False,
    clock: Clock | None = None,
) -> Artifact:
    """Fit an engine on everything in ``store`` before the clock's now, save it under ``root`` and, if asked,
    promote it. The clock is the store's unless given (an injected clock makes a run reproducible)."""
    clock = clock or store.clock
    snapshot = Snapshot.from_store(store, cutoff_us=clock.now_us())
    if snapshot.matrix.nnz == 0:
        raise ConfigError("the store has no events before now: nothing to train on")
    config = config or EngineConfig(split=SplitConfig(kind="global"))  # a true point in time: one t0 for all
    engine = Engine(config, seed=seed).fit(snapshot)
    artifact = save_engine(engine, root, clock=clock)
    if promote:
        Registry(root).promote(artifact.version)
    return artifact


def load_engine(path: str | Path) -> tuple[Engine, dict[str, Any]]:
    """The engine and manifest of the artifact at ``path``, after checking it is whole and compatible."""
    path = Path(path)
    manifest = _manifest(path)
    _check_compatible(path, manifest)
    for name, digest in manifest.get("files", {}).items():
        if not (path / name).is_file() or _sha256(path / name) != digest:
            raise ArtifactError(f"artifact {path.name}: {name} is missing or does not match its manifest checksum")
    try:
        engine = pickle.loads((path / "engine.pkl").read_bytes())  # noqa: S301 - our own artifact, checksummed
    except Exception as exc:  # any unpickling failure means the artifact cannot be served
        raise ArtifactError(f"artifact {path.name}: engine.pkl cannot be loaded ({exc})") from exc
    if not isinstance(engine, Engine):
        raise ArtifactError(f"artifact {path.name}: engine.pkl holds a {type(engine).__name__}, not an Engine")
    _compile(engine, path / "native")
    return engine, manifest


def _check_compatible(path: Path, manifest: dict[str, Any]) -> None:
    """Refuse an artifact this code cannot serve: another layout, or features of another schema."""
    found = manifest.get("format", 1)  # artifacts before the format number were format 1
    if found not in _READABLE:
        newer = isinstance(found, int) and found > ARTIFACT_FORMAT
        raise ArtifactError(
            f"artifact {path.name} has format {found}; this tastemaker reads format {ARTIFACT_FORMAT}: "
            + ("upgrade tastemaker" if newer else "train a new model")
        )
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ArtifactError(
            f"artifact {path.name} has feature schema v{manifest.get('schema_version')}; this tastemaker reads "
            f"v{SCHEMA_VERSION}: train a new model"
        )


def _compile(engine: Engine, cache: Path) -> None:
    """The ranker's trees as native code, through ``cache``; LightGBM's own predictor (same scores, slower)
    when that fails: an artifact that loads is served."""
    try:
        try:
            engine.ranker.compile(cache)
        except OSError:  # a read-only artifact folder: compile in memory
            engine.ranker.compile()
    except Exception as exc:
        _log.warning("ranker not compiled to native code (%s); LightGBM predicts instead", exc)


class Registry:
    """Which artifact under ``root`` is served; see the module docstring."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def _file(self) -> Path:
        return self.root / "registry.json"

    def _state(self) -> dict[str, Any]:
        if not self._file.exists():
            return {"current": None, "history": []}
        try:
            return json.loads(self._file.read_text())
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"{self._file} is not valid JSON: {exc}") from exc

    def versions(self) -> list[Artifact]:
        """Every complete artifact under ``root``, oldest first."""
        found = []
        for path in sorted(self.root.glob("*/manifest.json")):
            try:
                found.append(Artifact(path.parent.name, path.parent, _manifest(path.parent)))
            except ArtifactError:  # an unreadable manifest: that folder is not offered, the others still are
                continue
        return found

    @property
    def current(self) -> str | None:
        return self._state()["current"]

    def get(self, version: str) -> Artifact:
        path = self.root / version
        if not (path / "manifest.json").is_file():
            known = [a.version for a in self.versions()]
            raise ConfigError(f"unknown model version {version!r}; known: {', '.join(known) or 'none'}")
        return Artifact(version, path, _manifest(path))

    def promote(self, version: str) -> Artifact:
        """Serve ``version`` from now on (it must be a complete artifact this code can serve)."""
        artifact = self.get(version)
        _check_compatible(artifact.path, artifact.manifest)
        state = self._state()
        if state["current"] == version:  # already served: a repeat must not make rollback a no-op
            return artifact
        state["history"] = [*state["history"], version]
        state["current"] = version
        _write_json(self._file, state)
        return artifact

    def rollback(self) -> Artifact:
        """Serve the version promoted before the current one."""
        state = self._state()
        if len(state["history"]) < 2:
            raise ConfigError("nothing to roll back to: fewer than two promotions in the registry's history")
        history = state["history"][:-1]
        artifact = self.get(history[-1])
        _check_compatible(artifact.path, artifact.manifest)  # never roll back onto what cannot be served
        _write_json(self._file, {"current": history[-1], "history": history})
        return artifact

    def load_current(self) -> tuple[Engine, dict[str, Any]]:
        if self.current is None:
            raise ArtifactError(f"no model promoted under {self.root}: run `tastemaker train` then promote one")
        return load_engine(self.root / self.current)


def _manifest(path: Path) -> dict[str, Any]:
    file = path / "manifest.json"
    if not file.is_file():
        raise ArtifactError(f"{path} is not a model artifact: no manifest.json")
    try:
        manifest = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{file} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{file} is not a JSON object")
    return manifest


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    handle, name = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(handle, "w") as out:
        json.dump(payload, out, indent=2)
        out.write("\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(name, path)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _versions() -> dict[str, str]:
    found = {}
    for name in _LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found
