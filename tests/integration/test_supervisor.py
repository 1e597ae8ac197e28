"""The supervisor with real subprocesses, and its HTTP control API served on 127.0.0.1."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from selfheal.devstack.supervisor import (
    IdempotencyConflict,
    ProcessState,
    ServerHandle,
    StartFailed,
    Supervisor,
    UnknownProcess,
    create_app,
    serve_in_thread,
)
from tests.integration.demo_stack import free_port, wait_until

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[Supervisor]:
    sup = Supervisor(tmp_path / "state", stop_timeout_s=1.0)
    try:
        yield sup
    finally:
        sup.stop_all()


def pid_of(sup: Supervisor, name: str) -> int:
    pid = sup.status(name).pid
    assert pid is not None
    return pid


def test_restart_is_applied_once_per_key(supervisor: Supervisor) -> None:
    supervisor.add("app", SLEEPER)
    supervisor.start_all()
    original = pid_of(supervisor, "app")

    first = supervisor.restart("app", "heal-1/0/0")
    again = supervisor.restart("app", "heal-1/0/0")

    assert first.pid != original and not alive(original)
    assert first.restarts == 1 and not first.replayed
    assert again.replayed and again.pid == first.pid and again.restarts == 1
    assert pid_of(supervisor, "app") == first.pid
    assert supervisor.status("app").restarts == 1

    other = supervisor.restart("app", "heal-1/0/1")
    assert not other.replayed and other.restarts == 2 and other.pid != first.pid
    assert not alive(first.pid)


def test_applied_keys_survive_a_new_supervisor(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = Supervisor(state, stop_timeout_s=1.0)
    first.add("app", SLEEPER)
    first.start_all()
    applied = first.restart("app", "heal-2/0/0")
    first.stop_all()

    second = Supervisor(state, stop_timeout_s=1.0)
    second.add("app", SLEEPER)
    second.start_all()
    try:
        running = pid_of(second, "app")
        replay = second.restart("app", "heal-2/0/0")
        assert replay.replayed and replay.pid == applied.pid and replay.restarts == 1
        assert pid_of(second, "app") == running  # nothing was restarted
        assert second.status("app").restarts == 1  # the counter carried over
        assert second.restart("app", "heal-2/0/1").restarts == 2
    finally:
        second.stop_all()
    saved = json.loads((state / "supervisor-state.json").read_text())
    assert set(saved["keys"]) == {"heal-2/0/0", "heal-2/0/1"}


def test_a_key_applied_to_another_process_is_refused(supervisor: Supervisor) -> None:
    supervisor.add("a", SLEEPER)
    supervisor.add("b", SLEEPER)
    supervisor.start_all()
    supervisor.restart("a", "k")
    with pytest.raises(IdempotencyConflict, match="'a'"):
        supervisor.restart("b", "k")


def test_unknown_process_names_the_known_ones(supervisor: Supervisor) -> None:
    supervisor.add("web", SLEEPER)
    with pytest.raises(UnknownProcess, match=r"'api'.*known: web"):
        supervisor.restart("api", "k")
    with pytest.raises(UnknownProcess):
        supervisor.status("api")


def test_crashed_process_is_reported_exited_and_not_restarted(supervisor: Supervisor) -> None:
    supervisor.add("flaky", [sys.executable, "-c", "import sys; sys.exit(3)"])
    supervisor.start_all()
    wait_until(lambda: supervisor.status("flaky").state is ProcessState.EXITED, what="exit")
    time.sleep(0.3)
    status = supervisor.status("flaky")
    assert status.state is ProcessState.EXITED
    assert status.exit_code == 3
    assert status.restarts == 0


def test_stop_all_leaves_no_process(supervisor: Supervisor, tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    spawner = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(120)\n"
    )
    stubborn = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(120)"
    supervisor.add("spawner", [sys.executable, "-c", spawner])
    supervisor.add("stubborn", [sys.executable, "-c", stubborn])
    supervisor.start_all()
    wait_until(lambda: pid_file.exists() and pid_file.read_text() != "", what="the grandchild")
    pids = [pid_of(supervisor, "spawner"), pid_of(supervisor, "stubborn")]
    grandchild = int(pid_file.read_text())
    assert all(alive(pid) for pid in [*pids, grandchild])
    time.sleep(0.2)  # let the stubborn one install its SIGTERM handler

    supervisor.stop_all()

    wait_until(lambda: not alive(grandchild), timeout_s=3, what="the grandchild to go")
    assert not any(alive(pid) for pid in pids)
    assert {s.state for s in supervisor.statuses()} == {ProcessState.STOPPED}


def test_start_failure_names_the_process(supervisor: Supervisor) -> None:
    supervisor.add("ghost", ["/nonexistent/binary"])
    with pytest.raises(StartFailed, match="ghost"):
        supervisor.start_all()


@pytest.fixture
def api(supervisor: Supervisor) -> Iterator[ServerHandle]:
    handle = serve_in_thread(create_app(supervisor))
    try:
        yield handle
    finally:
        handle.stop()


def test_control_api(supervisor: Supervisor, api: ServerHandle) -> None:
    health_port = free_port()
    health_url = f"http://127.0.0.1:{health_port}/"
    server = [sys.executable, "-m", "http.server", str(health_port), "--bind", "127.0.0.1"]
    supervisor.add("web", server, health_url=health_url)
    supervisor.add("idle", SLEEPER)
    supervisor.start_all()

    with httpx.Client(base_url=api.url, timeout=10) as http:
        wait_until(lambda: http.get("/processes/web").json()["healthy"] is True, what="web")
        listing = http.get("/processes").json()["processes"]
        assert [p["name"] for p in listing] == ["idle", "web"]
        assert listing[0]["healthy"] is None and listing[0]["state"] == "running"

        missing = http.get("/processes/nope")
        assert missing.status_code == 404
        assert missing.json() == {
            "error": "unknown process 'nope' (known: idle, web)",
            "known": ["idle", "web"],
        }

        no_key = http.post("/processes/web/restart")
        assert no_key.status_code == 400
        assert "Idempotency-Key" in no_key.json()["error"]

        headers = {"Idempotency-Key": "heal-x/0/0"}
        first = http.post("/processes/web/restart", headers=headers)
        assert first.status_code == 200, first.text
        assert first.json()["restarts"] == 1 and first.json()["replayed"] is False
        again = http.post("/processes/web/restart", headers=headers).json()
        assert again["replayed"] is True and again["pid"] == first.json()["pid"]
        assert http.post("/processes/nope/restart", headers=headers).status_code == 404
        assert http.post("/processes/idle/restart", headers=headers).status_code == 409

        wait_until(lambda: http.get("/processes/web").json()["healthy"] is True, what="web")
        os.kill(first.json()["pid"], 9)
        wait_until(lambda: http.get("/processes/web").json()["state"] == "exited", what="exit")
        assert http.get("/processes/web").json()["exit_code"] == -9


def test_a_hung_process_is_reported_unhealthy(supervisor: Supervisor, api: ServerHandle) -> None:
    port = free_port()
    # Listens, never answers: the probe times out.
    hung = (
        f"import socket, time\ns = socket.create_server(('127.0.0.1', {port}))\ntime.sleep(120)\n"
    )
    supervisor.add("hung", [sys.executable, "-c", hung], health_url=f"http://127.0.0.1:{port}/")
    supervisor.start_all()
    wait_until(lambda: supervisor.status("hung").health_detail == "timeout", what="a timeout")
    status = httpx.get(f"{api.url}/processes/hung", timeout=10).json()
    assert status["state"] == "running" and status["healthy"] is False
