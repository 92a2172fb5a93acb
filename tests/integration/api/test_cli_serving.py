"""``tastemaker recommend`` and ``tastemaker serve``'s start-up checks, through Typer's runner."""

from __future__ import annotations

from typer.testing import CliRunner

from tastemaker.cli import app
from tastemaker.serving import HoldoutConfig, assign

from .conftest import SERVED_AT, World

runner = CliRunner()


def test_recommend_prints_the_list_the_server_would_serve(world: World) -> None:
    user = next(f"u{n}" for n in range(300) if assign([f"u{n}"], HoldoutConfig())[0] == "personalized")
    args = ["recommend", user, "-k", "7", "--context", "device=mobile", "--db", world.url,
            "--models-dir", str(world.models), "--now", SERVED_AT]  # fmt: skip
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    assert f"variant personalized · model {world.version}" in done.output
    rows = [line for line in done.output.splitlines() if line.startswith("│")]
    assert len(rows) == 7 and rows[0].split("│")[1].strip() == "1"
    bad = runner.invoke(app, ["recommend", user, "--context", "mobile", "--db", world.url])
    assert bad.exit_code != 0 and "expected KEY=VALUE" in bad.output


def test_serve_refuses_to_listen_beyond_localhost_without_keys(world: World, monkeypatch) -> None:
    monkeypatch.delenv("TASTEMAKER_API_KEYS", raising=False)
    done = runner.invoke(app, ["serve", "--db", world.url, "--host", "0.0.0.0"])
    assert done.exit_code == 1 and "refusing to bind to '0.0.0.0' without API keys" in done.output


def test_serve_refuses_a_holdout_outside_5_to_10_percent(world: World, tmp_path) -> None:
    config = tmp_path / "tastemaker.toml"
    config.write_text("[server.holdout]\ncontrol_share = 0.2\n")
    done = runner.invoke(app, ["serve", "--db", world.url, "--config", str(config)])
    assert done.exit_code == 1 and "control_share must be within 0.05–0.10" in done.output
