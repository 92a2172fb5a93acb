"""A trained world and a recommender over it, shared by the serving tests that need a model."""

from __future__ import annotations

import pytest

from tastemaker.clock import FixedClock
from tastemaker.serving import Recommender, ServerSettings
from tastemaker.store import open_store

from ...integration.api.conftest import SERVED_AT, World, build_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """A store and a promoted model (one per test module: tests change the store)."""
    root = tmp_path_factory.mktemp("serving")
    return build_world(root, f"sqlite:///{root / 'store.db'}", only_first=True)


@pytest.fixture
def recommender(world: World):
    clock = FixedClock(SERVED_AT)
    with open_store(world.url, clock=clock) as store:
        yield Recommender.from_settings(store, ServerSettings(db=world.url, models_dir=world.models), clock)
