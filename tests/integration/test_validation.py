"""validate_recovery against a real HTTP server on 127.0.0.1 whose health the test flips, and
its criteria against real sources: the OTLP series store in Postgres, a Prometheus scraping that
server, an Alertmanager, and a kube-apiserver with its deployment and replicaset controllers."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy.orm import Session, sessionmaker
from temporalio.testing import ActivityEnvironment

from selfheal.activities.actions.kubernetes import KubeApi, kubernetes_client
from selfheal.activities.validation import ValidationActivities
from selfheal.core.catalog import (
    EvidenceSpec,
    MetricsEvidence,
    ServiceCatalog,
    ServiceSpec,
    TargetSpec,
)
from selfheal.core.settings import EvidenceSettings, KubernetesSettings
from selfheal.detection.parsers import MetricPoint
from selfheal.devstack.supervisor import ServerHandle, serve_in_thread
from selfheal.domain import Fault, MetricCheck, ValidationResult
from selfheal.domain.criteria import ValidationCriterion
from selfheal.domain.payloads import ValidateRecoveryInput
from selfheal.models.metric_store import MetricStore
from tests.e2e.peers import Alertmanager, Prometheus, run_alertmanager, run_prometheus
from tests.integration.demo_stack import free_port
from tests.integration.k8s_cluster import Cluster
from tests.support import sessions

PROBE_TIMEOUT_S = 0.5
Obj = dict[str, Any]


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
    *,
    criteria: list[ValidationCriterion] | None = None,
    resolved_at: datetime | None = None,
) -> Run:
    env = ActivityEnvironment()
    heartbeats: list[Any] = []
    env.on_heartbeat = lambda *details: heartbeats.append(details[0])
    started = time.monotonic()
    result = await env.run(
        activities.validate_recovery,
        ValidateRecoveryInput(
            fault=target,
            window_s=window_s,
            interval_s=interval_s,
            grace_s=grace_s,
            criteria=criteria or [],
            resolved_at=resolved_at,
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
    # without criteria, the probe (and the catalog metric) as always
    [probe] = run.result.criteria
    assert (probe.kind, probe.ok, probe.values) == ("probe", True, [0.0] * run.result.checks)


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
    assert run.result.detail == "cannot validate: the fault has neither a health_url nor a metric"
    assert [(c.kind, c.ok) for c in run.result.criteria] == [("probe", None)]
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


# --- criteria ----------------------------------------------------------------------------------


def metric(expr: str, *, optional: bool = False) -> ValidationCriterion:
    return ValidationCriterion(kind="metric", expr=expr, optional=optional)


PROBE = ValidationCriterion(kind="probe")
ALERT_RESOLVED = ValidationCriterion(kind="alert_resolved")
ROLLOUT = ValidationCriterion(kind="rollout")


def one_service(
    *,
    target: TargetSpec | None = None,
    queries: dict[str, str] | None = None,
    validation: list[ValidationCriterion] | None = None,
) -> tuple[str, ServiceCatalog]:
    """A service named for the test, alone in its catalog."""
    name = f"svc-{uuid.uuid4().hex[:8]}"
    spec = ServiceSpec(
        name=name,
        targets=[target or TargetSpec(name=name, kind="process")],
        evidence=EvidenceSpec(metrics=MetricsEvidence(queries=queries or {})),
        validation=validation or [],
    )
    return name, ServiceCatalog(services=[spec])


def later(delay_s: float, change: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
    async def run() -> None:
        await asyncio.sleep(delay_s)
        await change()

    return asyncio.create_task(run())


@pytest.fixture(scope="module")
def factory(database_url: str) -> Iterator[sessionmaker[Session]]:
    with sessions(database_url) as made:
        yield made


ERROR_RATIO = {"error_ratio": 'error_ratio{service="${service}"}'}


async def test_the_services_criteria_replace_the_probe_and_a_rise_in_the_window_fails_them(
    http: httpx.AsyncClient, factory: sessionmaker[Session]
) -> None:
    """The OTLP store as the source; the fault has no probe (the legacy check could not run)."""
    name, catalog = one_service(queries=ERROR_RATIO, validation=[metric("error_ratio < 0.05")])
    store = MetricStore(factory, max_points_per_series=100, max_age_s=3600)
    await store.add([MetricPoint("error_ratio", {"service.name": name}, time.time(), 0.01)])

    async def rise() -> None:
        await store.add([MetricPoint("error_ratio", {"service.name": name}, time.time(), 0.3)])

    activities = ValidationActivities(http=http, catalog=catalog, session_factory=factory)
    rising = later(0.7, rise)
    target = Fault(service=name, type="error_rate_high", target=name)
    run = await validate(activities, target, window_s=5, interval_s=0.2, grace_s=1)
    await rising
    result = run.result
    assert result.healthy is False
    assert result.detail.startswith(
        "error_ratio < 0.05: error_ratio = 0.3, expected < 0.05 (values 0.01, "
    )
    assert "into the window" in result.detail
    [verdict] = result.criteria
    assert (verdict.criterion, verdict.kind, verdict.ok) == ("error_ratio < 0.05", "metric", False)
    assert verdict.values[0] == 0.01 and verdict.values[-1] == 0.3
    assert len(verdict.values) == result.checks >= 3
    assert result.failures == 1
    assert len(run.heartbeats) == result.checks
    assert run.heartbeats[-1]["last"].startswith("error_ratio < 0.05: error_ratio = 0.3")
    assert run.elapsed_s < 3


async def test_the_plans_criteria_come_before_the_services_and_each_verdict_is_listed(
    http: httpx.AsyncClient, factory: sessionmaker[Session], server: ServerHandle, health: Health
) -> None:
    name, catalog = one_service(queries=ERROR_RATIO, validation=[metric("error_ratio < 0.001")])
    store = MetricStore(factory, max_points_per_series=100, max_age_s=3600)
    await store.add([MetricPoint("error_ratio", {"service.name": name}, time.time(), 0.01)])
    activities = ValidationActivities(http=http, catalog=catalog, session_factory=factory)
    target = fault(server.url).model_copy(update={"service": name})
    as_written = f'error_ratio{{service="{name}"}} <= 0.01'  # PromQL, not a query name
    plan = [metric(as_written), PROBE]
    run = await validate(activities, target, window_s=0.4, interval_s=0.2, criteria=plan)
    assert run.result.healthy is True, run.result.detail
    assert run.result.detail.endswith(f"checks): {as_written}, probe")
    assert [(c.criterion, c.ok) for c in run.result.criteria] == [
        (as_written, True),
        ("probe", True),
    ]

    # the first failing criterion is named, the others keep their verdicts
    health.status = 503
    run = await validate(activities, target, window_s=0.4, interval_s=0.1, criteria=plan)
    assert run.result.healthy is False
    assert run.result.detail.startswith(f"probe: health probe {server.url}/healthz: HTTP 503")
    assert [(c.criterion, c.ok) for c in run.result.criteria] == [
        (as_written, True),
        ("probe", False),
    ]
    assert run.result.criteria[0].values == [0.01] * run.result.checks


@pytest.fixture(scope="module")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory, server: ServerHandle
) -> Iterator[Prometheus]:
    """A Prometheus scraping the test's server every second (job ``demo``), once it has."""
    work = tmp_path_factory.mktemp("prom")
    scraped = f"{server.host}:{server.port}"
    with run_prometheus(work, scrape_targets=[scraped], rules={"groups": []}) as peer:
        # its first scrape waits for service discovery's first update: a few seconds
        deadline = time.monotonic() + 30
        while not peer.query('demo_error_ratio{job="demo"}'):
            assert time.monotonic() < deadline, f"no scrape of {scraped}:\n{peer.tail()}"
            time.sleep(0.2)
        yield peer


async def test_a_metric_criterion_reads_prometheus_through_the_services_query(
    http: httpx.AsyncClient, prometheus: Prometheus, server: ServerHandle, health: Health
) -> None:
    name, catalog = one_service(queries={"error_ratio": 'max(demo_error_ratio{job="demo"})'})
    evidence = EvidenceSettings(prometheus_url=prometheus.url, step_s=1)
    activities = ValidationActivities(http=http, catalog=catalog, evidence=evidence)

    async def degrade() -> None:
        health.error_ratio = 0.6

    degrading = later(2.0, degrade)
    target = Fault(service=name, type="error_rate_high", target=name)
    criteria = [metric("error_ratio <= 0.05")]
    run = await validate(
        activities, target, window_s=10, interval_s=0.3, grace_s=5, criteria=criteria
    )
    await degrading
    assert run.result.healthy is False
    assert "error_ratio <= 0.05: error_ratio = 0.6, expected <= 0.05" in run.result.detail
    assert "into the window" in run.result.detail
    [verdict] = run.result.criteria
    assert verdict.ok is False
    assert 0.0 in verdict.values and verdict.values[-1] == 0.6
    assert run.elapsed_s < 8


async def test_an_optional_criterion_whose_source_is_down_is_reported_and_ignored(
    http: httpx.AsyncClient, server: ServerHandle
) -> None:
    evidence = EvidenceSettings(prometheus_url=f"http://127.0.0.1:{free_port()}", timeout_s=1)
    activities = ValidationActivities(http=http, probe_timeout_s=PROBE_TIMEOUT_S, evidence=evidence)
    target = fault(server.url)
    optional = [PROBE, metric("error_ratio < 0.05", optional=True)]
    run = await validate(activities, target, window_s=0.4, interval_s=0.2, criteria=optional)
    assert run.result.healthy is True, run.result.detail
    assert run.result.detail.endswith(
        "checks): probe; ignored (optional, not evaluated): error_ratio < 0.05"
    )
    probe, unknown = run.result.criteria
    assert probe.ok is True
    assert (unknown.ok, unknown.optional, unknown.passed) == (None, True, True)
    assert unknown.detail.startswith("prometheus: ") and "ConnectError" in unknown.detail

    # the same criterion, not optional: it cannot be evaluated, so nothing is claimed
    required = [PROBE, metric("error_ratio < 0.05")]
    run = await validate(
        activities, target, window_s=5, interval_s=0.2, grace_s=0.5, criteria=required
    )
    assert run.result.healthy is False
    assert run.result.detail.startswith("error_ratio < 0.05: prometheus: ")
    assert "not healthy within the 0.5s grace period" in run.result.detail
    assert run.result.criteria[1].ok is None and not run.result.criteria[1].passed


# --- alert_resolved ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alertmanager]:
    # notifications go nowhere (a closed port): only the API matters here
    webhook = f"http://127.0.0.1:{free_port()}/v1/alertmanager"
    with run_alertmanager(tmp_path_factory.mktemp("am"), webhook_url=webhook, token="t") as peer:
        yield peer


def post_alert(
    alertmanager: Alertmanager, name: str, *, resolved: bool = False, **labels: str
) -> None:
    now = datetime.now(UTC)
    body = {
        "labels": {"alertname": name, **labels},
        "startsAt": (now - timedelta(minutes=1)).isoformat(),
        "endsAt": (
            now - timedelta(seconds=1) if resolved else now + timedelta(hours=1)
        ).isoformat(),
    }
    httpx.post(f"{alertmanager.url}/api/v2/alerts", json=[body], timeout=5).raise_for_status()


async def test_alert_resolved_holds_once_alertmanager_drops_the_faults_own_alert(
    http: httpx.AsyncClient, alertmanager: Alertmanager
) -> None:
    name, catalog = one_service(validation=[ALERT_RESOLVED])
    post_alert(alertmanager, "ErrorRateHigh", service=name, severity="critical")
    # neither another alert of the service nor the same alert of another service is the fault's
    post_alert(alertmanager, "LatencyHigh", service=name)
    post_alert(alertmanager, "ErrorRateHigh", service=f"other-{name}")
    evidence = EvidenceSettings(alertmanager_url=alertmanager.url)
    activities = ValidationActivities(http=http, catalog=catalog, evidence=evidence)
    target = Fault(service=name, type="ErrorRateHigh", target=name)

    run = await validate(activities, target, window_s=2, interval_s=0.2, grace_s=0.5)
    assert run.result.healthy is False
    assert run.result.detail.startswith(
        "alert_resolved: still active in Alertmanager: ErrorRateHigh (values 1, 1"
    )
    [verdict] = run.result.criteria
    assert verdict.ok is False and set(verdict.values) == {1.0}

    async def resolve() -> None:
        post_alert(alertmanager, "ErrorRateHigh", resolved=True, service=name, severity="critical")

    resolving = later(0.6, resolve)
    run = await validate(activities, target, window_s=0.6, interval_s=0.2, grace_s=5)
    await resolving
    assert run.result.healthy is True, run.result.detail
    assert run.result.failures >= 1
    [verdict] = run.result.criteria
    assert verdict.ok is True
    assert verdict.values[0] == 1.0 and verdict.values[-1] == 0.0
    assert verdict.detail.startswith("no alert of the fault active in Alertmanager (failed ")


async def test_alert_resolved_holds_with_the_resolved_report_and_needs_one_source(
    http: httpx.AsyncClient, server: ServerHandle
) -> None:
    activities = ValidationActivities(http=http, probe_timeout_s=PROBE_TIMEOUT_S)  # no Alertmanager
    target = fault(server.url)
    at = datetime.now(UTC)
    run = await validate(
        activities, target, window_s=0.2, interval_s=0.1, criteria=[ALERT_RESOLVED], resolved_at=at
    )
    assert run.result.healthy is True, run.result.detail
    assert run.result.criteria[0].detail == f"'resolved' report received at {at.isoformat()}"

    run = await validate(activities, target, window_s=5, interval_s=0.1, criteria=[ALERT_RESOLVED])
    assert run.result.healthy is False
    assert run.result.checks == 0
    assert run.result.detail == (
        "cannot validate: alert_resolved: no 'resolved' report received and no Alertmanager to "
        "ask (SELFHEAL_EVIDENCE__ALERTMANAGER_URL)"
    )
    assert run.elapsed_s < 0.5

    optional = [PROBE, ValidationCriterion(kind="alert_resolved", optional=True)]
    run = await validate(activities, target, window_s=0.2, interval_s=0.1, criteria=optional)
    assert run.result.healthy is True, run.result.detail
    assert [(c.kind, c.ok) for c in run.result.criteria] == [
        ("probe", True),
        ("alert_resolved", None),
    ]

    # nothing left to evaluate: nothing is claimed
    only_optional = [ValidationCriterion(kind="alert_resolved", optional=True)]
    run = await validate(activities, target, window_s=0.2, interval_s=0.1, criteria=only_optional)
    assert run.result.healthy is False
    assert run.result.detail.startswith("cannot validate: no criterion can be evaluated: ")


# --- rollout -----------------------------------------------------------------------------------


async def test_a_rollout_criterion_needs_a_kubernetes_workload(
    http: httpx.AsyncClient, server: ServerHandle
) -> None:
    process, catalog = one_service()
    activities = ValidationActivities(http=http, catalog=catalog)
    target = Fault(service=process, type="crash", target=process)
    run = await validate(activities, target, window_s=1, interval_s=0.1, criteria=[ROLLOUT])
    assert run.result.checks == 0 and run.result.healthy is False
    assert run.result.detail == (
        f"cannot validate: rollout: target {process!r} is a process, not a Deployment or "
        "StatefulSet"
    )

    deployment = TargetSpec(name="shop", kind="deployment", namespace="shop")
    shop, catalog = one_service(target=deployment, validation=[ROLLOUT])
    activities = ValidationActivities(http=http, catalog=catalog)  # no cluster configured
    target = fault(server.url).model_copy(update={"service": shop, "target": "shop"})
    run = await validate(activities, target, window_s=1, interval_s=0.1)
    assert run.result.checks == 0
    assert "rollout: no Kubernetes cluster configured" in run.result.detail

    optional = [PROBE, ValidationCriterion(kind="rollout", optional=True)]
    run = await validate(activities, target, window_s=0.2, interval_s=0.1, criteria=optional)
    assert run.result.healthy is True, run.result.detail
    assert run.result.criteria[1].ok is None
    assert run.result.criteria[1].detail.startswith("no Kubernetes cluster configured")


WAIT_S = 30.0


async def eventually(what: str, check: Callable[[], Awaitable[Any]]) -> Any:
    deadline = time.monotonic() + WAIT_S
    while not (result := await check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)
    return result


async def test_a_rollout_holds_once_complete_and_fails_on_a_container_restart(
    http: httpx.AsyncClient, k8s_cluster: Cluster
) -> None:
    """There is no kubelet: the test writes what one would (the pod's readiness and restart
    count) through the pod's status subresource; the replicaset and deployment controllers
    derive the Deployment's status from it."""
    settings = KubernetesSettings(kubeconfig=k8s_cluster.kubeconfig)
    api = kubernetes_client(settings)
    assert api is not None
    kube = KubeApi(api)
    ns = f"val-{uuid.uuid4().hex[:8]}"
    await kube.create("/api/v1/namespaces", {"metadata": {"name": ns}})
    deployment = {
        "metadata": {"name": "shop"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "shop"}},
            "template": {
                "metadata": {"labels": {"app": "shop"}},
                "spec": {"containers": [{"name": "app", "image": "shop:1"}]},
            },
        },
    }
    await kube.create(f"/apis/apps/v1/namespaces/{ns}/deployments", deployment)

    async def the_pod() -> Obj | None:
        listed = await kube.get(f"/api/v1/namespaces/{ns}/pods", labelSelector="app=shop")
        return listed["items"][0] if listed["items"] else None

    pod = (await eventually("the deployment's pod", the_pod))["metadata"]["name"]
    target = TargetSpec(name="shop", kind="deployment", namespace=ns)
    name, catalog = one_service(target=target, validation=[ROLLOUT])
    activities = ValidationActivities(http=http, catalog=catalog, kubernetes=settings)
    fault_ = Fault(service=name, type="crash_loop", target="shop")

    # Pending, never ready: the rollout is not complete
    run = await validate(activities, fault_, window_s=1, interval_s=0.2, grace_s=0.5)
    assert run.result.healthy is False
    assert run.result.detail.startswith(
        f"rollout: deployment {ns}/shop: rollout incomplete: 1 desired, 0 ready, 0 available"
    )
    assert run.result.criteria[0].ok is False

    async def kubelet(*, ready: bool, restarts: int) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        container = {
            "name": "app",
            "image": "shop:1",
            "imageID": "",
            "ready": ready,
            "restartCount": restarts,
            "state": {"running": {"startedAt": now}},
        }
        condition = {"type": "Ready", "status": str(ready), "lastTransitionTime": now}
        status = {"phase": "Running", "conditions": [condition], "containerStatuses": [container]}
        await kube.merge_patch(f"/api/v1/namespaces/{ns}/pods/{pod}/status", {"status": status})

    # Restarts while the target recovers are part of recovering: the window starts clean.
    await kubelet(ready=False, restarts=2)

    async def recover() -> None:
        await kubelet(ready=True, restarts=3)

    recovering = later(0.6, recover)
    run = await validate(activities, fault_, window_s=0.6, interval_s=0.2, grace_s=5)
    await recovering
    assert run.result.healthy is True, run.result.detail
    assert run.result.failures >= 2
    [verdict] = run.result.criteria
    assert verdict.ok is True
    assert verdict.detail.startswith(f"deployment {ns}/shop: rolled out, no container restart")
    assert verdict.values == [0.0] * run.result.checks

    # a restart during the window ends it
    async def restart() -> None:
        await kubelet(ready=True, restarts=4)

    restarting = later(0.7, restart)
    run = await validate(activities, fault_, window_s=10, interval_s=0.2, grace_s=2)
    await restarting
    assert run.result.healthy is False
    assert run.result.detail.startswith(
        f"rollout: deployment {ns}/shop: 1 container restart(s) since the window began"
    )
    assert "into the window" in run.result.detail
    assert run.result.criteria[0].values[-1] == 1.0
    assert run.elapsed_s < 5
