"""The whole loop with the real peers: Prometheus scrapes the demo target, an alert rule fires on
an injected error burst, Alertmanager posts to selfheal's intake, the real worker heals the
target, the alert resolves, Alertmanager posts the resolution, and the healing records it.

Everything runs for real on loopback: Prometheus and Alertmanager (Debian's packages), the
Temporal dev server, Postgres with the knowledge base imported from runbooks/, the supervisor
and the demo target, the intake app and the worker with the real activities.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client

from selfheal.core.settings import (
    EvidenceSettings,
    HealingSettings,
    Settings,
    SupervisorSettings,
)
from selfheal.domain import HealingOutcome, HealingStatus
from selfheal.worker import build_activities, build_worker
from tests.e2e.peers import (
    Alertmanager,
    Prometheus,
    alert_rules,
    intake_app,
    kb_session_factory,
    run_alertmanager,
    run_prometheus,
)
from tests.integration.demo_stack import TARGET, DemoStack, demo_stack
from tests.support import runbooks_for

pytestmark = pytest.mark.integration

TOKEN = "am-e2e-token"
ALERT = "DemoErrorBurst"
# The share of failed checkouts over the last 5 s of scrapes. The window is short so that the
# alert resolves within the healing's validation window once the bad flag is off.
ERROR_RATIO = "rate(demo_errors_total[5s]) / rate(demo_requests_total[5s])"


@pytest.fixture
def target(tmp_path: Path) -> Iterator[DemoStack]:
    with demo_stack(tmp_path) as stack:
        yield stack


@pytest.fixture(scope="module")
def kb_sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    yield from kb_session_factory(database_url)


class Checkouts:
    """Steady checkout traffic on the target, as users would send: the error ratio needs it."""

    def __init__(self, url: str, every_s: float = 0.05) -> None:
        self._url = url
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="checkouts", daemon=True)
        self.sent = 0

    def _run(self) -> None:
        with httpx.Client(timeout=2) as http:
            while not self._stop.wait(self._every_s):
                try:
                    http.get(self._url)
                    self.sent += 1
                except httpx.HTTPError:
                    pass  # a restart in progress: the next request will do

    def __enter__(self) -> Checkouts:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest_asyncio.fixture
async def peers(
    client: Client,
    task_queue: str,
    target: DemoStack,
    kb_sessions: sessionmaker[Session],
    tmp_path: Path,
) -> AsyncIterator[tuple[Prometheus, Alertmanager, str]]:
    runbooks = runbooks_for(tmp_path / "runbooks", target.target_url)
    intake = intake_app(client, task_queue, runbooks, tokens={TOKEN: ["ingest"]})
    rules = alert_rules(
        "demo",
        [
            {
                "alert": ALERT,
                "expr": f"{ERROR_RATIO} > 0.1",
                "labels": {"service": "checkout", "target": TARGET, "severity": "critical"},
                "annotations": {"summary": "more than 10% of checkouts fail"},
            }
        ],
    )
    try:
        with (
            run_alertmanager(
                tmp_path / "alertmanager",
                webhook_url=f"{intake.url}/v1/alertmanager",
                token=TOKEN,
            ) as alertmanager,
            run_prometheus(
                tmp_path / "prometheus",
                scrape_targets=[target.target_url.removeprefix("http://")],
                rules=rules,
                alertmanager=alertmanager.url.removeprefix("http://"),
            ) as prometheus,
        ):
            settings = Settings(
                runbooks_dir=runbooks,
                supervisor=SupervisorSettings(url=target.supervisor_url),
                # Long enough for the alert's 5 s rate window to drain and its resolution to
                # arrive while the healing is still validating.
                healing=HealingSettings(stabilization_window_s=15, probe_interval_s=0.5),
                # Diagnosis reads the same Prometheus and Alertmanager, as in production.
                evidence=EvidenceSettings(
                    prometheus_url=prometheus.url, alertmanager_url=alertmanager.url, step_s=1
                ),
            )
            async with httpx.AsyncClient() as http:
                activities = build_activities(settings, session_factory=kb_sessions, http=http)
                async with build_worker(
                    client, settings, activities=activities, task_queue=task_queue
                ):
                    yield prometheus, alertmanager, intake.url
    finally:
        intake.stop()


async def poll(predicate: Callable[[], object], timeout_s: float, what: str) -> None:
    """Wait until ``predicate`` (blocking HTTP, run on a thread) returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(predicate):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.2)


async def healings_on(client: Client, task_queue: str) -> list[str]:
    query = f'TaskQueue = "{task_queue}"'
    return [w.id async for w in client.list_workflows(query)]


async def test_alert_fires_heals_and_resolves(
    client: Client,
    task_queue: str,
    target: DemoStack,
    peers: tuple[Prometheus, Alertmanager, str],
) -> None:
    prometheus, alertmanager, intake_url = peers
    await poll(
        lambda: prometheus.query('up{job="demo"} == 1') and prometheus.alertmanagers(),
        timeout_s=20,
        what="Prometheus to scrape the target and discover the Alertmanager",
    )

    with Checkouts(target.target_url):
        await asyncio.sleep(2)  # a healthy baseline first: the rule must not fire on it
        assert prometheus.alerts() == []
        target.inject("error_burst")

        await poll(
            lambda: any(a["labels"]["alertname"] == ALERT for a in alertmanager.alerts()),
            timeout_s=20,
            what="the alert to reach Alertmanager",
        )
        ids: list[str] = []
        for _ in range(100):
            ids = await healings_on(client, task_queue)
            if ids:
                break
            await asyncio.sleep(0.2)
        assert len(ids) == 1, f"expected one healing, found {ids}"
        handle = client.get_workflow_handle(ids[0], result_type=HealingStatus)
        result = await asyncio.wait_for(handle.result(), timeout=45)

        # The alert is gone from Prometheus once the rate window has drained.
        await poll(lambda: prometheus.alerts() == [], timeout_s=10, what="the alert to resolve")

    assert result.outcome == HealingOutcome.HEALED, result.outcome_detail
    assert result.fault.source == "alertmanager"
    assert result.fault.type == ALERT
    assert result.fault.service == "checkout" and result.fault.target == TARGET
    assert result.fault.labels.get("base_url") == target.target_url  # from the catalog
    assert result.occurrences >= 1
    assert result.diagnosis is not None and result.diagnosis.root_cause == "bad_feature_flag"
    assert result.resolved_at is not None, "Alertmanager's resolution did not reach the healing"
    assert result.ended_at is not None and result.resolved_at <= result.ended_at
    assert target.health() == 200
    async with httpx.AsyncClient(timeout=5) as http:
        flag = (await http.get(f"{target.target_url}/flags/new_checkout")).json()
        metrics = (await http.get(f"{intake_url}/metrics")).text
        shown = await http.get(
            f"{intake_url}/v1/healings/{ids[0]}", headers={"Authorization": f"Bearer {TOKEN}"}
        )
    assert shown.status_code == 200, shown.text
    assert shown.json()["outcome"] == "healed" and shown.json()["resolved_at"] is not None
    assert flag["enabled"] is False
    resolved = 'selfheal_intake_resolved_total{endpoint="alertmanager"} '
    assert any(
        line.startswith(resolved) and float(line.removeprefix(resolved)) >= 1
        for line in metrics.splitlines()
    ), "the intake counted no resolution from Alertmanager"
    assert await healings_on(client, task_queue) == ids  # still exactly one healing
