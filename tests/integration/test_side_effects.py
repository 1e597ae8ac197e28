"""watch_side_effects against the OTLP series store in Postgres, and probe_dependency against
real HTTP servers on 127.0.0.1, both run in Temporal's ActivityEnvironment (heartbeats,
heartbeat details of a previous attempt, cancellation)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session, sessionmaker
from temporalio.testing import ActivityEnvironment

from selfheal.activities.side_effects import SideEffectActivities
from selfheal.core.catalog import (
    EvidenceSpec,
    MetricsEvidence,
    ServiceCatalog,
    ServiceSpec,
    TargetSpec,
)
from selfheal.core.settings import EvidenceSettings
from selfheal.detection.parsers import MetricPoint
from selfheal.devstack.supervisor import ServerHandle, serve_in_thread
from selfheal.domain import Fault
from selfheal.domain.criteria import GuardSpec
from selfheal.domain.payloads import (
    ProbeDependencyInput,
    ProbeDependencyResult,
    WatchSideEffectsInput,
    WatchSideEffectsResult,
)
from selfheal.models.metric_store import MetricStore
from tests.support import free_port, sessions

pytestmark = pytest.mark.integration

INTERVAL_S = 0.1
QUERIES = {
    "error_ratio": 'error_ratio{service="${service}"}',
    "latency_p99": 'latency_p99{service="${service}"}',
    "pool_usage": 'pool_usage{service="${service}"}',
}
LATENCY_RISE = GuardSpec(name="latency_rise", expr="latency_p99 > 0.3", relative=True)
ERRORS_RISE = GuardSpec(name="errors_rise", expr="error_ratio > 0.05", relative=True)
POOL_FULL = GuardSpec(name="pool_full", expr="pool_usage >= 0.9")


# --- guards over the OTLP store ------------------------------------------------------------------


@pytest.fixture(scope="module")
def factory(database_url: str) -> Iterator[sessionmaker[Session]]:
    with sessions(database_url) as made:
        yield made


@pytest.fixture
def store(factory: sessionmaker[Session]) -> MetricStore:
    return MetricStore(factory, max_points_per_series=720, max_age_s=3600)


def service_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def spec(name: str, guards: list[GuardSpec], depends_on: list[str] | None = None) -> ServiceSpec:
    return ServiceSpec(
        name=name,
        depends_on=depends_on or [],
        evidence=EvidenceSpec(metrics=MetricsEvidence(queries=QUERIES)),
        guards=guards,
    )


async def write(store: MetricStore, service: str, **values: float) -> None:
    now = time.time()
    await store.add([MetricPoint(name, {"service": service}, now, v) for name, v in values.items()])


@dataclass
class Watch:
    """A watch running in its own ActivityEnvironment, with the heartbeats it sent."""

    env: ActivityEnvironment
    task: asyncio.Task[WatchSideEffectsResult]
    heartbeats: list[Any] = field(default_factory=list)

    async def started(self) -> None:
        """Wait for the first heartbeat: the baseline has been read."""
        async with asyncio.timeout(10):
            while not self.heartbeats and not self.task.done():
                await asyncio.sleep(0.02)

    async def running_after(self, seconds: float) -> bool:
        await asyncio.sleep(seconds)
        return not self.task.done()

    async def result(self, timeout_s: float = 10.0) -> WatchSideEffectsResult:
        async with asyncio.timeout(timeout_s):
            return await self.task

    async def stop(self) -> None:
        if not self.task.done():
            self.env.cancel()
            with pytest.raises(asyncio.CancelledError):
                await self.task


def watch(
    activities: SideEffectActivities,
    fault_service: str,
    *,
    interval_s: float = INTERVAL_S,
    details: list[Any] | None = None,
) -> Watch:
    env = ActivityEnvironment()
    if details is not None:
        env.info = replace(env.info, heartbeat_details=details, attempt=2)
    fault = Fault(service=fault_service, type="error_rate_high")
    payload = WatchSideEffectsInput(workflow_id="heal-test", fault=fault, interval_s=interval_s)

    async def run() -> WatchSideEffectsResult:
        return await env.run(activities.watch_side_effects, payload)

    task = asyncio.create_task(run())
    running = Watch(env, task)
    env.on_heartbeat = lambda *d: running.heartbeats.append(d[0])
    return running


@pytest.fixture
def running() -> Iterator[list[Watch]]:
    """Watches a test started: cancelled at its end, whatever happened."""
    started: list[Watch] = []
    yield started
    for w in started:
        if not w.task.done():
            w.task.cancel()


def side_effects(catalog: ServiceCatalog, factory: sessionmaker[Session]) -> SideEffectActivities:
    return SideEffectActivities(catalog, EvidenceSettings(), session_factory=factory)


async def test_a_relative_guard_trips_when_the_value_rises_after_the_start(
    store: MetricStore, factory: sessionmaker[Session], running: list[Watch]
) -> None:
    svc = service_name("checkout")
    catalog = ServiceCatalog(services=[spec(svc, [LATENCY_RISE])])
    await write(store, svc, latency_p99=0.2)
    w = watch(side_effects(catalog, factory), svc)
    running.append(w)
    await w.started()
    await write(store, svc, latency_p99=0.45)  # up 0.25: within the guard
    assert await w.running_after(0.6)
    await write(store, svc, latency_p99=0.6)
    result = await w.result()

    assert result.watched == [f"{svc}:latency_rise"]
    assert result.skipped == []
    breach = result.breach
    assert breach is not None
    assert (breach.guard, breach.service, breach.expr) == ("latency_rise", svc, LATENCY_RISE.expr)
    assert breach.value == pytest.approx(0.6)
    assert breach.baseline == pytest.approx(0.2)
    assert breach.detail == f"{svc}: latency_p99 went from 0.2 to 0.6 (change +0.4 > 0.3)"
    assert breach.at is not None
    assert w.heartbeats[0]["baseline"] == {f"{svc}:latency_rise": pytest.approx(0.2)}


async def test_a_retried_watch_compares_with_the_first_attempt_s_baseline(
    store: MetricStore, factory: sessionmaker[Session], running: list[Watch]
) -> None:
    svc = service_name("checkout")
    catalog = ServiceCatalog(services=[spec(svc, [LATENCY_RISE])])
    activities = side_effects(catalog, factory)
    await write(store, svc, latency_p99=0.2)
    first = watch(activities, svc)
    running.append(first)
    await first.started()
    # the worker is lost; meanwhile the plan moved the latency
    await first.stop()
    await write(store, svc, latency_p99=0.7)
    details = json.loads(json.dumps(first.heartbeats[-1]))  # as the data converter carries it

    retried = watch(activities, svc, details=[details])
    running.append(retried)
    result = await retried.result()
    assert result.breach is not None
    assert result.breach.baseline == pytest.approx(0.2)
    assert result.breach.value == pytest.approx(0.7)

    # a fresh start takes the moved value as its baseline: nothing trips
    fresh = watch(activities, svc)
    running.append(fresh)
    await fresh.started()
    assert await fresh.running_after(0.5)
    assert fresh.heartbeats[0]["baseline"] == {f"{svc}:latency_rise": pytest.approx(0.7)}
    await fresh.stop()


async def test_an_absolute_guard_already_tripped_at_start_is_not_watched(
    store: MetricStore, factory: sessionmaker[Session], running: list[Watch]
) -> None:
    svc = service_name("orders")
    unreadable = GuardSpec(name="unread", expr='nothing_here{service="${service}"} > 1')
    unanswerable = GuardSpec(name="promql", expr='sum(errors{service="${service}"}) > 1')
    catalog = ServiceCatalog(services=[spec(svc, [POOL_FULL, unreadable, unanswerable])])
    activities = side_effects(catalog, factory)
    await write(store, svc, pool_usage=0.95, error_ratio=0.01)

    # nothing else to watch: the answer comes at once
    only = watch(activities, svc)
    result = await only.result(timeout_s=5)
    assert result.breach is None and result.watched == []
    assert result.skipped[0] == f"{svc}:pool_full: already tripped at start (0.95)"
    assert result.skipped[1].startswith(f"{svc}:unread: cannot read at start: no value of ")
    assert result.skipped[2].startswith(f"{svc}:promql: cannot read at start: ")
    assert "answers only" in result.skipped[2]
    assert only.heartbeats == []

    # beside a guard that can be watched, the full pool never trips it
    catalog.services[0].guards = [POOL_FULL, ERRORS_RISE]
    w = watch(activities, svc)
    running.append(w)
    await w.started()
    await write(store, svc, pool_usage=0.99)
    assert await w.running_after(0.6)
    assert w.heartbeats[-1]["skipped"] == {f"{svc}:pool_full": "already tripped at start (0.95)"}
    assert list(w.heartbeats[-1]["baseline"]) == [f"{svc}:errors_rise"]
    await w.stop()


async def test_a_guard_with_a_duration_trips_only_once_it_held_that_long(
    store: MetricStore, factory: sessionmaker[Session], running: list[Watch]
) -> None:
    svc = service_name("payments")
    sustained = GuardSpec(name="server_errors", expr="error_ratio > 0.15", for_s=1.0)
    catalog = ServiceCatalog(services=[spec(svc, [sustained])])
    await write(store, svc, error_ratio=0.01)
    w = watch(side_effects(catalog, factory), svc)
    running.append(w)
    await w.started()

    # a blip shorter than the duration
    await write(store, svc, error_ratio=0.3)
    await asyncio.sleep(0.4)
    await write(store, svc, error_ratio=0.01)
    assert await w.running_after(1.2)

    await write(store, svc, error_ratio=0.3)
    began = time.monotonic()
    result = await w.result()
    assert time.monotonic() - began >= 1.0
    assert result.breach is not None and result.breach.guard == "server_errors"
    assert result.breach.detail.endswith(" for 1s")
    assert result.breach.value == pytest.approx(0.3)


async def test_a_dependent_service_s_guard_trips(
    store: MetricStore, factory: sessionmaker[Session], running: list[Watch]
) -> None:
    payments, checkout, ledger = (service_name(n) for n in ("payments", "checkout", "ledger"))
    catalog = ServiceCatalog(
        services=[
            spec(ledger, [ERRORS_RISE]),
            spec(payments, [ERRORS_RISE], depends_on=[ledger]),
            spec(checkout, [ERRORS_RISE, POOL_FULL], depends_on=[payments]),
        ]
    )
    for svc in (payments, checkout, ledger):
        await write(store, svc, error_ratio=0.01, pool_usage=0.2)
    w = watch(side_effects(catalog, factory), payments)
    running.append(w)
    await w.started()
    await write(store, ledger, error_ratio=0.9)  # a dependency: not ours to watch
    assert await w.running_after(0.5)
    await write(store, checkout, error_ratio=0.2)
    result = await w.result()

    assert result.watched == [
        f"{payments}:errors_rise",
        f"{checkout}:errors_rise",
        f"{checkout}:pool_full",
    ]
    assert result.breach is not None
    assert (result.breach.service, result.breach.guard) == (checkout, "errors_rise")
    assert result.breach.baseline == pytest.approx(0.01)
    assert result.breach.value == pytest.approx(0.2)


async def test_a_cancelled_watch_ends_promptly(
    store: MetricStore, factory: sessionmaker[Session], running: list[Watch]
) -> None:
    svc = service_name("search")
    catalog = ServiceCatalog(services=[spec(svc, [ERRORS_RISE])])
    await write(store, svc, error_ratio=0.01)
    w = watch(side_effects(catalog, factory), svc, interval_s=30.0)
    running.append(w)
    await w.started()
    cancelled_at = time.monotonic()
    w.env.cancel()
    with pytest.raises(asyncio.CancelledError):
        await w.result()
    assert time.monotonic() - cancelled_at < 1.0


async def test_without_a_metric_source_nothing_is_watched() -> None:
    catalog = ServiceCatalog(services=[spec("lonely", [ERRORS_RISE])])
    result = await ActivityEnvironment().run(
        SideEffectActivities(catalog, EvidenceSettings()).watch_side_effects,
        WatchSideEffectsInput(
            workflow_id="heal-test", fault=Fault(service="lonely", type="error_rate_high")
        ),
    )
    assert result.breach is None and result.watched == []
    assert result.skipped == [
        "lonely:errors_rise: no metric source on this worker (no Prometheus URL, no database)"
    ]


# --- the dependency behind a breaker -------------------------------------------------------------


@dataclass
class Health:
    """Statuses each service's /healthz answers, in turn (the last one repeats)."""

    statuses: dict[str, list[int]] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)


def health_app(health: Health) -> FastAPI:
    app = FastAPI()

    @app.get("/{service}/healthz")
    async def healthz(service: str) -> JSONResponse:
        n = health.hits.get(service, 0)
        health.hits[service] = n + 1
        statuses = health.statuses.get(service, [200])
        status = statuses[min(n, len(statuses) - 1)]
        return JSONResponse(status_code=status, content={"status": status})

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
def all_healthy(health: Health) -> None:
    health.statuses.clear()
    health.hits.clear()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def shop(base_url: str) -> ServiceCatalog:
    """web depends on payments and stock; bare has a target without a health URL; lonely has
    no dependency; gone's health URL refuses connections."""

    def service(name: str, url: str | None, depends_on: list[str] | None = None) -> ServiceSpec:
        target = TargetSpec(name=name, kind="http", health_url=url)
        return ServiceSpec(name=name, depends_on=depends_on or [], targets=[target])

    return ServiceCatalog(
        services=[
            service("payments", f"{base_url}/payments/healthz"),
            service("stock", f"{base_url}/stock/healthz"),
            service("bare", None),
            service("gone", f"http://127.0.0.1:{free_port()}/healthz"),
            service("lonely", f"{base_url}/lonely/healthz"),
            service("web", f"{base_url}/web/healthz", depends_on=["payments", "stock"]),
        ]
    )


Probe = Callable[..., Awaitable[ProbeDependencyResult]]


@pytest.fixture
def probe(server: ServerHandle, http: httpx.AsyncClient) -> Probe:
    activities = SideEffectActivities(
        shop(server.url), EvidenceSettings(), http=http, probe_timeout_s=1.0
    )

    async def run(**fields: Any) -> ProbeDependencyResult:
        result: ProbeDependencyResult = await ActivityEnvironment().run(
            activities.probe_dependency, ProbeDependencyInput(**fields)
        )
        return result

    return run


async def test_healthy_dependencies_pass_every_trial(probe: Probe, health: Health) -> None:
    began = time.monotonic()
    result = await probe(service="web", trials=3)
    assert result.healthy is True
    assert result.probed == ["payments", "stock"]
    assert result.detail == "payments, stock: 3/3 probes answered 2xx"
    assert health.hits == {"payments": 3, "stock": 3}
    assert time.monotonic() - began >= 1.0  # three trials, about 0.5 s apart

    named = await probe(service="web", dependency="stock", trials=2)
    assert named.healthy is True and named.probed == ["stock"]


async def test_one_failing_probe_is_unhealthy(probe: Probe, health: Health) -> None:
    health.statuses["stock"] = [200, 503]
    result = await probe(service="web", trials=3)
    assert result.healthy is False
    assert result.probed == ["payments", "stock"]
    assert result.detail.startswith("probe 2/3 failed: stock: ")
    assert result.detail.endswith("/stock/healthz: HTTP 503")
    assert health.hits == {"payments": 2, "stock": 2}  # no third trial

    refused = await probe(service="web", dependency="gone", trials=1)
    assert refused.healthy is False and "connection refused" in refused.detail


async def test_an_unknown_or_unprobeable_dependency_is_unhealthy(
    probe: Probe, health: Health
) -> None:
    unknown = await probe(service="web", dependency="ghost")
    assert unknown.healthy is False
    assert unknown.detail == "ghost: not in the service catalog"
    bare = await probe(service="web", dependency="bare")
    assert bare.healthy is False
    assert bare.detail == "bare: its default target has no health_url"
    lonely = await probe(service="lonely")
    assert lonely.healthy is False
    assert lonely.detail == "lonely has no dependency in the service catalog to probe"
    nowhere = await probe(service="nowhere")
    assert nowhere.healthy is False and "unknown service 'nowhere'" in nowhere.detail
    assert health.hits == {}
