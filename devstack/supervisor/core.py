"""selfheal's process supervisor: runs named processes and restarts them on request.

It deliberately does not restart a process that crashed: healing is selfheal's job, and a
supervisor that silently restarted would hide the fault. It reports the crash (state
``exited`` with the exit code) and waits for a restart request.

A restart request carries an idempotency key. A key is applied at most once: a repeated key gets
the earlier result back (``replayed: true``), so a retried activity never restarts twice, even
after a worker crash. Applied keys and restart counters are kept in ``state_dir`` so that a
restarted supervisor still knows them. The key is recorded after the restart, so only a crash of
the supervisor itself between the two could let a retry restart once more.

Its processes die with it (``children.spawn``: SIGKILL when the supervisor's process ends, even
by ``kill -9``) and are recorded in ``state_dir/pids``: a supervisor started on the same
directory after a killed one first stops what the killed one left running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import IO

import httpx
from pydantic import BaseModel, Field

from selfheal.devstack.supervisor import children

STATE_FILE = "supervisor-state.json"
PID_DIR = "pids"
MAX_KEY_LENGTH = 256
# Sent to every process when the supervisor's process ends, however it ends: nobody is left to
# escalate from SIGTERM.
DEATH_SIGNAL = signal.SIGKILL


class SupervisorError(Exception):
    """Base of the supervisor's errors."""


class UnknownProcess(SupervisorError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown process {name!r} (known: {', '.join(known) or 'none'})")
        self.name = name
        self.known = known


class IdempotencyConflict(SupervisorError):
    """The key was already applied to another process: the caller reuses keys by mistake."""


class StartFailed(SupervisorError):
    pass


class ProcessState(StrEnum):
    NOT_STARTED = "not_started"
    RUNNING = "running"
    EXITED = "exited"  # ended on its own: crashed or finished
    STOPPED = "stopped"  # stopped by the supervisor


class ProcessStatus(BaseModel):
    name: str
    state: ProcessState
    pid: int | None = None
    exit_code: int | None = None
    restarts: int = 0
    started_at: datetime | None = None
    command: list[str]
    health_url: str | None = None
    healthy: bool | None = Field(
        default=None, description="None when there is no health URL or the process is not running"
    )
    health_status: int | None = Field(
        default=None, description="HTTP status of the health probe; None when it got no answer"
    )
    health_detail: str = ""


class RestartResult(BaseModel):
    process: str
    key: str
    pid: int
    restarts: int
    restarted_at: datetime
    replayed: bool = Field(default=False, description="True when the key had been applied before")


@dataclass
class _Managed:
    name: str
    command: list[str]
    env: dict[str, str]
    cwd: Path | None
    health_url: str | None
    popen: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None
    started_at: datetime | None = None
    stopped: bool = False
    restarts: int = 0


@dataclass
class _Persisted:
    restarts: dict[str, int] = field(default_factory=dict)
    keys: dict[str, RestartResult] = field(default_factory=dict)


class Supervisor:
    def __init__(
        self,
        state_dir: Path,
        *,
        stop_timeout_s: float = 5.0,
        health_timeout_s: float = 1.0,
        key_ttl: timedelta = timedelta(days=7),
    ) -> None:
        self.state_dir = state_dir
        self.stop_timeout_s = stop_timeout_s
        self.health_timeout_s = health_timeout_s
        self.key_ttl = key_ttl
        self._lock = threading.RLock()
        self._procs: dict[str, _Managed] = {}
        state_dir.mkdir(parents=True, exist_ok=True)
        self._state = self._load()

    @property
    def state_file(self) -> Path:
        return self.state_dir / STATE_FILE

    @property
    def pid_dir(self) -> Path:
        """``<name>.pid`` of every process running (``children``): found by the next
        supervisor on this directory if this one is killed."""
        return self.state_dir / PID_DIR

    def add(
        self,
        name: str,
        command: list[str],
        env: dict[str, str] | None = None,
        health_url: str | None = None,
        cwd: Path | None = None,
    ) -> None:
        if not name or "/" in name:
            raise ValueError(f"process name {name!r}: expected a non-empty name without '/'")
        if not command:
            raise ValueError(f"process {name!r}: command must not be empty")
        with self._lock:
            if name in self._procs:
                raise ValueError(f"process {name!r} added twice")
            self._procs[name] = _Managed(
                name=name,
                command=list(command),
                env=dict(env or {}),
                cwd=cwd,
                health_url=health_url,
                restarts=self._state.restarts.get(name, 0),
            )

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._procs)

    def start_all(self) -> None:
        with self._lock:
            for proc in self._procs.values():
                if not _alive(proc):
                    self._start(proc)

    def stop_all(self) -> None:
        with self._lock:
            for proc in self._procs.values():
                self._stop(proc)

    def restart(self, name: str, key: str) -> RestartResult:
        if not key or len(key) > MAX_KEY_LENGTH:
            raise ValueError(f"idempotency key: expected 1-{MAX_KEY_LENGTH} characters")
        with self._lock:
            proc = self._get(name)
            prior = self._state.keys.get(key)
            if prior is not None:
                if prior.process != name:
                    raise IdempotencyConflict(
                        f"idempotency key {key!r} was used to restart {prior.process!r}, "
                        f"not {name!r}"
                    )
                return prior.model_copy(update={"replayed": True})
            self._stop(proc)
            self._start(proc)
            assert proc.popen is not None
            proc.restarts += 1
            result = RestartResult(
                process=name,
                key=key,
                pid=proc.popen.pid,
                restarts=proc.restarts,
                restarted_at=datetime.now(UTC),
            )
            self._state.restarts[name] = proc.restarts
            self._state.keys[key] = result
            self._save()
            return result

    def status(self, name: str) -> ProcessStatus:
        with self._lock:
            status = self._snapshot(self._get(name))
        # Probed outside the lock: a hung process must not block restarts for the probe timeout.
        return self._probe(status)

    def statuses(self) -> list[ProcessStatus]:
        with self._lock:
            snapshots = [self._snapshot(p) for p in sorted(self._procs.values(), key=_by_name)]
        return [self._probe(s) for s in snapshots]

    def _get(self, name: str) -> _Managed:
        try:
            return self._procs[name]
        except KeyError:
            raise UnknownProcess(name, sorted(self._procs)) from None

    def _start(self, proc: _Managed) -> None:
        logs = self.state_dir / "logs"
        logs.mkdir(exist_ok=True)
        log = (logs / f"{proc.name}.log").open("ab")
        try:
            # What a killed supervisor left under this name holds its port: stopped first.
            children.stop_leftover(self.pid_dir, proc.name, grace_s=self.stop_timeout_s)
            # A session of its own makes the process a group leader: stop signals the whole
            # group, so that no grandchild outlives it. Tied to this process: it dies with it.
            proc.popen = children.spawn(
                proc.name,
                proc.command,
                pid_dir=self.pid_dir,
                death_signal=DEATH_SIGNAL,
                stdout=log,
                env={**os.environ, **proc.env},
                cwd=proc.cwd,
            )
        except OSError as exc:
            log.close()
            raise StartFailed(f"cannot start process {proc.name!r}: {exc}") from exc
        if proc.log is not None:
            proc.log.close()
        proc.log = log
        proc.started_at = datetime.now(UTC)
        proc.stopped = False

    def _stop(self, proc: _Managed) -> None:
        popen = proc.popen
        if popen is not None:
            if popen.poll() is None:
                _signal_group(popen.pid, signal.SIGTERM)
                try:
                    popen.wait(self.stop_timeout_s)
                except subprocess.TimeoutExpired:
                    pass
            # The leader may be gone while children of its group live on.
            _signal_group(popen.pid, signal.SIGKILL)
            popen.wait()
            proc.stopped = True
            children.forget(self.pid_dir, proc.name, popen.pid)
        if proc.log is not None:
            proc.log.close()
            proc.log = None

    def _snapshot(self, proc: _Managed) -> ProcessStatus:
        popen = proc.popen
        code = popen.poll() if popen is not None else None
        if popen is None:
            state = ProcessState.NOT_STARTED
        elif code is None:
            state = ProcessState.RUNNING
        elif proc.stopped:
            state = ProcessState.STOPPED
        else:
            state = ProcessState.EXITED
        return ProcessStatus(
            name=proc.name,
            state=state,
            pid=popen.pid if popen is not None else None,
            exit_code=code,
            restarts=proc.restarts,
            started_at=proc.started_at,
            command=proc.command,
            health_url=proc.health_url,
        )

    def _probe(self, status: ProcessStatus) -> ProcessStatus:
        if status.health_url is None or status.state is not ProcessState.RUNNING:
            return status
        try:
            response = httpx.get(status.health_url, timeout=self.health_timeout_s)
        except httpx.TimeoutException:
            return status.model_copy(update={"healthy": False, "health_detail": "timeout"})
        except httpx.HTTPError as exc:
            detail = f"unreachable: {type(exc).__name__}"
            return status.model_copy(update={"healthy": False, "health_detail": detail})
        return status.model_copy(
            update={
                "healthy": response.is_success,
                "health_status": response.status_code,
                "health_detail": f"HTTP {response.status_code}",
            }
        )

    def _load(self) -> _Persisted:
        if not self.state_file.exists():
            return _Persisted()
        try:
            raw = json.loads(self.state_file.read_text())
            return _Persisted(
                restarts={str(k): int(v) for k, v in raw.get("restarts", {}).items()},
                keys={
                    str(k): RestartResult.model_validate(v) for k, v in raw.get("keys", {}).items()
                },
            )
        except (ValueError, TypeError, AttributeError) as exc:
            raise SupervisorError(f"cannot read {self.state_file}: {exc}") from exc

    def _save(self) -> None:
        oldest = datetime.now(UTC) - self.key_ttl
        self._state.keys = {k: r for k, r in self._state.keys.items() if r.restarted_at >= oldest}
        data = {
            "restarts": self._state.restarts,
            "keys": {k: r.model_dump(mode="json") for k, r in self._state.keys.items()},
        }
        tmp = self.state_file.with_suffix(".tmp")
        with tmp.open("w") as fh:
            json.dump(data, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.state_file)


def _alive(proc: _Managed) -> bool:
    return proc.popen is not None and proc.popen.poll() is None


def _by_name(proc: _Managed) -> str:
    return proc.name


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
