"""The health watcher against a real HTTP target and the real Temporal dev server: failed checks
start a healing, a recovered target resolves it, a breached metric counts as a failure."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse
from temporalio.client import Client, WorkflowExecutionStatus

from selfheal.core.catalog import ServiceCatalog, TargetSpec
from selfheal.detection.health import WatchTarget
from selfheal.devstack.supervisor import serve_in_thread
from selfheal.devstack.watcher import HealthWatcher
from selfheal.domain import HealingOutcome, HealingPolicy, HealingStatus, MetricCheck
from tests.integration.standins import Scenario
from tests.integration.test_workflow_logic import running, status_when
from tests.support import add_service, door_for

pytestmark = pytest.mark.integration


@dataclass
class Target:
    url: str
    healthy: bool = True
    error_ratio: float = 0.0


@pytest.fixture
def target() -> Iterator[Target]:
    app = FastAPI()
    state = Target(url="")

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        return JSONResponse({"ok": state.healthy}, status_code=200 if state.healthy else 503)

    @app.get("/metrics")
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(f"# TYPE error_ratio gauge\nerror_ratio {state.error_ratio}\n")

    handle = serve_in_thread(app)
    state.url = handle.url
    try:
        yield state
    finally:
        handle.stop()


@pytest_asyncio.fixture
async def watching(
    client: Client, task_queue: str, target: Target
) -> AsyncIterator[tuple[HealthWatcher, Scenario]]:
    # A slow step keeps the healing running while the target recovers.
    scenario = Scenario(step_delay_s=3.0)
    name = f"shop-{task_queue[-8:]}"
    metric = MetricCheck(url=f"{target.url}/metrics", name="error_ratio", max=0.1)
    health_url = f"{target.url}/healthz"
    catalog = ServiceCatalog()
    add_service(
        catalog,
        "shop",
        TargetSpec(name=name, kind="http", health_url=health_url, metric=metric),
    )
    watcher = HealthWatcher(
        door_for(client, task_queue, catalog),
        WatchTarget(service="shop", health_url=health_url, target=name, metric=metric),
        interval_s=0.05,
    )
    stop = asyncio.Event()
    async with running(client, task_queue, scenario):
        task = asyncio.create_task(watcher.run(stop))
        try:
            yield watcher, scenario
        finally:
            stop.set()
            await task


async def detected(watcher: HealthWatcher) -> None:
    async with asyncio.timeout(20):
        while not watcher.detections:
            await asyncio.sleep(0.05)


async def test_failures_start_a_healing_and_recovery_resolves_it(
    client: Client, target: Target, watching: tuple[HealthWatcher, Scenario]
) -> None:
    watcher, scenario = watching
    target.healthy = False
    await detected(watcher)
    detection = watcher.detections[0]
    handle = client.get_workflow_handle(detection.workflow_id, result_type=HealingStatus)
    status = await status_when(handle, lambda s: s.occurrences >= 1)
    assert status.fault.source == "watcher"
    assert status.fault.values["consecutive_failures"] == 3
    assert status.fault.values["http_status"] == 503
    assert "HTTP 503" in status.fault.summary
    assert detection.first_failure_at < detection.detected_at

    await asyncio.wait_for(scenario.step_started.wait(), 20)
    target.healthy = True
    status = await status_when(handle, lambda s: s.resolved_at is not None)
    assert detection.resolved_at is not None
    assert len(watcher.detections) == 1  # one outage, one report


async def test_breached_metric_is_a_failure(
    client: Client, target: Target, watching: tuple[HealthWatcher, Scenario]
) -> None:
    watcher, _ = watching
    target.error_ratio = 0.5
    await detected(watcher)
    fault = watcher.detections[0].fault
    assert fault.values["metric_value"] == 0.5
    assert "error_ratio = 0.5 (> 0.1)" in fault.summary
    assert fault.metric is not None and fault.metric.max == 0.1


async def test_an_outage_outliving_its_healing_gets_a_new_one_after_the_window(
    client: Client, task_queue: str, target: Target
) -> None:
    """The first healing ends without healing (its validation fails: the target stays down);
    the watcher's repeats are counted on it through its suppression window, then the next one
    starts a new healing."""
    scenario = Scenario(
        policy=HealingPolicy(stabilization_window_s=0, probe_interval_s=1, suppression_s=1.5),
        unhealthy_after={"restart"},
    )
    name = f"shop-{task_queue[-8:]}"
    health_url = f"{target.url}/healthz"
    catalog = ServiceCatalog()
    add_service(catalog, "shop", TargetSpec(name=name, kind="http", health_url=health_url))
    door = door_for(client, task_queue, catalog)
    watcher = HealthWatcher(
        door,
        WatchTarget(service="shop", health_url=health_url, target=name),
        interval_s=0.05,
        repeat_after_s=0.3,
    )
    stop = asyncio.Event()
    target.healthy = False
    async with running(client, task_queue, scenario):
        task = asyncio.create_task(watcher.run(stop))
        try:
            async with asyncio.timeout(30):
                while len(watcher.detections) < 2:
                    await asyncio.sleep(0.05)
        finally:
            stop.set()
            await task
    first, second = watcher.detections[:2]
    assert first.workflow_id == second.workflow_id  # the same fault, healed anew
    history = [e async for e in client.list_workflows(f"WorkflowId='{first.workflow_id}'")]
    assert len(history) >= 2  # two runs: the first ended, the second started after its window
    [earlier] = [e for e in history if e.status != WorkflowExecutionStatus.RUNNING][:1]
    result = await client.get_workflow_handle(
        first.workflow_id, run_id=earlier.run_id, result_type=HealingStatus
    ).result()
    assert result.outcome != HealingOutcome.HEALED
    assert result.reports_after_outcome >= 1  # repeats during the window started nothing
