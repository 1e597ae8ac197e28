"""The processes of ``selfheal dev``, for real: the Temporal dev server on a reused data
directory, a port already taken, and an embedded Postgres stopped only by the run that started
it. The Temporal server and the supervisor's processes die with the process that started them,
even by ``kill -9``; where one could outlive it, the next run on the data directory stops it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client

from selfheal.core.database import to_libpq_url
from selfheal.core.settings import DatabaseSettings, DevSettings, Settings
from selfheal.devstack.processes import (
    DevDatabase,
    DevStackError,
    TemporalDevServer,
    stop_leftovers,
)
from selfheal.devstack.stack import watch_temporal
from selfheal.devstack.supervisor import Supervisor, children
from selfheal.workflows.contract import SEARCH_ATTRIBUTES
from tests.support import free_ports, short_tmp_dir

pytestmark = pytest.mark.integration


@pytest.fixture
def data_dir() -> Iterator[Path]:
    with short_tmp_dir("shds-") as path:
        yield path


async def registered_attributes(address: str) -> set[str]:
    client = await Client.connect(address)
    response = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace="default")
    )
    return set(response.custom_attributes)


async def test_dev_server_restarts_on_its_data_dir(data_dir: Path) -> None:
    port, ui_port = free_ports(2)
    for _ in range(2):
        server = TemporalDevServer(data_dir, port=port, ui_port=ui_port)
        await server.start()
        try:
            assert set(SEARCH_ATTRIBUTES) <= await registered_attributes(server.address)
        finally:
            server.stop()
        with pytest.raises(RuntimeError):
            await Client.connect(server.address)
    assert (data_dir / "temporal.db").exists()


async def test_the_stack_notices_its_temporal_server_dying(data_dir: Path) -> None:
    port, ui_port = free_ports(2)
    server = TemporalDevServer(data_dir, port=port, ui_port=ui_port)
    await server.start()
    stop = asyncio.Event()
    try:
        watching = asyncio.create_task(watch_temporal(server, stop))
        await asyncio.sleep(0.7)
        assert not watching.done()  # alive: nothing to say
        os.killpg(server._process._process.pid, signal.SIGKILL)  # type: ignore[union-attr]
        with pytest.raises(DevStackError, match=r"exited with code -9 \(log: .*temporal.log\)"):
            await asyncio.wait_for(watching, 5)
    finally:
        server.stop()
    quiet = asyncio.create_task(watch_temporal(server, stop))
    stop.set()
    assert await asyncio.wait_for(quiet, 2) is None  # a stopped stack: the watch just ends


async def test_port_in_use_is_named(data_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = TemporalDevServer(data_dir, port=port, ui_port=free_ports(1)[0])
        with pytest.raises(DevStackError, match=f"port {port} .* SELFHEAL_DEV__TEMPORAL_PORT"):
            await server.start()


def answers(url: str) -> bool:
    try:
        with psycopg.connect(to_libpq_url(url), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


def test_embedded_postgres_is_stopped_only_by_its_starter(data_dir: Path) -> None:
    settings = Settings(dev=DevSettings(data_dir=data_dir), database=DatabaseSettings())
    starter = DevDatabase(settings)
    url = starter.start()
    try:
        assert answers(url)
        reuser = DevDatabase(settings)
        assert reuser.start() == url
        reuser.stop()
        assert answers(url), "a run that found the server running must leave it running"
    finally:
        starter.stop()
    assert not answers(url)
    assert not (data_dir / "postgres" / "postmaster.pid").exists()


# ------------------------------------------------------------- what a killed run leaves behind

SLEEPER = [sys.executable, "-c", "import time; time.sleep(300)"]

# A stand-in for ``selfheal dev``: starts the Temporal dev server (if given ports) and a
# supervised process on DATA_DIR, restarts that process from a thread that then ends (as the
# supervisor's API does from its request threads), prints their pids, and waits to be killed.
# ``untied`` plays a platform without a parent-death signal.
OWNER = """
import asyncio, json, sys, threading
from pathlib import Path
from selfheal.devstack.processes import TemporalDevServer
from selfheal.devstack.supervisor import Supervisor, children

data_dir, ports, untied = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "untied"
if untied:
    children.tie_supported = lambda: False
pids = {}
if ports:
    port, ui_port = map(int, ports.split(","))
    server = TemporalDevServer(data_dir, port=port, ui_port=ui_port)
    asyncio.run(server.start())
    pids["temporal"] = server._process._process.pid
supervisor = Supervisor(data_dir / "supervisor", stop_timeout_s=1.0)
supervisor.add("app", [sys.executable, "-c", "import time; time.sleep(300)"])
supervisor.start_all()
restarter = threading.Thread(target=supervisor.restart, args=("app", "key-1"))
restarter.start()
restarter.join()
pids["app"] = supervisor.status("app").pid
print(json.dumps(pids), flush=True)
threading.Event().wait()
"""


def alive(pid: int) -> bool:
    return children.process_identity(pid) is not None


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}"
        time.sleep(0.05)


class Owner:
    """The stand-in, started; ``pids`` of what it started; ``kill`` is ``kill -9``."""

    def __init__(self, data_dir: Path, ports: list[int] | None, *, untied: bool = False) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                OWNER,
                str(data_dir),
                ",".join(map(str, ports or [])),
                "untied" if untied else "tied",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait(5)
            self.process.stdout.close()
            raise AssertionError(f"the stand-in exited with {code}")
        self.pids: dict[str, int] = json.loads(line)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def cleanup(self) -> None:
        if self.process.poll() is None:
            self.kill()
        for pid in self.pids.values():
            if alive(pid):
                os.killpg(pid, signal.SIGKILL)


def test_children_die_with_the_process_that_started_them(data_dir: Path) -> None:
    owner = Owner(data_dir, free_ports(2))
    try:
        time.sleep(0.5)
        # Started from a thread that has ended since: still running.
        assert all(alive(pid) for pid in owner.pids.values()), owner.pids
        assert (data_dir / "pids" / "temporal.pid").exists()
        assert (data_dir / "supervisor" / "pids" / "app.pid").exists()
        owner.kill()
        wait_for(
            lambda: not any(alive(pid) for pid in owner.pids.values()),
            timeout_s=10,
            what=f"{owner.pids} to die with their parent",
        )
    finally:
        owner.cleanup()


async def test_a_restart_stops_what_a_killed_run_left(data_dir: Path) -> None:
    """Where the children outlive a killed run (no parent-death signal), the next Temporal server
    and supervisor on the data directory stop them first: the ports are free again."""
    ports = free_ports(2)
    owner = Owner(data_dir, ports, untied=True)
    server = TemporalDevServer(data_dir, port=ports[0], ui_port=ports[1])
    supervisor = Supervisor(data_dir / "supervisor", stop_timeout_s=1.0)
    try:
        owner.kill()
        time.sleep(0.3)
        assert all(alive(pid) for pid in owner.pids.values()), "left running, as on macOS"

        await server.start()  # without the leftover stopped: "port ... is already in use"
        assert not alive(owner.pids["temporal"])
        supervisor.add("app", SLEEPER)
        supervisor.start_all()
        assert not alive(owner.pids["app"])
        new_app = supervisor.status("app").pid
        assert new_app is not None and alive(new_app)
        recorded = children.read_record(data_dir / "supervisor" / "pids" / "app.pid")
        assert recorded is not None and recorded.pid == new_app and recorded.owner == os.getpid()
    finally:
        server.stop()
        supervisor.stop_all()
        owner.cleanup()
    # Stopped as it should be, a process is no longer recorded.
    assert not list(data_dir.glob("**/pids/*.pid"))


def test_stop_leftovers_says_what_it_stopped_and_spares_a_live_run(data_dir: Path) -> None:
    owner = Owner(data_dir, None, untied=True)
    live = Supervisor(data_dir / "live", stop_timeout_s=1.0)
    try:
        owner.kill()
        live.add("mine", SLEEPER)
        live.start_all()
        mine = live.status("mine").pid
        assert mine is not None

        lines = stop_leftovers(data_dir)

        app = owner.pids["app"]
        assert lines == [
            f"stopped app (pid {app}, started by selfheal pid {owner.process.pid}), "
            "left running by a killed selfheal dev"
        ]
        assert not alive(app)
        assert alive(mine), "a process of a run that is alive is not a leftover"
        assert stop_leftovers(data_dir) == []
    finally:
        live.stop_all()
        owner.cleanup()


def test_a_reused_pid_is_not_taken_for_the_process_recorded(data_dir: Path) -> None:
    """The pid file names a pid that another process has now (this one): it is left alone."""
    pid_dir = data_dir / "pids"
    pid_dir.mkdir()
    record = {
        "name": "temporal",
        "pid": os.getpid(),
        "identity": "another-boot:1",
        "owner": 999_999_999,
        "owner_identity": "gone",
        "command": ["temporal"],
    }
    (pid_dir / "temporal.pid").write_text(json.dumps(record))
    assert stop_leftovers(data_dir) == []
    assert not (pid_dir / "temporal.pid").exists()
