"""``selfheal dev --demo crash`` as a user runs it: a subprocess that starts the whole stack
(Temporal dev server, embedded Postgres, worker, supervisor, demo target, watcher) in a fresh
data directory on free ports, heals the injected crash, and stops everything it started. A second
run reuses the data directory and heals again."""

from __future__ import annotations

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
from tests.support import free_ports, short_tmp_dir

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
            assert len(started) >= 3, started  # temporal, postgres, the demo target
            # The intake runs too, with the dev token; a fault submitted there starts a healing.
            intake = f"http://127.0.0.1:{env['SELFHEAL_INTAKE__PORT']}"
            assert httpx.get(f"{intake}/healthz", timeout=5).status_code == 200
            submitted = httpx.post(
                f"{intake}/v1/faults",
                json={"service": "demo", "type": "health_check_failed", "target": "demo-target"},
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
