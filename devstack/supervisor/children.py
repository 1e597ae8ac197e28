"""Children that die with selfheal, and what a killed run left behind.

``spawn`` starts a command in a session of its own (stopping it signals its whole group, and a
Ctrl-C in the terminal reaches selfheal only) and ties it to this process: on Linux the child
asks the kernel, with ``prctl(PR_SET_PDEATHSIG)``, for a signal when its parent ends, even by
``kill -9``. It does so in a tiny Python wrapper that then ``exec``s the command (same pid), not
in a ``preexec_fn``, which is unsafe in a process with threads. The kernel sends that signal when
the *thread* that forked the child ends, not the process, and the supervisor restarts processes
from request threads that come and go: every child is forked by one thread that lives as long
as this process.

Each child is recorded in ``PID_DIR/<name>.pid``: its pid and the kernel's start time of that
pid, and the same for this process, its owner. ``stop_leftover`` finds a recorded process that
still runs while its owner does not: what a killed run left (where the parent-death signal is
not available, or was ignored). It stops it, the whole group: SIGTERM, then SIGKILL. The start
time tells the process recorded from another that got its pid since.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import IO, Any, TypeVar

import structlog

log = structlog.get_logger(__name__)

T = TypeVar("T")

PR_SET_PDEATHSIG = 1
# Runs as ``python -I -S -c TIE PARENT SIGNAL REPORT_FD COMMAND...``: asks for SIGNAL when the
# parent ends, gives up if it already has, then becomes COMMAND. An exec that fails is written
# to REPORT_FD (closed on a successful exec), so that the caller raises OSError as Popen would.
_TIE = """\
import ctypes, os, sys
parent, sig, report = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, sig, 0, 0, 0)
except (OSError, AttributeError):
    pass
if os.getppid() != parent:
    os._exit(1)
os.set_inheritable(report, False)
try:
    os.execvp(sys.argv[4], sys.argv[4:])
except OSError as exc:
    os.write(report, f"{exc.errno} {exc.strerror}".encode())
    os._exit(127)
"""


def tie_supported() -> bool:
    return sys.platform.startswith("linux")


# ------------------------------------------------------------------------------- identities


@cache
def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_identity(pid: int) -> str | None:
    """Who ``pid`` is: its start time since boot (Linux) or start date (elsewhere); None when no
    such process runs (a zombie does not run)."""
    if pid <= 0:
        return None
    if sys.platform.startswith("linux"):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        # The command name, in parentheses, may hold spaces: fields start after its last ')'.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) < 20 or fields[0] in ("Z", "X"):
            return None
        return f"{_boot_id()}:{fields[19]}"
    try:
        answer = subprocess.run(
            ["ps", "-o", "stat=,lstart=", "-p", str(pid)],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    if not answer or answer.startswith("Z"):
        return None
    return answer.split(None, 1)[-1]


# ------------------------------------------------------------------------------- pid files


@dataclass(frozen=True)
class PidRecord:
    name: str
    pid: int
    identity: str
    owner: int
    owner_identity: str
    command: list[str]

    def describe(self) -> str:
        return f"{self.name} (pid {self.pid}, started by selfheal pid {self.owner})"


def pid_file(pid_dir: Path, name: str) -> Path:
    return pid_dir / f"{name}.pid"


def read_record(path: Path) -> PidRecord | None:
    try:
        raw: Any = json.loads(path.read_text())
        return PidRecord(
            name=str(raw["name"]),
            pid=int(raw["pid"]),
            identity=str(raw["identity"]),
            owner=int(raw["owner"]),
            owner_identity=str(raw["owner_identity"]),
            command=[str(part) for part in raw.get("command", [])],
        )
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _record(pid_dir: Path, name: str, pid: int, command: list[str]) -> None:
    identity = process_identity(pid)
    owner_identity = process_identity(os.getpid())
    if identity is None or owner_identity is None:
        return  # gone already, or nothing to tell it by: a record would prove nothing
    record = PidRecord(name, pid, identity, os.getpid(), owner_identity, command)
    pid_dir.mkdir(parents=True, exist_ok=True)
    path = pid_file(pid_dir, name)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record)))
    os.replace(tmp, path)


def forget(pid_dir: Path, name: str, pid: int) -> None:
    """Remove ``name``'s pid file if it records ``pid`` (a process stopped as it should be)."""
    path = pid_file(pid_dir, name)
    record = read_record(path)
    if record is not None and record.pid == pid:
        path.unlink(missing_ok=True)


def stop_leftover(pid_dir: Path, name: str, *, grace_s: float = 10.0) -> PidRecord | None:
    """Stop the process recorded as ``name`` if a run that is gone left it running; return its
    record then. A process whose owner still runs belongs to that run and is left alone."""
    path = pid_file(pid_dir, name)
    if not path.exists():
        return None
    record = read_record(path)
    if record is None:
        path.unlink(missing_ok=True)
        return None
    if process_identity(record.pid) != record.identity:
        path.unlink(missing_ok=True)  # it ended; its pid may be another process's now
        return None
    if process_identity(record.owner) == record.owner_identity:
        return None  # its run is alive
    log.warning(
        "stopping a process a killed run left running",
        process=record.name,
        pid=record.pid,
        killed_run_pid=record.owner,
        pid_file=str(path),
    )
    _stop_group(record, grace_s)
    path.unlink(missing_ok=True)
    return record


def stop_leftovers(pid_dir: Path, *, grace_s: float = 10.0) -> list[PidRecord]:
    """``stop_leftover`` for every process recorded in ``pid_dir``."""
    if not pid_dir.is_dir():
        return []
    stopped = []
    for path in sorted(pid_dir.glob("*.pid")):
        record = stop_leftover(pid_dir, path.stem, grace_s=grace_s)
        if record is not None:
            stopped.append(record)
    return stopped


def _stop_group(record: PidRecord, grace_s: float) -> None:
    """SIGTERM to the group the process leads, SIGKILL if it is still there after ``grace_s``.
    Not our child: we cannot wait for it, only watch it go."""

    def gone() -> bool:
        return process_identity(record.pid) != record.identity

    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        if gone() and sig is signal.SIGTERM:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(record.pid, sig)  # the leader gone, the rest of its group still goes
        deadline = time.monotonic() + wait_s
        while not gone() and time.monotonic() < deadline:
            time.sleep(0.05)


# ------------------------------------------------------------------------------- spawning


class _Forker:
    """One thread, alive as long as the process, that forks every tied child."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def call(self, func: Callable[[], T]) -> T:
        if threading.current_thread() is self._thread:
            return func()
        future: Future[T] = Future()
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._serve, name="selfheal-forker", daemon=True
                )
                self._thread.start()
            self._jobs.put((func, future))
        return future.result()

    def _serve(self) -> None:
        while True:
            func, future = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(func())
            except BaseException as exc:  # the caller re-raises it
                future.set_exception(exc)

    def reset_after_fork(self) -> None:
        self._lock = threading.Lock()
        self._jobs = queue.SimpleQueue()
        self._thread = None


_FORKER = _Forker()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_FORKER.reset_after_fork)


def spawn(
    name: str,
    command: list[str],
    *,
    pid_dir: Path | None,
    death_signal: signal.Signals,
    stdout: IO[bytes] | int | None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``command`` as the leader of a new session, tied to this process (``death_signal``
    when it ends), recorded in ``pid_dir/<name>.pid``. OSError when it cannot be started."""
    popen = _FORKER.call(lambda: _start(command, death_signal, stdout, env, cwd))
    if pid_dir is not None:
        _record(pid_dir, name, popen.pid, command)
    return popen


def _start(
    command: list[str],
    death_signal: signal.Signals,
    stdout: IO[bytes] | int | None,
    env: dict[str, str] | None,
    cwd: Path | None,
) -> subprocess.Popen[bytes]:
    common: dict[str, Any] = {
        "stdin": subprocess.DEVNULL,
        "stdout": stdout,
        "stderr": subprocess.STDOUT,
        "env": env,
        "cwd": cwd,
        "start_new_session": True,
    }
    if not tie_supported():
        return subprocess.Popen(command, **common)
    read_end, write_end = os.pipe()
    try:
        wrapper = [sys.executable, "-I", "-S", "-c", _TIE, str(os.getpid())]
        wrapper += [str(int(death_signal)), str(write_end), *command]
        popen = subprocess.Popen(wrapper, pass_fds=(write_end,), **common)
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    try:
        report = b""
        while chunk := os.read(read_end, 4096):
            report += chunk
    finally:
        os.close(read_end)
    if report:
        popen.wait()
        number, _, message = report.decode(errors="replace").partition(" ")
        raise OSError(int(number) if number.isdigit() else 0, message, command[0])
    return popen
