"""The real demo services (checkout and its dependency inventory) under a real supervisor, its
control API served on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client

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
    # Called after an injection with its time: waits until the evidence of it has been
    # exported (set by ``with_evidence``; a real alert fires after its evidence exists).
    settle: Callable[[float], None] | None = None

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
        at = time.time()
        response = httpx.post(f"{self.target_url}/inject/{scenario}", timeout=5)
        assert response.status_code == 202, response.text
        if self.settle is not None:
            self.settle(at)


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


@contextmanager
def evidence_intake(
    client: Client, session_factory: sessionmaker[Session]
) -> Iterator[tuple[str, str]]:
    """A real intake whose OTLP metrics and traces land in ``session_factory``'s database, as
    ``selfheal serve`` keeps them for diagnosis: yields (OTLP base URL, ingest token). The
    tables start empty, so that no earlier test's incident is in a new one's evidence."""
    from sqlalchemy import delete

    from selfheal.api.app import IntakeDeps
    from selfheal.api.app import create_app as intake_app
    from selfheal.core.settings import EvidenceSettings, IntakeSettings
    from selfheal.detection.detector_config import DetectorConfig
    from selfheal.detection.metrics_router import MetricsRouter
    from selfheal.healings import Healings
    from selfheal.models import MetricSampleRow, TraceSpanRow
    from selfheal.models.metric_store import metric_sink
    from selfheal.models.trace_store import TraceStore

    with session_factory.begin() as session:
        session.execute(delete(MetricSampleRow))
        session.execute(delete(TraceSpanRow))
    token = "evidence-ingest"
    evidence = EvidenceSettings()
    deps = IntakeDeps(
        door=Healings(client, None),
        settings=IntakeSettings(tokens={token: ["ingest"]}),
        router=MetricsRouter(DetectorConfig()),
        metric_sink=metric_sink(session_factory, evidence),
        trace_sink=TraceStore(
            session_factory, max_traces=evidence.traces_max, max_age_s=evidence.traces_max_age_s
        ).add,
    )
    server = serve_in_thread(intake_app(deps))
    try:
        yield f"{server.url}/v1/otlp", token
    finally:
        server.stop()


def with_evidence(stack: DemoStack, session_factory: sessionmaker[Session]) -> DemoStack:
    """``stack`` once its metrics have a few seconds of history in ``session_factory``'s
    database; its injections wait (at most 5 s) until an error trace of theirs is stored."""
    from sqlalchemy import func, select

    from selfheal.models import MetricSampleRow, TraceSpanRow

    def count(query: Any) -> int:
        with session_factory() as session:
            return int(session.scalar(query) or 0)

    history = (
        select(func.count())
        .select_from(MetricSampleRow)
        .where(MetricSampleRow.service == TARGET, MetricSampleRow.name == "demo_error_ratio")
    )
    wait_until(lambda: count(history) >= 5, timeout_s=15, what="5 s of checkout's metrics")

    def settle(since: float) -> None:
        after = datetime.fromtimestamp(since, UTC)
        errors = (
            select(func.count())
            .select_from(TraceSpanRow)
            .where(TraceSpanRow.error.is_(True), TraceSpanRow.start >= after)
        )
        deadline = time.monotonic() + 5
        while count(errors) == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # one more export: the metrics of the fault too

    stack.settle = settle
    return stack


@contextmanager
def demo_stack_with_evidence(
    tmp_path: Path, client: Client, session_factory: sessionmaker[Session]
) -> Iterator[DemoStack]:
    """The demo services, exporting their metrics and traces to an intake that keeps them in
    ``session_factory``'s database, where a worker's evidence providers read them."""
    with (
        evidence_intake(client, session_factory) as (otlp_url, token),
        demo_stack(tmp_path, otlp_url=otlp_url, token=token) as stack,
    ):
        yield with_evidence(stack, session_factory)
