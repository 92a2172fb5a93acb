"""The server's settings: one typed config, from a TOML file's ``[server]`` table and the environment.

API keys come from ``TASTEMAKER_API_KEYS`` (``KEY:SCOPE[+SCOPE…]``, comma-separated) or the file's
``api_keys``; a key's text is a :class:`~pydantic.SecretStr` so it is never printed or logged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator

from tastemaker.config import ConfigModel
from tastemaker.errors import ConfigError
from tastemaker.store.engine import DEFAULT_URL

__all__ = ["SCOPES", "ApiKey", "HoldoutConfig", "LimitsConfig", "ServerSettings", "parse_api_keys"]

Scope = Literal["ingest", "recommend", "admin"]
SCOPES: tuple[str, ...] = ("ingest", "recommend", "admin")


class ApiKey(ConfigModel):
    key: SecretStr = Field(min_length=16)
    scopes: frozenset[Scope]


class HoldoutConfig(ConfigModel):
    """The always-on holdout: ``control_share`` of users (by a stable hash of user id and salt) are served
    popularity. Changing the salt reshuffles everyone: do it only between experiments."""

    control_share: float = 0.07
    salt: str = Field(default="tastemaker-holdout-1", min_length=1)

    @field_validator("control_share")
    @classmethod
    def _share(cls, value: float) -> float:
        if not 0.05 <= value <= 0.10:
            raise ValueError(f"holdout control_share must be within 0.05–0.10 (5–10% of users); got {value!r}")
        return value


class LimitsConfig(ConfigModel):
    """Bounds on what one request may ask; over them the API answers 413 or 422, never a 5xx."""

    max_batch: int = Field(default=1_000, ge=1, le=100_000)
    max_k: int = Field(default=500, ge=1, le=500)
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1_024)
    max_id_length: int = Field(default=256, ge=1, le=256)
    max_exclude: int = Field(default=500, ge=0)
    max_context_keys: int = Field(default=16, ge=0)


class ServerSettings(ConfigModel):
    db: str = DEFAULT_URL
    models_dir: Path = Path("models")
    holdout: HoldoutConfig = Field(default_factory=HoldoutConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    api_keys: tuple[ApiKey, ...] = ()
    #: popularity (the control arm and the fallback) counts events of the last this many days
    popularity_days: float = Field(default=30.0, gt=0)
    #: popularity is brought up to date (from the events ingested since) this often; item changes are read every
    #: ``refresh_seconds``
    popularity_refresh_seconds: float = Field(default=60.0, gt=0)
    #: how often the catalog view, popularity, the exposure log the re-rankers read, and the registry are
    #: re-read (a promotion through this server's API is picked up at once)
    refresh_seconds: float = Field(default=10.0, gt=0)
    #: exposures are written off the request path in batches: a batch waits at most this long for more
    exposure_flush_seconds: float = Field(default=0.2, gt=0)
    #: at shutdown, a store that is away is retried this long; what it still would not take is then spilled to
    #: ``exposure_spill_dir`` (default: ``MODELS_DIR/.exposure-spill``) and written back at the next start
    exposure_close_seconds: float = Field(default=20.0, gt=0)
    exposure_spill_dir: Path | None = None
    #: while the store is away, at most this many exposures wait in memory; more are spilled there too
    exposure_max_queued: int = Field(default=100_000, ge=1)
    #: the background threads (the refresher, the exposure writer) run this much nicer than the request threads
    #: (Linux; 0: the same priority). Two workers at 200 lists/s on two cores, three paired runs of the serving
    #: benchmark: p99 24.4 / 22.4 / 22.9 ms with 19, 29.6 / 34.8 / 20.4 with 0 (docs/BENCHMARKS.md)
    background_niceness: int = Field(default=19, ge=0, le=19)
    #: lists asked for while one is computed go together in the next call, at most this many (1: one at a time)
    list_batch: int = Field(default=8, ge=1, le=64)
    #: a list request that waited this long for its turn is refused with 503 and Retry-After instead of served
    #: late: a server behind its load sheds what no client still waits for rather than falling further behind
    list_wait_seconds: float = Field(default=5.0, gt=0)
    #: worker processes sharing the listening socket (``tastemaker serve --workers``)
    workers: int = Field(default=1, ge=1)
    #: with several workers, a list's response asks its client to reconnect (``Connection: close``) when this
    #: worker still has at least this many other lists pending: the client's next request then opens a new
    #: connection, which the worker that is free first accepts, instead of queueing behind this one on a
    #: kept-alive connection. 0: never (one worker never does)
    rebalance_pending: int = Field(default=1, ge=0)
    #: exposure rows the re-rankers read (fatigue, fairness, exploration): the last this many days
    feedback_days: float = Field(default=28.0, gt=0)
    #: at most this many exposure rows are kept for them (the newest): at high traffic the window is shorter
    feedback_max_rows: int = Field(default=2_000_000, ge=1)
    #: events attributed to an exposure that count as engagement with the shown item
    engagement_types: tuple[str, ...] = ("click", "play", "complete", "like", "rating", "purchase")
    seed: int = 42

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> ServerSettings:
        """Settings from ``path``'s ``[server]`` table (if given), then ``TASTEMAKER_API_KEYS``, then
        ``overrides`` (the command line's options)."""
        data: dict[str, Any] = {}
        if path is not None:
            import tomllib

            try:
                with open(path, "rb") as fh:
                    data = dict(tomllib.load(fh).get("server", {}))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"cannot read server settings from {path}: {exc}") from None
        env = os.environ.get("TASTEMAKER_API_KEYS")
        if env:
            data["api_keys"] = parse_api_keys(env)
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(data)


def parse_api_keys(text: str) -> list[ApiKey]:
    """``KEY:SCOPE[+SCOPE…]`` entries, comma-separated. The error never repeats a key's text."""
    keys = []
    for n, entry in enumerate(e.strip() for e in text.split(",")):
        if not entry:
            continue
        key, sep, scopes = entry.rpartition(":")
        if not sep or not key:
            raise ConfigError(f"TASTEMAKER_API_KEYS entry {n + 1}: expected KEY:SCOPE[+SCOPE...]")
        names = [s.strip() for s in scopes.split("+")]
        unknown = [s for s in names if s not in SCOPES]
        if unknown:
            raise ConfigError(f"TASTEMAKER_API_KEYS entry {n + 1}: unknown scope {unknown[0]!r}; known: "
                              + ", ".join(SCOPES))  # fmt: skip
        if len(key) < 16:
            raise ConfigError(f"TASTEMAKER_API_KEYS entry {n + 1}: a key must be at least 16 characters")
        keys.append(ApiKey(key=SecretStr(key), scopes=frozenset(names)))
    return keys
