"""Typed configuration: pydantic models that reject unknown keys, round-trip to TOML/JSON and hash.

Each component owns a small config model next to its code; :class:`EngineConfig` gathers them into the
file a team edits (``tastemaker.toml``). The hash of the config is logged with every exposure so any
served list can be traced back to the configuration that produced it.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from tastemaker.errors import ConfigError

__all__ = ["ConfigModel", "config_hash"]


class ConfigModel(BaseModel):
    """Base of every config object: immutable, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Validate a plain mapping, turning pydantic's error into a :class:`ConfigError`."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(_describe(cls.__name__, exc)) from None

    @classmethod
    def from_toml(cls, path: str | Path) -> Self:
        with open(path, "rb") as fh:
            try:
                data = tomllib.load(fh)
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        return cls.from_dict(data)

    def hash(self) -> str:
        return config_hash(self)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickle; a config pickled (in a model artifact) before a field was added gets the field's default,
        which every new field keeps to what the code did before it existed."""
        values = state.get("__dict__", {})
        missing = {
            name: field.get_default(call_default_factory=True)
            for name, field in type(self).model_fields.items()
            if name not in values and not field.is_required()
        }
        if missing:
            state = {**state, "__dict__": {**values, **missing}}
        super().__setstate__(state)


def config_hash(model: BaseModel) -> str:
    """A short, stable hash of a config's canonical JSON form."""
    canonical = json.dumps(model.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _describe(name: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{where}: {err['msg']} (got {err.get('input')!r})")
    return f"invalid {name}: " + "; ".join(parts)
