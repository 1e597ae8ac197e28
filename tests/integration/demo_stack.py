"""The real demo services (checkout and its dependency inventory) under a real supervisor, its
control API served on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from selfheal.devstack.demo.checkout import checkout_command, inventory_command
from selfheal.devstack.demo.common import TOKEN_ENV
from selfheal.devstack.supervisor import ServerHandle, Supervisor, create_app, serve_in_thread
from tests.support import free_port, free_ports  # noqa: F401  (re-exported to tests)

TARGET = "checkout"
INVENTORY = "inventory"


@dataclass
class DemoStack:
    supervisor: Supervisor
    api: ServerHandle
    target_url: str
    inventory_url: str

    @property
    def supervisor_url(self) -> str:
        return self.api.url

    def health(self, timeout_s: float = 1.0, url: str | None = None) -> int | None:
        """Checkout's (or ``url``'s) /healthz status, None when it does not answer."""
        try:
            return httpx.get(f"{url or self.target_url}/healthz", timeout=timeout_s).status_code
        except httpx.HTTPError:
            return None

    def restarts(self, process: str = TARGET) -> int:
        return self.supervisor.status(process).restarts

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
def demo_stack(
    tmp_path: Path,
    *,
    startup_delay_s: float = 0,
    otlp_url: str | None = None,
    token: str | None = None,
    traffic_rps: float = 5.0,
) -> Iterator[DemoStack]:
    """Both services, checkout making ``traffic_rps`` synthetic checkouts a second, both pushing
    OTLP to ``otlp_url`` when given."""
    port, inventory_port = free_ports(2)
    target_url = f"http://127.0.0.1:{port}"
    inventory_url = f"http://127.0.0.1:{inventory_port}"
    env = {TOKEN_ENV: token} if token else None
    # A short grace period keeps tests fast should a process ignore SIGTERM.
    supervisor = Supervisor(tmp_path / "supervisor", stop_timeout_s=2.0)
    command = checkout_command(
        port,
        tmp_path / "checkout",
        inventory_url=inventory_url,
        otlp_url=otlp_url,
        traffic_rps=traffic_rps,
    )
    if startup_delay_s:
        # A slow-starting target keeps process.restart busy long enough to kill its worker.
        command = ["sh", "-c", f'sleep {startup_delay_s}; exec "$@"', "sh", *command]
    supervisor.add(
        INVENTORY,
        inventory_command(inventory_port, tmp_path / "inventory", otlp_url=otlp_url),
        health_url=f"{inventory_url}/healthz",
        env=env,
    )
    supervisor.add(TARGET, command, health_url=f"{target_url}/healthz", env=env)
    supervisor.start_all()
    api = serve_in_thread(create_app(supervisor))
    stack = DemoStack(supervisor, api, target_url, inventory_url)
    try:
        wait_until(
            lambda: stack.health() == 200 and stack.health(url=inventory_url) == 200,
            timeout_s=10 + startup_delay_s,
            what="the demo services to be healthy",
        )
        yield stack
    finally:
        api.stop()
        supervisor.stop_all()
