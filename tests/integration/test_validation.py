"""validate_recovery against a real HTTP server on 127.0.0.1 whose health the test flips."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse
from temporalio.testing import ActivityEnvironment

from selfheal.activities.validation import ValidationActivities
from selfheal.devstack.supervisor import ServerHandle, serve_in_thread
from selfheal.domain import Fault, MetricCheck, ValidationResult
from selfheal.domain.payloads import ValidateRecoveryInput
from tests.integration.demo_stack import free_port

PROBE_TIMEOUT_S = 0.5


@dataclass
class Health:
    status: int = 200
    error_ratio: float = 0.0


def health_app(health: Health) -> FastAPI:
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        ok = health.status == 200
        checks = {"errors": "ok", "cache": "ok" if ok else "poisoned"}
        body = {"status": "ok" if ok else "degraded", "checks": checks}
        return JSONResponse(status_code=health.status, content=body)

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(
            f"# TYPE demo_error_ratio gauge\ndemo_error_ratio {health.error_ratio}\n"
        )

    return app


@pytest.fixture(scope="module")
def health() -> Health:
    return Health()


@pytest.fixture(scope="module")
def server(health: Health) -> Iterator[ServerHandle]:
    handle = serve_in_thread(health_app(health))
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(autouse=True)
def healthy_at_start(health: Health) -> None:
    health.status, health.error_ratio = 200, 0.0


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def activities(http: httpx.AsyncClient) -> ValidationActivities:
    return ValidationActivities(http=http, probe_timeout_s=PROBE_TIMEOUT_S)


def fault(base_url: str, *, probe: bool = True, metric: bool = True) -> Fault:
    return Fault(
        service="demo",
        type="health_check_failed",
        target="demo-target",
        health_url=f"{base_url}/healthz" if probe else None,
        metric=MetricCheck(url=f"{base_url}/metrics", name="demo_error_ratio", max=0.05)
        if metric
        else None,
    )


@dataclass
class Run:
    result: ValidationResult
    heartbeats: list[Any]
    elapsed_s: float


async def validate(
    activities: ValidationActivities,
    target: Fault,
    window_s: float,
    interval_s: float,
    grace_s: float | None = None,
) -> Run:
    env = ActivityEnvironment()
    heartbeats: list[Any] = []
    env.on_heartbeat = lambda *details: heartbeats.append(details[0])
    started = time.monotonic()
    result = await env.run(
        activities.validate_recovery,
        ValidateRecoveryInput(
            fault=target, window_s=window_s, interval_s=interval_s, grace_s=grace_s
        ),
    )
    return Run(result, heartbeats, time.monotonic() - started)


async def test_healthy_for_the_whole_window(
    activities: ValidationActivities, server: ServerHandle
) -> None:
    run = await validate(activities, fault(server.url), window_s=0.6, interval_s=0.2)
    assert run.result.healthy is True
    assert 4 <= run.result.checks <= 5
    assert run.result.failures == 0
    assert run.result.window_s == 0.6
    assert run.elapsed_s >= 0.6
    assert len(run.heartbeats) == run.result.checks
    assert run.heartbeats[-1] == {"checks": run.result.checks, "failures": 0, "last": None}


async def test_a_zero_window_still_checks_once(
    activities: ValidationActivities, server: ServerHandle
) -> None:
    run = await validate(activities, fault(server.url), window_s=0, interval_s=5)
    assert run.result.healthy is True
    assert run.result.checks == 1


async def test_flipping_unhealthy_during_the_window_ends_it_early(
    activities: ValidationActivities, server: ServerHandle, health: Health
) -> None:
    async def flip() -> None:
        await asyncio.sleep(0.5)
        health.status = 503

    flipper = asyncio.create_task(flip())
    run = await validate(activities, fault(server.url), window_s=5.0, interval_s=0.2)
    await flipper
    assert run.result.healthy is False
    assert run.result.checks >= 3
    assert run.result.failures == 1
    assert "HTTP 503" in run.result.detail
    assert "poisoned" in run.result.detail
    assert run.elapsed_s < 2.0


async def test_metric_above_its_max_is_unhealthy(
    activities: ValidationActivities, server: ServerHandle, health: Health
) -> None:
    health.error_ratio = 0.6
    run = await validate(activities, fault(server.url), window_s=1.0, interval_s=0.1)
    assert run.result.healthy is False
    assert "metric demo_error_ratio = 0.6 > max 0.05" in run.result.detail


async def test_metric_alone_can_validate(
    activities: ValidationActivities, server: ServerHandle
) -> None:
    run = await validate(activities, fault(server.url, probe=False), window_s=0.2, interval_s=0.1)
    assert run.result.healthy is True


async def test_persistent_failure_ends_after_the_grace_period(
    activities: ValidationActivities, server: ServerHandle, health: Health
) -> None:
    health.status = 503
    run = await validate(activities, fault(server.url), window_s=10.0, interval_s=1.0)
    assert run.result.healthy is False
    # retried every 0.5s during the 1s grace period, then the first failure after it ends it
    assert run.result.checks == run.result.failures == 3
    assert 1.0 <= run.elapsed_s < 2.0


async def test_a_target_that_comes_back_within_the_grace_period_is_healthy(
    activities: ValidationActivities, health: Health
) -> None:
    """As after a restart: the port refuses connections, then the process listens."""
    port = free_port()
    handles: list[ServerHandle] = []

    async def come_back() -> None:
        await asyncio.sleep(0.6)
        handles.append(serve_in_thread(health_app(health), port=port))

    starter = asyncio.create_task(come_back())
    try:
        run = await validate(
            activities, fault(f"http://127.0.0.1:{port}"), window_s=1.5, interval_s=2.0
        )
    finally:
        await starter
        for handle in handles:
            handle.stop()
    assert run.result.healthy is True
    assert run.result.failures >= 1
    assert "within the grace period" in run.result.detail


async def test_refused_after_the_grace_period_is_unhealthy(
    activities: ValidationActivities,
) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    run = await validate(activities, fault(down), window_s=1.0, interval_s=0.1)
    assert run.result.healthy is False
    assert "connection refused" in run.result.detail


async def test_a_fault_without_probe_or_metric_cannot_be_validated(
    activities: ValidationActivities,
) -> None:
    target = Fault(service="demo", type="heartbeat_missed", target="demo-target")
    run = await validate(activities, target, window_s=1.0, interval_s=0.1)
    assert run.result.healthy is False
    assert run.result.checks == 0
    assert "cannot validate" in run.result.detail
    assert run.elapsed_s < 0.5


async def test_a_target_that_recovers_within_the_grace_then_holds_is_healthy(
    activities: ValidationActivities, server: ServerHandle, health: Health
) -> None:
    # an error window draining: still failing for a while after the steps
    health.status = 503

    async def recover() -> None:
        await asyncio.sleep(0.8)
        health.status = 200

    recovering = asyncio.create_task(recover())
    run = await validate(activities, fault(server.url), window_s=0.6, interval_s=0.2, grace_s=2)
    await recovering
    assert run.result.healthy is True, run.result.detail
    assert run.result.failures >= 1
    # the window counts from the first passing check, not from the start
    assert run.elapsed_s >= 0.8 + 0.6


async def test_no_recovery_within_the_grace_is_unhealthy(
    activities: ValidationActivities, server: ServerHandle, health: Health
) -> None:
    health.status = 503
    run = await validate(activities, fault(server.url), window_s=5, interval_s=0.2, grace_s=0.6)
    assert run.result.healthy is False
    assert "not healthy within the 0.6s grace period" in run.result.detail
    assert run.elapsed_s < 2


async def test_a_relapse_after_recovering_ends_it_even_within_the_grace(
    activities: ValidationActivities, server: ServerHandle, health: Health
) -> None:
    async def relapse() -> None:
        await asyncio.sleep(0.5)
        health.status = 503

    relapsing = asyncio.create_task(relapse())
    run = await validate(activities, fault(server.url), window_s=3, interval_s=0.2, grace_s=5)
    await relapsing
    assert run.result.healthy is False
    assert "into the window" in run.result.detail
    assert run.elapsed_s < 2
