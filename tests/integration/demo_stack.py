"""A real demo target under a real supervisor, its control API served on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from selfheal.devstack.demo.target import target_command
from selfheal.devstack.supervisor import ServerHandle, Supervisor, create_app, serve_in_thread
from tests.support import free_port

TARGET = "demo-target"


@dataclass
class DemoStack:
    supervisor: Supervisor
    api: ServerHandle
    target_url: str

    @property
    def supervisor_url(self) -> str:
        return self.api.url

    def health(self, timeout_s: float = 1.0) -> int | None:
        """The target's /healthz status, None when it does not answer."""
        try:
            return httpx.get(f"{self.target_url}/healthz", timeout=timeout_s).status_code
        except httpx.HTTPError:
            return None

    def restarts(self) -> int:
        return self.supervisor.status(TARGET).restarts

    def inject(self, scenario: str) -> None:
        response = httpx.post(f"{self.target_url}/inject/{scenario}", timeout=5)
        assert response.status_code == 202, response.text


def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what or predicate}")
        time.sleep(0.05)


@contextmanager
def demo_stack(tmp_path: Path, *, startup_delay_s: float = 0) -> Iterator[DemoStack]:
    port = free_port()
    target_url = f"http://127.0.0.1:{port}"
    # A short grace period keeps tests fast should a process ignore SIGTERM.
    supervisor = Supervisor(tmp_path / "supervisor", stop_timeout_s=2.0)
    command = target_command(port, tmp_path / "target")
    if startup_delay_s:
        # A slow-starting target keeps process.restart busy long enough to kill its worker.
        command = ["sh", "-c", f'sleep {startup_delay_s}; exec "$@"', "sh", *command]
    supervisor.add(TARGET, command, health_url=f"{target_url}/healthz")
    supervisor.start_all()
    api = serve_in_thread(create_app(supervisor))
    stack = DemoStack(supervisor, api, target_url)
    try:
        wait_until(
            lambda: stack.health() == 200,
            timeout_s=10 + startup_delay_s,
            what="the demo target to be healthy",
        )
        yield stack
    finally:
        api.stop()
        supervisor.stop_all()
