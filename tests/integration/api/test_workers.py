"""``tastemaker serve --workers 2`` on PostgreSQL: every request answered, every exposure written by the
time a clean shutdown ends, events stored once whichever worker took them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx

from tastemaker.store import open_store

from .conftest import ADMIN, KEYS, build_world, free_port


def test_two_workers_on_postgresql_serve_and_shut_down_cleanly(postgres_url: str, tmp_path: Path) -> None:
    world = build_world(tmp_path, postgres_url, only_first=True)
    config = tmp_path / "tastemaker.toml"
    config.write_text("[server]\npopularity_days = 1000\nexposure_flush_seconds = 5.0\n")  # writes wait for shutdown
    port = free_port()
    cli = Path(sys.executable).parent / "tastemaker"
    server = subprocess.Popen(
        [str(cli), "serve", "--db", postgres_url, "--models-dir", str(world.models), "--port", str(port),
         "--workers", "2", "--config", str(config), "--log-level", "warning"],
        env={**os.environ, "TASTEMAKER_API_KEYS": KEYS}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {ADMIN}"}
    try:
        _wait_until_up(base, server)
        now = datetime.now(UTC).isoformat()

        def one(n: int) -> tuple[int, str, int]:
            with httpx.Client(base_url=base, headers=headers, timeout=30) as c:
                listed = c.get(f"/v1/users/u{n % 300}/recommendations", params={"k": 10})
                body = listed.json()
                event = {"event_id": f"w{n % 50}", "user_id": f"u{n % 300}", "item_id": body["items"][0]["item_id"],
                         "type": "click", "timestamp": now, "request_id": body["request_id"]}  # fmt: skip
                sent = c.post("/v1/events", json={"events": [event]})
                return listed.status_code, body["request_id"], sent.status_code

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(one, range(120)))
        assert {(listed, sent) for listed, _, sent in results} == {(200, 200)}
        route = "/v1/users/{user_id:path}/recommendations"
        for _ in range(8):  # a scrape reaches either worker; each reports both workers' counts
            text = httpx.get(f"{base}/metrics", headers=headers, timeout=30).text
            assert _sample(text, "tastemaker_request_seconds_count", route=route, status="200") == 120
            assert _sample(text, "tastemaker_events_total", outcome="accepted") == 50
            assert _sample(text, "tastemaker_events_total", outcome="duplicate") == 70
            assert _sample(text, "tastemaker_model_info", version=world.version) == 1
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=120)
    assert server.returncode == 0, output
    with open_store(postgres_url) as store:
        exposures = store.exposures_frame()
        assert set(exposures["request_id"]) == {rid for _, rid, _ in results}  # none lost at shutdown
        assert store.counts()["exposures"] == 120
        events = store.events_frame(columns=("event_id", "request_id"))
        assert sorted(events[events["event_id"].str.startswith("w")]["event_id"]) == sorted(f"w{n}" for n in range(50))


def _wait_until_up(base: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the server exited: {server.stdout.read() if server.stdout else ''}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("the server did not start in time")


def _sample(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` carrying ``labels`` (in any order, among others)."""
    total = 0.0
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        metric, _, rest = head.partition("{")
        if metric == name and all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += float(value)
    return total
