"""Shared fixtures: an injected clock, small datasets, and store URLs for every back end."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tastemaker.clock import FixedClock
from tastemaker.data import Dataset, SyntheticConfig, generate

from .postgres import Cluster, find_bindir

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
MOVIELENS_SMALL = ROOT.parent / "shared" / "data" / "ml-latest-small"
NOW = "2026-11-26T12:00:00+00:00"

needs_movielens = pytest.mark.skipif(
    not (MOVIELENS_SMALL / "ratings.csv").is_file(),
    reason=f"MovieLens ml-latest-small not found at {MOVIELENS_SMALL} (it is never copied into the repo)",
)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture(scope="session")
def small_world() -> Dataset:
    """A small synthetic world (fast to generate, enough structure for ALS to beat popularity)."""
    return generate(SyntheticConfig(n_users=300, n_items=200, n_categories=8, days=28, seed=3))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """URL of a PostgreSQL server's admin database: an existing one, or a throwaway cluster."""
    existing = os.environ.get("TASTEMAKER_TEST_POSTGRES_URL")
    if existing:
        yield existing
        return
    bindir = find_bindir()
    if bindir is None:
        message = "PostgreSQL server binaries (initdb, pg_ctl) not found; set TASTEMAKER_PG_BINDIR"
        if os.environ.get("TASTEMAKER_REQUIRE_POSTGRES"):
            pytest.fail(message)
        pytest.skip(message)
    cluster = Cluster(bindir)
    cluster.start()
    try:
        yield cluster.url
    finally:
        cluster.stop()


_db_numbers = itertools.count()


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """A fresh, empty database on the test server."""
    import psycopg

    name = f"t{os.getpid()}_{next(_db_numbers)}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return postgres_server.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store test runs once per back end."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("postgres_url")
