from __future__ import annotations

import pytest

from tastemaker.data import SnapshotConfig, SyntheticConfig
from tastemaker.errors import ConfigError
from tastemaker.store import ValidationConfig


def test_unknown_keys_are_refused_with_the_path() -> None:
    with pytest.raises(ConfigError, match=r"invalid ValidationConfig: max_future_skew: Extra inputs"):
        ValidationConfig.from_dict({"max_future_skew": 10})
    with pytest.raises(ConfigError, match=r"event_weights.view.wieght"):
        SnapshotConfig.from_dict({"event_weights": {"view": {"wieght": 1}}})


def test_bad_values_are_refused_with_the_value() -> None:
    with pytest.raises(ConfigError, match=r"max_id_length: .*less than or equal to 256 \(got 1000\)"):
        ValidationConfig.from_dict({"max_id_length": 1000})


def test_toml_round_trip_and_a_stable_hash(tmp_path) -> None:
    path = tmp_path / "v.toml"
    path.write_text('event_types = ["view", "buy"]\nmax_future_skew_seconds = 60\n')
    config = ValidationConfig.from_toml(path)
    assert config.event_types == ("view", "buy") and config.max_future_skew_seconds == 60
    assert config.hash() == ValidationConfig(event_types=("view", "buy"), max_future_skew_seconds=60).hash()
    assert config.hash() != ValidationConfig().hash()
    path.write_text("event_types = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        ValidationConfig.from_toml(path)


def test_configs_are_immutable() -> None:
    with pytest.raises(Exception, match="frozen"):
        SyntheticConfig().seed = 3  # type: ignore[misc]
