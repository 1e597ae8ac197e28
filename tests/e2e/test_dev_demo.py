"""``selfheal dev --demo crash`` as a user runs it: a subprocess that starts the whole stack
(Temporal dev server, embedded Postgres, worker, supervisor, demo target, watcher) in a fresh
data directory on free ports, heals the injected crash, and stops everything it started. A second
run reuses the data directory and heals again. Killed with ``kill -9``, it leaves nothing
running but the embedded Postgres (made to outlive a command), and the next run starts."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from selfheal.devstack.stack import DEV_TOKEN
from tests.support import free_ports, short_tmp_dir, temporal_binary

REPO = Path(__file__).resolve().parents[2]
SELFHEAL = Path(sys.executable).parent / "selfheal"


@pytest.fixture
def data_dir() -> Iterator[Path]:
    with short_tmp_dir("shdev-") as path:
        yield path


def dev_env() -> dict[str, str]:
    temporal, ui, target, supervisor, intake = free_ports(5)
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("SELFHEAL_")},
        "SELFHEAL_DEV__TEMPORAL_PORT": str(temporal),
        "SELFHEAL_DEV__TEMPORAL_UI_PORT": str(ui),
        "SELFHEAL_DEV__TARGET_PORT": str(target),
        "SELFHEAL_DEV__SUPERVISOR_PORT": str(supervisor),
        "SELFHEAL_INTAKE__PORT": str(intake),
    }


def run_demo(data_dir: Path, scenario: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SELFHEAL), "dev", "--data-dir", str(data_dir), "--demo", scenario, "--timeout", "120"],
        cwd=REPO,
        env=dev_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,
    )


def leftover_processes(data_dir: Path) -> list[str]:
    """Processes whose command line names the data directory (temporal, postgres, target)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(data_dir) in cmdline:
            found.append(f"{proc.name}: {cmdline}")
    return found


def assert_healed(result: subprocess.CompletedProcess[str]) -> None:
    report = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 0, report
    assert "process_crashed" in result.stdout, report
    assert "outcome: healed" in result.stdout, report
    assert "target /healthz: 200" in result.stdout, report
    assert "Traceback" not in result.stdout + result.stderr, report


def test_demo_crash_heals_and_stops_everything(data_dir: Path) -> None:
    first = run_demo(data_dir, "crash")
    assert_healed(first)
    assert "root cause: process_crashed (as expected)" in first.stdout
    assert leftover_processes(data_dir) == []

    again = run_demo(data_dir, "crash")
    assert_healed(again)
    assert "0 created, 0 updated" in again.stdout
    assert leftover_processes(data_dir) == []


def test_ctrl_c_stops_everything(data_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "dev.log"
    env = dev_env()
    with log.open("w") as out:
        dev = subprocess.Popen(
            [str(SELFHEAL), "dev", "--data-dir", str(data_dir)],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 120
            while "Ctrl-C stops everything" not in log.read_text():
                assert dev.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            started = [p for p in leftover_processes(data_dir) if not p.startswith(f"{dev.pid}:")]
            assert len(started) >= 4, started  # temporal, postgres, checkout, inventory
            # The intake runs too, with the dev token; a fault submitted there starts a healing.
            intake = f"http://127.0.0.1:{env['SELFHEAL_INTAKE__PORT']}"
            assert httpx.get(f"{intake}/healthz", timeout=5).status_code == 200
            submitted = httpx.post(
                f"{intake}/v1/faults",
                json={"service": "checkout", "type": "health_check_failed", "target": "checkout"},
                headers={"Authorization": f"Bearer {DEV_TOKEN}"},
                timeout=30,
            )
            assert submitted.is_success, submitted.text
            assert submitted.json()["workflow_id"].startswith("heal-"), submitted.text
            dev.send_signal(signal.SIGINT)
            assert dev.wait(60) == 0, log.read_text()
        finally:
            if dev.poll() is None:
                dev.kill()
                dev.wait(30)
    assert leftover_processes(data_dir) == [], log.read_text()


def start_dev(data_dir: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("w") as out:
        return subprocess.Popen(
            [str(SELFHEAL), "dev", "--data-dir", str(data_dir)],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_for_line(dev: subprocess.Popen[bytes], log: Path, text: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in log.read_text():
        assert dev.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"no {text!r} within {timeout_s}s:\n{log.read_text()}"
        time.sleep(0.2)


def stop_postgres(data_dir: Path) -> None:
    """The embedded Postgres a killed run started: it outlives commands by design."""
    try:
        pid = int((data_dir / "postgres" / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)  # fast shutdown
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)


def test_kill_9_leaves_nothing_behind_and_the_next_run_starts(
    data_dir: Path, tmp_path: Path
) -> None:
    env = dev_env()
    intake = f"http://127.0.0.1:{env['SELFHEAL_INTAKE__PORT']}"
    auth = {"Authorization": f"Bearer {DEV_TOKEN}"}
    postgres = f"{data_dir}/postgres"
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    first = start_dev(data_dir, env, first_log)
    second: subprocess.Popen[bytes] | None = None
    try:
        wait_for_line(first, first_log, "Ctrl-C stops everything", 120)
        started = [p for p in leftover_processes(data_dir) if not p.startswith(f"{first.pid}:")]
        assert len(started) >= 4, started  # temporal, postgres, checkout, inventory

        # A healing that waits for a human (a fault the rules diagnose whatever the target's
        # health: memory exhausted, planned as a restart), sent a signal whose input does not
        # decode with the temporal CLI: one warning line on the console, the healing goes on.
        fault = {
            "service": "checkout",
            "type": "memory_pressure",
            "target": "checkout",
            "values": {"memory_utilization": 0.95},
        }
        submitted = httpx.post(
            f"{intake}/v1/faults",
            params={"require_approval": "true"},
            json=fault,
            headers=auth,
            timeout=30,
        )
        assert submitted.is_success, submitted.text
        workflow_id = submitted.json()["workflow_id"]

        def phase() -> str:
            answer = httpx.get(f"{intake}/v1/healings/{workflow_id}", headers=auth, timeout=10)
            assert answer.is_success, answer.text
            return str(answer.json()["phase"])

        deadline = time.monotonic() + 60
        while (now := phase()) != "awaiting_approval":
            assert now in {"diagnosing", "planning"} and time.monotonic() < deadline, now
            time.sleep(0.3)
        signalled = subprocess.run(
            [
                str(temporal_binary()),
                "workflow",
                "signal",
                "--address",
                f"127.0.0.1:{env['SELFHEAL_DEV__TEMPORAL_PORT']}",
                "--workflow-id",
                workflow_id,
                "--name",
                "fault_update",
                "--input",
                '{"kind": 42}',
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert signalled.returncode == 0, signalled.stderr
        wait_for_line(first, first_log, "signal dropped: its input does not decode", 30)
        console = first_log.read_text()
        dropped = [line for line in console.splitlines() if "signal dropped" in line]
        assert len(dropped) == 1, console
        assert "signal=fault_update" in dropped[0] and workflow_id in dropped[0], dropped
        assert "error=" in dropped[0] and "FaultUpdate: kind: Input should" in dropped[0], dropped
        assert "Traceback" not in console, console
        assert phase() == "awaiting_approval"

        first.kill()  # kill -9
        first.wait(10)
        deadline = time.monotonic() + 10
        while left := [p for p in leftover_processes(data_dir) if postgres not in p]:
            assert time.monotonic() < deadline, f"left running by a killed selfheal dev: {left}"
            time.sleep(0.2)

        # The next run, on the same data directory and the same ports, starts and finds the
        # healing where it was; the Postgres the killed run started is reused.
        second = start_dev(data_dir, env, second_log)
        wait_for_line(second, second_log, "Ctrl-C stops everything", 120)
        assert phase() == "awaiting_approval"
        second.send_signal(signal.SIGINT)
        assert second.wait(60) == 0, second_log.read_text()
        assert all(postgres in p for p in leftover_processes(data_dir))
    finally:
        for dev in (first, second):
            if dev is not None and dev.poll() is None:
                dev.kill()
                dev.wait(30)
        stop_postgres(data_dir)
        for left in leftover_processes(data_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(left.split(":", 1)[0]), signal.SIGKILL)
    assert leftover_processes(data_dir) == []
