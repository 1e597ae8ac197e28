"""The demo target as its own process: each injected fault breaks /healthz as documented, the
fix endpoint heals it, and a restart keeps what lives in the state directory."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from selfheal.devstack.demo.scenarios import SCENARIOS
from selfheal.devstack.demo.target import target_command
from tests.integration.demo_stack import free_port, wait_until


class Target:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(base_url=self.url, timeout=2)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(target_command(self.port, self.state_dir))
        wait_until(self.answers, what="the demo target to answer")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def answers(self) -> bool:
        try:
            self.http.get("/healthz", timeout=0.5)
        except httpx.HTTPError:
            return False
        return True

    def healthz(self) -> httpx.Response:
        return self.http.get("/healthz")

    def inject(self, scenario: str) -> None:
        SCENARIOS[scenario].inject(self.url)


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Target]:
    t = Target(tmp_path / "state")
    t.start()
    try:
        yield t
    finally:
        t.stop()
        t.http.close()


def test_healthy_at_start(target: Target) -> None:
    health = target.healthz()
    assert health.status_code == 200
    assert health.json()["checks"] == {"errors": "ok", "cache": "ok"}
    assert target.http.get("/").status_code == 200


def test_error_burst_is_healed_by_the_flag_not_by_a_restart(target: Target) -> None:
    target.inject("error_burst")

    statuses = [target.http.get("/").status_code for _ in range(10)]
    assert statuses.count(500) == 6 and statuses.count(200) == 4
    health = target.healthz()
    assert health.status_code == 503
    body = health.json()
    assert body["status"] == "degraded"
    assert body["checks"] == {"errors": "failing", "cache": "ok"}
    assert body["flags"] == {"new_checkout": True}
    assert body["error_rate"] == pytest.approx(0.6)
    metrics = target.http.get("/metrics").text
    assert "demo_error_ratio 0.6000" in metrics
    assert 'demo_flag_enabled{flag="new_checkout"} 1' in metrics

    target.restart()
    assert target.healthz().status_code == 503

    switched = target.http.put("/flags/new_checkout", json={"enabled": False})
    assert switched.json() == {"name": "new_checkout", "enabled": False}
    assert target.healthz().status_code == 200
    assert target.http.get("/flags/new_checkout").json()["enabled"] is False
    assert all(target.http.get("/").status_code == 200 for _ in range(5))


def test_poisoned_cache_is_healed_by_a_flush_not_by_a_restart(target: Target) -> None:
    target.inject("poisoned_cache")
    health = target.healthz()
    assert health.status_code == 503
    assert health.json()["checks"] == {"errors": "ok", "cache": "poisoned"}
    assert target.http.get("/").status_code == 500
    assert "demo_cache_poisoned 1" in target.http.get("/metrics").text

    target.restart()
    assert target.healthz().json()["checks"]["cache"] == "poisoned"

    assert target.http.post("/admin/cache/flush").json() == {"flushed": 1}
    assert target.healthz().status_code == 200
    assert target.http.get("/").status_code == 200


def test_hang_stops_answering_until_a_restart(target: Target) -> None:
    target.inject("hang")
    wait_until(lambda: not target.answers(), what="the target to hang")
    with pytest.raises(httpx.TimeoutException):
        target.http.get("/healthz", timeout=0.5)
    assert target.proc is not None and target.proc.poll() is None  # alive, yet silent

    target.restart()
    assert target.healthz().status_code == 200


def test_crash_exits_with_code_1_after_answering(target: Target) -> None:
    target.inject("crash")
    assert target.proc is not None
    assert target.proc.wait(timeout=5) == 1
    assert not target.answers()

    target.start()
    assert target.healthz().status_code == 200


def test_bad_requests_are_named(target: Target) -> None:
    wrong = target.http.put("/flags/new_checkout", json={"enabled": "yes"})
    assert wrong.status_code == 400
    assert wrong.json()["field"] == "enabled"
    unknown = target.http.post("/inject/meteor")
    assert unknown.status_code == 404
    assert "error_burst" in unknown.json()["error"]
    assert target.http.get("/nowhere").status_code == 404


def test_reset_brings_back_a_normal_target(target: Target) -> None:
    for scenario in ("error_burst", "poisoned_cache", "dependency_slow"):
        target.inject(scenario)
    target.http.put("/control/degradation", json={"mode": "fallback"})
    assert target.healthz().status_code == 503  # the cache is still poisoned

    assert target.http.post("/admin/reset").json() == {"reset": True}

    health = target.healthz()
    assert health.status_code == 200
    assert health.json()["checks"] == {"errors": "ok", "cache": "ok"}
    assert target.http.get("/control/degradation").json()["mode"] == "normal"
    assert target.http.get("/flags/new_checkout").json()["enabled"] is False
