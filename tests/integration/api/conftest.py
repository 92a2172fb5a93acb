"""A store holding a small synthetic world, a model trained on it, and real uvicorn servers on 127.0.0.1."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from tastemaker.api import create_app
from tastemaker.candidates.merge import MergeConfig
from tastemaker.clock import FixedClock
from tastemaker.data import SyntheticConfig, generate, import_dataset
from tastemaker.models.registry import train
from tastemaker.ranking import EngineConfig, RankerConfig
from tastemaker.ranking.training import SplitConfig
from tastemaker.reranking import RerankConfig
from tastemaker.serving.settings import ServerSettings, parse_api_keys
from tastemaker.store import open_store

TRAINED_AT = "2026-02-03T00:00:00Z"  # the synthetic world runs 2026-01-05 to 2026-02-02
SERVED_AT = "2026-02-04T00:00:00Z"
CONFIG = EngineConfig(
    merge=MergeConfig(total=100), ranker=RankerConfig(max_rounds=30), split=SplitConfig(kind="global")
)
ADMIN, INGEST, RECOMMEND = "admin-key-0123456789", "ingest-key-0123456789", "recommend-key-0123456789"
KEYS = f"{ADMIN}:admin+ingest+recommend,{INGEST}:ingest,{RECOMMEND}:recommend"


#: a chain without exploration (lists are the same for every request id) whose fatigue drops an item shown
#: twice without engagement: what the real-time fatigue test watches
FATIGUE = CONFIG.model_copy(update={"rerank": RerankConfig.from_dict({"stages": [
    {"stage": "filter"}, {"stage": "fatigue", "min_impressions": 2, "action": "filter"},
]})})  # fmt: skip


@dataclass(frozen=True)
class World:
    url: str
    models: Path
    version: str  # promoted
    second: str  # trained later, with another seed; not promoted
    fatigue: str  # the FATIGUE chain; not promoted


def build_world(root: Path, url: str, *, only_first: bool = False) -> World:
    """The synthetic world in the store at ``url`` and three models (or only the promoted one) under
    ``root / "models"``."""
    world = generate(SyntheticConfig(n_users=300, n_items=200, n_categories=8, days=28, seed=3))
    models = root / "models"
    with open_store(url, clock=FixedClock(TRAINED_AT)) as store:
        import_dataset(store, world)
        first = train(store, models, config=CONFIG, promote=True)
        if only_first:
            return World(url, models, first.version, "", "")
        second = train(store, models, config=CONFIG, seed=7, clock=FixedClock("2026-02-03T01:00:00Z"))
        fatigue = train(store, models, config=FATIGUE)
    return World(url, models, first.version, second.version, fatigue.version)


@pytest.fixture(scope="session")
def world_template(tmp_path_factory: pytest.TempPathFactory) -> World:
    """A SQLite store with the world and its models (built once per session, copied for each test)."""
    root = tmp_path_factory.mktemp("world")
    return build_world(root, f"sqlite:///{root / 'store.db'}")


@pytest.fixture
def world(world_template: World, tmp_path: Path) -> World:
    """A private copy of the template."""
    shutil.copy(world_template.url.removeprefix("sqlite:///"), tmp_path / "store.db")
    shutil.copytree(world_template.models, tmp_path / "models")
    return World(f"sqlite:///{tmp_path / 'store.db'}", tmp_path / "models", world_template.version,
                 world_template.second, world_template.fatigue)  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(settings: ServerSettings, clock: FixedClock | None = None, *, app: FastAPI | None = None) -> Iterator[str]:
    """A real uvicorn server on 127.0.0.1 in a thread (of ``app``, by default one of ``settings``); yields its
    base URL; a clean shutdown on exit."""
    app = app or create_app(settings, clock=clock or FixedClock(SERVED_AT))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)


@pytest.fixture
def settings_for(world: World) -> Callable[..., ServerSettings]:
    def make(**over: object) -> ServerSettings:
        base = {"db": world.url, "models_dir": str(world.models), "refresh_seconds": 0.2}
        return ServerSettings.from_dict({**base, **over})

    return make


@pytest.fixture
def server(settings_for: Callable[..., ServerSettings]) -> Iterator[str]:
    """A server with the three keys of ``KEYS``."""
    with serving(settings_for(api_keys=parse_api_keys(KEYS))) as url:
        yield url


def client(url: str, key: str = ADMIN) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
