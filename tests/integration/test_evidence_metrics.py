"""The metrics provider against a real Prometheus (history backfilled with promtool) and against
the OTLP series store in Postgres; the store's bounds; soft failures."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from structlog.testing import capture_logs
from temporalio.client import Client

from selfheal.activities.evidence.base import EvidenceProviders, EvidenceRequest
from selfheal.activities.evidence.metrics import (
    MetricsProvider,
    PrometheusSource,
    StoreSource,
    metrics_provider,
)
from selfheal.api.app import IntakeDeps, create_app
from selfheal.core.catalog import (
    EvidenceSpec,
    MetricsEvidence,
    ServiceCatalog,
    ServiceSpec,
)
from selfheal.core.prometheus import PrometheusClient
from selfheal.core.settings import EvidenceSettings, IntakeSettings
from selfheal.detection.detector_config import DetectorConfig
from selfheal.detection.metrics_router import MetricsRouter
from selfheal.detection.parsers import MetricPoint
from selfheal.domain import Fault
from selfheal.healings import Healings
from selfheal.models.evidence import MetricSampleRow
from selfheal.models.metric_store import MetricStore
from tests.e2e.peers import Prometheus, require_binary, run_prometheus
from tests.support import free_port, sessions

pytestmark = pytest.mark.integration

STEP = 15.0
# now, rounded down to a step, minus ten minutes: the whole after window is in the past
AT = (time.time() // STEP) * STEP - 600
ERROR_RATIO = 'error_ratio{service="${service}"}'


def history(before: float, after: float, change_at: float) -> list[float]:
    """Times and values every 15 s over [AT-1200, AT+120]: ``before``, then ``after`` from
    ``change_at``, with a small deterministic wiggle (a flat line has no spread to compare
    with)."""
    return [
        (after if t >= change_at else before) * (1 + 0.05 * ((i % 5) - 2))
        for i, t in enumerate(times())
    ]


def times() -> list[float]:
    return [AT - 1200 + i * STEP for i in range(int((1200 + 120) / STEP) + 1)]


@dataclass(frozen=True)
class Shop:
    """checkout -> payments -> ledger, names unique to the test."""

    checkout: str
    payments: str
    ledger: str
    catalog: ServiceCatalog


def shop(queries: dict[str, str]) -> Shop:
    suffix = uuid.uuid4().hex[:6]
    checkout, payments, ledger = (f"{n}-{suffix}" for n in ("checkout", "payments", "ledger"))
    evidence = EvidenceSpec(metrics=MetricsEvidence(queries=queries))
    catalog = ServiceCatalog(
        services=[
            ServiceSpec(name=checkout, depends_on=[payments], evidence=evidence),
            ServiceSpec(name=payments, depends_on=[ledger], evidence=evidence),
            ServiceSpec(name=ledger, evidence=evidence),
        ]
    )
    return Shop(checkout, payments, ledger, catalog)


def request_for(s: Shop) -> EvidenceRequest:
    at = datetime.fromtimestamp(AT, UTC)
    fault = Fault(service=s.checkout, type="error_rate_high", detected_at=at)
    return EvidenceRequest(
        fault=fault,
        at=at,
        window_before_s=900,
        window_after_s=120,
        service=s.catalog.get(s.checkout),
        catalog=s.catalog,
    )


def the_incident(s: Shop) -> dict[str, list[float]]:
    """payments' errors jump 30 s before the fault, checkout's (its caller's) follow; ledger is
    calm."""
    return {
        s.checkout: history(0.02, 0.25, AT - 15),
        s.payments: history(0.01, 0.8, AT - 30),
        s.ledger: history(0.01, 0.01, AT),
    }


def assert_the_incident(s: Shop, facts: dict[str, object], kinds: set[tuple[str, str]]) -> None:
    assert facts["metrics.error_ratio.before"] == pytest.approx(0.02, rel=0.1)
    assert facts["metrics.error_ratio.after"] == pytest.approx(0.25, rel=0.1)
    assert facts["metrics.error_ratio.change"] == pytest.approx(0.23, rel=0.1)
    assert isinstance(z := facts["metrics.error_ratio.z"], float) and z > 10
    assert isinstance(dz := facts[f"deps.{s.payments}.error_ratio.z"], float) and dz > 10
    assert isinstance(lz := facts[f"deps.{s.ledger}.error_ratio.z"], float) and abs(lz) < 3
    assert facts["deps.worst.error_ratio"] == s.payments
    assert facts["deps.max.error_ratio.z"] == dz
    assert facts["rca.top"] == s.payments
    assert ("metric_shift", s.payments) in kinds
    assert ("metric_shift", s.checkout) in kinds
    assert ("metric_shift", s.ledger) not in kinds
    assert ("rca_rank", s.payments) in kinds


# --- Prometheus --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prom_shop() -> Shop:
    return shop(
        {
            "error_ratio": ERROR_RATIO,
            "smoothed": 'avg_over_time(error_ratio{service="${service}"}[1m])',
            "broken": 'error_ratio{service="${service}"',
            "typo": 'error_ratio{service="${servce}"}',
        }
    )


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, prom_shop: Shop) -> Iterator[Prometheus]:
    """A Prometheus whose TSDB holds the incident, backfilled from OpenMetrics by promtool."""
    promtool = require_binary("/usr/bin/promtool")
    work = tmp_path_factory.mktemp("prom")
    lines = ["# TYPE error_ratio gauge"]
    for service, values in the_incident(prom_shop).items():
        lines += [
            f'error_ratio{{service="{service}"}} {v} {t:.0f}'
            for t, v in zip(times(), values, strict=True)
        ]
    source = work / "history.om"
    source.write_text("\n".join([*lines, "# EOF", ""]))
    subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(work / "data")],
        check=True,
        capture_output=True,
    )
    with run_prometheus(work, scrape_targets=[], rules={"groups": []}) as peer:
        yield peer


async def test_prometheus_facts_and_findings(prometheus: Prometheus, prom_shop: Shop) -> None:
    async with httpx.AsyncClient() as http:
        provider = MetricsProvider(PrometheusSource(PrometheusClient(http, prometheus.url), STEP))
        gathered = await provider.gather(request_for(prom_shop))
    facts = gathered.facts
    kinds = {(f.kind, f.component) for f in gathered.findings}
    assert_the_incident(prom_shop, facts, kinds)
    # real PromQL goes through, and each query stands alone
    assert facts["metrics.smoothed.z"] > 3  # flat before (the wiggle averages out): rca scores it
    assert "parse error" in facts["metrics.broken.error"]
    assert "${servce}" in facts["metrics.typo.error"]
    assert "metrics.typo.z" not in facts


async def test_the_factory_picks_prometheus_when_configured(prometheus: Prometheus) -> None:
    async with httpx.AsyncClient() as http:
        configured = EvidenceSettings(prometheus_url=prometheus.url)
        provider = metrics_provider(configured, http, None)
        assert provider is not None and isinstance(provider.source, PrometheusSource)
        assert metrics_provider(EvidenceSettings(), http, None) is None


async def test_an_unreachable_prometheus_is_missing_evidence(prom_shop: Shop) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    async with httpx.AsyncClient() as http:
        provider = MetricsProvider(PrometheusSource(PrometheusClient(http, closed), STEP))
        collected = await EvidenceProviders([provider], timeout_s=5).collect(
            request_for(prom_shop), ["metrics"]
        )
    assert collected.sources == []
    assert [m.source for m in collected.missing] == ["metrics"]
    assert "ConnectError" in collected.missing[0].reason
    assert collected.facts == {}


# --- the OTLP series store ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def factory(database_url: str) -> Iterator[sessionmaker[Session]]:
    with sessions(database_url) as made:
        yield made


def points_of(s: Shop) -> list[MetricPoint]:
    """The incident as OTLP would carry it: ``service.name`` and attributes with dots."""
    return [
        MetricPoint("error_ratio", {"service.name": service, "http.route": "/pay"}, t, v)
        for service, values in the_incident(s).items()
        for t, v in zip(times(), values, strict=True)
    ]


async def test_the_store_answers_like_prometheus(factory: sessionmaker[Session]) -> None:
    s = shop(
        {
            "error_ratio": 'error_ratio{service="${service}", http_route="/pay"}',
            "by_job": 'error_ratio{job="${service}"}',
            "promql": 'sum(error_ratio{service="${service}"})',
            "typo": 'error_ratio{service="${servce}"}',
        }
    )
    store = MetricStore(factory, max_points_per_series=720, max_age_s=86400)
    await store.add(points_of(s))
    provider = MetricsProvider(StoreSource(store, max_series=10, max_points=1000))
    gathered = await provider.gather(request_for(s))
    facts = gathered.facts
    assert_the_incident(s, facts, {(f.kind, f.component) for f in gathered.findings})
    assert facts["metrics.by_job.z"] == facts["metrics.error_ratio.z"]
    assert "answers only" in facts["metrics.promql.error"]
    assert "${servce}" in facts["metrics.typo.error"]


async def test_the_store_reads_series_by_name_labels_and_service(
    factory: sessionmaker[Session],
) -> None:
    service = f"svc-{uuid.uuid4().hex[:6]}"
    now = time.time()
    store = MetricStore(factory, max_points_per_series=100, max_age_s=3600)
    await store.add(
        [
            MetricPoint("http.server.duration", {"service.name": service, "code": "500"}, now, 1),
            MetricPoint("http.server.duration", {"service.name": service, "code": "200"}, now, 2),
            MetricPoint("http.server.duration", {"job": service, "code": "200"}, now - 1, 3),
            MetricPoint("http.server.duration", {"code": "200"}, now, 4),  # no service
        ]
    )
    assert store.skipped == 1
    both = await store.range("http_server_duration", {"service": service}, now - 60, now, 10, 10)
    assert sorted(p[1] for s in both for p in s.points) == [1, 2, 3]
    ok = await store.range("http.server.duration", {"job": service, "code": "200"}, 0, now, 10, 10)
    assert sorted(s.points[0][1] for s in ok) == [2, 3]
    assert await store.range("http_server_duration", {"service": "other"}, 0, now, 10, 10) == []
    one = await store.range("http_server_duration", {"service": service}, 0, now, 1, 10)
    assert len(one) == 1


async def test_the_store_is_bounded_per_series_and_by_age(factory: sessionmaker[Session]) -> None:
    service = f"svc-{uuid.uuid4().hex[:6]}"
    clock = [time.time()]
    store = MetricStore(
        factory, max_points_per_series=10, max_age_s=300, prune_every=3, clock=lambda: clock[0]
    )
    start = clock[0] - 200
    for batch in range(6):
        await store.add(
            [
                MetricPoint("queue_depth", {"service": service}, start + batch * 10 + i, i)
                for i in range(5)
            ]
        )

    def kept() -> int:
        with factory() as session:
            return (
                session.scalar(
                    select(func.count())
                    .select_from(MetricSampleRow)
                    .where(MetricSampleRow.service == service)
                )
                or 0
            )

    assert kept() == 10  # 30 added, pruned on the 3rd and the 6th add
    newest = await store.range("queue_depth", {"service": service}, 0, clock[0], 10, 100)
    assert newest[0].points[-1][0] == pytest.approx(start + 54)
    assert newest[0].points[0][0] == pytest.approx(start + 40)
    # points already older than the bound are not kept at all
    await store.add([MetricPoint("queue_depth", {"service": service}, clock[0] - 301, 1.0)])
    assert store.skipped == 1
    # time passes: everything is past the age bound
    clock[0] += 600
    assert await store.prune() >= 10
    assert kept() == 0


async def test_the_factory_falls_back_to_the_store(factory: sessionmaker[Session]) -> None:
    async with httpx.AsyncClient() as http:
        provider = metrics_provider(EvidenceSettings(), http, factory)
    assert provider is not None and isinstance(provider.source, StoreSource)


# --- the intake keeps what OTLP exports ----------------------------------------------------------


def otlp_json(service: str, values: list[float], start: float) -> str:
    points = [
        {"timeUnixNano": str(int((start + i) * 1e9)), "asDouble": v} for i, v in enumerate(values)
    ]
    return json.dumps(
        {
            "resourceMetrics": [
                {
                    "resource": {
                        "attributes": [{"key": "service.name", "value": {"stringValue": service}}]
                    },
                    "scopeMetrics": [
                        {"metrics": [{"name": "queue_depth", "gauge": {"dataPoints": points}}]}
                    ],
                }
            ]
        }
    )


async def intake(sink: MetricStore) -> httpx.AsyncClient:
    # No detector watches queue_depth here, so the door (and Temporal) is never called.
    temporal = await Client.connect(f"127.0.0.1:{free_port()}", lazy=True)
    deps = IntakeDeps(
        door=Healings(temporal, ServiceCatalog()),
        settings=IntakeSettings(tokens={"tok": ["ingest"]}),
        router=MetricsRouter(DetectorConfig()),
        metric_sink=sink.add,
    )
    transport = httpx.ASGITransport(app=create_app(deps))
    return httpx.AsyncClient(transport=transport, base_url="http://intake")


HEADERS = {"Authorization": "Bearer tok", "Content-Type": "application/json"}


async def test_the_intake_keeps_exported_points(factory: sessionmaker[Session]) -> None:
    service = f"svc-{uuid.uuid4().hex[:6]}"
    now = time.time()
    store = MetricStore(factory, max_points_per_series=100, max_age_s=3600)
    async with await intake(store) as api:
        body = otlp_json(service, [1.0, 2.0, 3.0], now - 10)
        response = await api.post("/v1/otlp/v1/metrics", content=body, headers=HEADERS)
    assert response.status_code == 200, response.text
    [series] = await store.range("queue_depth", {"job": service}, now - 60, now, 10, 10)
    assert [v for _, v in series.points] == [1.0, 2.0, 3.0]


async def test_a_failing_sink_does_not_fail_the_export() -> None:
    with sessions(f"postgresql://postgres@127.0.0.1:{free_port()}/none") as unreachable:
        store = MetricStore(unreachable, max_points_per_series=10, max_age_s=60)
        async with await intake(store) as api:
            body = otlp_json("svc", [1.0], time.time())
            with capture_logs() as logs:
                response = await api.post("/v1/otlp/v1/metrics", content=body, headers=HEADERS)
    assert response.status_code == 200, response.text
    [failed] = [e for e in logs if e["event"] == "metric points not kept"]
    assert failed["points"] == 1 and "KnowledgeBaseError" in failed["reason"]


async def test_the_store_answers_rate_of_a_counter(factory: sessionmaker[Session]) -> None:
    s = shop({"errors": 'rate(errors_total{service="${service}"}[1m])'})
    total, points = 0.0, []
    for t in times():
        total += (1.0 if t < AT - 30 else 10.0) * STEP
        points.append(MetricPoint("errors_total", {"service.name": s.checkout}, t, total))
    store = MetricStore(factory, max_points_per_series=720, max_age_s=86400)
    await store.add(points)
    provider = MetricsProvider(StoreSource(store, max_series=10, max_points=1000))
    facts = (await provider.gather(request_for(s))).facts
    assert facts["metrics.errors.before"] == pytest.approx(1.0)
    assert facts["metrics.errors.after"] == pytest.approx(10.0)
    assert facts["metrics.errors.z"] > 3


async def test_an_unreachable_store_is_missing_evidence() -> None:
    s = shop({"error_ratio": ERROR_RATIO})
    with sessions(f"postgresql://postgres@127.0.0.1:{free_port()}/none") as unreachable:
        store = MetricStore(unreachable, max_points_per_series=10, max_age_s=60)
        provider = MetricsProvider(StoreSource(store, max_series=10, max_points=100))
        collected = await EvidenceProviders([provider]).collect(request_for(s), ["metrics"])
    assert [m.source for m in collected.missing] == ["metrics"]
    assert collected.missing[0].reason.startswith("MetricsUnavailable: otlp store: ")
