"""Error traces through the real intake into a real Postgres, and the traces provider over them:
the origin found, later spans joining their trace, the bounds (count and age), idempotent
writes, and the soft failure when the database is not there."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client

from selfheal.activities.evidence.base import EvidenceProviders, EvidenceRequest
from selfheal.activities.evidence.traces import TracesProvider, traces_provider
from selfheal.api.app import IntakeDeps, create_app
from selfheal.core.catalog import ServiceCatalog
from selfheal.core.database import make_engine, make_session_factory
from selfheal.core.settings import EvidenceSettings, IntakeSettings
from selfheal.detection.parsers import ErrorSpan
from selfheal.devstack.processes import free_port
from selfheal.domain import Fault
from selfheal.healings import Healings
from selfheal.models import TraceSpanRow
from selfheal.models.trace_store import TraceStore
from tests.support import add_service, scratch_database, sessions

pytestmark = pytest.mark.integration

TOKENS = {"ingest-token": ["ingest"]}
PROTOBUF = {"Authorization": "Bearer ingest-token", "Content-Type": "application/x-protobuf"}
NOW = time.time()


@pytest.fixture
def factory(postgres_admin_url: str) -> Iterator[sessionmaker[Session]]:
    """A database of this test's own: pruning bounds the whole table."""
    with scratch_database(postgres_admin_url, "traces") as url, sessions(url) as made:
        yield made


def store_on(factory: sessionmaker[Session], **bounds: Any) -> TraceStore:
    return TraceStore(factory, **{"max_traces": 100, "max_age_s": 3600.0, **bounds})


async def intake_for(trace_sink: Any) -> httpx.AsyncClient:
    # the traces endpoint never calls Temporal: a lazy client that never connects
    client = await Client.connect(f"127.0.0.1:{free_port()}", lazy=True)
    deps = IntakeDeps(
        door=Healings(client, None),
        settings=IntakeSettings(tokens=TOKENS),
        trace_sink=trace_sink,
    )
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(deps)), base_url="http://intake"
    )


@pytest_asyncio.fixture
async def intake(factory: sessionmaker[Session]) -> AsyncIterator[httpx.AsyncClient]:
    async with await intake_for(store_on(factory).add) as session:
        yield session


# ------------------------------------------------------------------------------ OTLP exports


def kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def span(
    trace: bytes,
    span_id: int,
    parent: int | None,
    name: str,
    start: float,
    end: float,
    *,
    error: str | None = None,
    exception: tuple[str, str] | None = None,
    attributes: dict[str, str] | None = None,
) -> Span:
    events = []
    if exception is not None:
        events.append(
            Span.Event(
                name="exception",
                attributes=[
                    kv("exception.type", exception[0]),
                    kv("exception.message", exception[1]),
                ],
            )
        )
    return Span(
        trace_id=trace,
        span_id=span_id.to_bytes(8, "big"),
        parent_span_id=parent.to_bytes(8, "big") if parent is not None else b"",
        name=name,
        start_time_unix_nano=int(start * 1e9),
        end_time_unix_nano=int(end * 1e9),
        status=Status(
            code=Status.STATUS_CODE_ERROR if error is not None else Status.STATUS_CODE_OK,
            message=error or "",
        ),
        events=events,
        attributes=[kv(k, v) for k, v in (attributes or {}).items()],
    )


def export(by_service: dict[str, list[Span]]) -> bytes:
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=[kv("service.name", service)]),
                scope_spans=[ScopeSpans(spans=spans)],
            )
            for service, spans in by_service.items()
        ]
    ).SerializeToString()


def trace_id() -> bytes:
    return uuid.uuid4().bytes


def checkout_inventory(
    trace: bytes, at: float, checkout: str, inventory: str, *, gateway_missing: bool = False
) -> dict[str, list[Span]]:
    """checkout → (gateway) → inventory, whose stock query times out; checkout fails of it.
    The inventory clock runs 5 s behind: its spans seem to start before their callers'."""
    parent_of_inventory = 3 if gateway_missing else 2
    return {
        checkout: [
            span(trace, 1, None, "POST /checkout", at, at + 1.0, error="HTTP 500"),
            span(trace, 2, 1, "GET inventory", at + 0.1, at + 0.9, error="HTTP 503"),
        ],
        inventory: [
            span(trace, 10, parent_of_inventory, "GET /stock", at - 4.85, at - 4.15,
                 error="timeout", exception=("TimeoutError", "pool exhausted"),
                 attributes={"feature_flag.key": "new-cache", "custom.noise": "x"}),
            span(trace, 11, 10, "SELECT stock", at - 4.8, at - 4.2),
        ],
    }  # fmt: skip


def request_for(service: str, catalog: ServiceCatalog, at: float = NOW) -> EvidenceRequest:
    return EvidenceRequest(
        fault=Fault(service=service, type="HighErrorRate"),
        at=datetime.fromtimestamp(at, UTC),
        window_before_s=900,
        window_after_s=120,
        service=catalog.get(service),
        catalog=catalog,
    )


def span_count(factory: sessionmaker[Session], trace: bytes | None = None) -> int:
    query = select(func.count()).select_from(TraceSpanRow)
    if trace is not None:
        query = query.where(TraceSpanRow.trace_id == trace.hex())
    with factory() as session:
        return int(session.scalar(query) or 0)


# ------------------------------------------------------------------------------------- tests


async def test_intake_keeps_error_traces_and_the_provider_finds_their_origin(
    intake: httpx.AsyncClient, factory: sessionmaker[Session]
) -> None:
    suffix = uuid.uuid4().hex[:6]
    checkout, inventory, payments = f"checkout-{suffix}", f"inventory-{suffix}", f"pay-{suffix}"
    unrelated = f"elsewhere-{suffix}"
    catalog = ServiceCatalog()
    add_service(catalog, inventory)
    add_service(catalog, payments)
    add_service(catalog, checkout, depends_on=[inventory, payments])
    add_service(catalog, unrelated)

    traces = [trace_id() for _ in range(4)]
    body: dict[str, list[Span]] = {checkout: [], inventory: [], payments: []}
    for n, trace in enumerate(traces[:3]):
        for service, spans in checkout_inventory(
            trace, NOW - 60 + n, checkout, inventory, gateway_missing=n == 2
        ).items():
            body[service].extend(spans)
    # one trace fails in payments
    body[checkout].append(span(traces[3], 1, None, "POST /checkout", NOW - 30, NOW - 29, error="x"))
    body[payments].append(
        span(traces[3], 5, 1, "POST /charge", NOW - 29.9, NOW - 29.5, error="card declined")
    )
    healthy = trace_id()
    body[checkout].append(span(healthy, 1, None, "GET /", NOW - 20, NOW - 19))
    sent = await intake.post("/v1/otlp/v1/traces", content=export(body), headers=PROTOBUF)
    assert sent.status_code == 200, sent.text
    assert span_count(factory, healthy) == 0
    assert span_count(factory, traces[0]) == 4

    # the gateway span of the third trace arrives later, from another service: it joins
    gateway = f"gateway-{suffix}"
    late = export({gateway: [span(traces[2], 3, 2, "proxy", NOW - 57.9, NOW - 57.1)]})
    assert (await intake.post("/v1/otlp/v1/traces", content=late, headers=PROTOBUF)).is_success
    assert span_count(factory, traces[2]) == 5
    # a healthy span of a trace never seen with an error is not kept
    stray = export({gateway: [span(trace_id(), 3, None, "proxy", NOW - 5, NOW - 4)]})
    assert (await intake.post("/v1/otlp/v1/traces", content=stray, headers=PROTOBUF)).is_success
    # an error trace of a service the fault does not depend on is not read
    other = export({unrelated: [span(trace_id(), 1, None, "job", NOW - 10, NOW - 9, error="x")]})
    assert (await intake.post("/v1/otlp/v1/traces", content=other, headers=PROTOBUF)).is_success
    # a re-sent export (an exporter's retry) changes nothing
    assert (await intake.post("/v1/otlp/v1/traces", content=late, headers=PROTOBUF)).is_success
    assert span_count(factory) == 4 * 3 + 1 + 2 + 1

    gathered = await traces_provider(EvidenceSettings(), factory).gather(
        request_for(checkout, catalog)
    )
    facts = gathered.facts
    assert facts["traces.errors"] == 4
    assert facts["traces.origin.service"] == inventory
    assert facts["traces.origin.span"] == "GET /stock"
    assert facts["traces.origin.exception"] == "TimeoutError"
    assert facts["traces.origin.message"] == "pool exhausted"
    assert facts["traces.origin.attributes.feature_flag.key"] == "new-cache"
    assert "traces.origin.attributes.custom.noise" not in facts
    assert facts["traces.origin.share"] == 0.75
    assert facts["traces.path"] == [inventory, checkout]
    assert facts["traces.affected"] == [inventory, checkout, payments]
    [finding] = gathered.findings
    assert (finding.kind, finding.component, finding.strength) == ("trace_origin", inventory, 0.75)

    # the unrelated service's own fault sees only its trace; a window elsewhere sees nothing
    mine = await TracesProvider(store_on(factory)).gather(request_for(unrelated, catalog))
    assert mine.facts["traces.errors"] == 1
    assert mine.findings[0].component == unrelated
    empty = await TracesProvider(store_on(factory)).gather(
        request_for(checkout, catalog, at=NOW - 86400)
    )
    assert (empty.facts, empty.findings) == ({"traces.errors": 0}, [])

    # the intake's own recent error spans
    recent = await intake.get("/v1/traces/errors", params={"service": inventory}, headers=PROTOBUF)
    assert [s["name"] for s in recent.json()] == ["GET /stock"] * 3
    stored = await store_on(factory).recent_errors(inventory, limit=2)
    assert [(s.name, s.exceptions[0]["type"]) for s in stored] == [
        ("GET /stock", "TimeoutError")
    ] * 2


def error_trace(n: int) -> list[ErrorSpan]:
    trace = f"{n:032x}"
    return [
        ErrorSpan(trace, "0000000000000001", "svc", "root", NOW, NOW + 1, "", error=False),
        ErrorSpan(trace, "0000000000000002", "svc", "leaf", NOW, NOW + 1, "boom",
                  parent_span_id="0000000000000001"),
    ]  # fmt: skip


async def test_the_store_is_bounded_by_count_and_age(factory: sessionmaker[Session]) -> None:
    store = store_on(factory, max_traces=3)
    for n in range(1, 6):
        await store.add(error_trace(n))
    kept = await store.traces_between(
        datetime.fromtimestamp(NOW - 10, UTC), datetime.fromtimestamp(NOW + 10, UTC)
    )
    assert sorted(t[0].trace_id for t in kept) == [f"{n:032x}" for n in (3, 4, 5)]
    assert span_count(factory) == 6
    assert [s.span_id for s in kept[0]] == ["0000000000000001", "0000000000000002"]

    # age: what was received before max_age_s is gone at the next pruning
    with factory.begin() as session:
        session.execute(
            text("UPDATE trace_spans SET received_at = now() - interval '2 hours' "
                 "WHERE trace_id = :t"),
            {"t": f"{3:032x}"},
        )  # fmt: skip
    aged = store_on(factory, max_traces=3, max_age_s=3600)
    assert await aged.prune() == 2
    assert span_count(factory) == 4

    # idempotent: the same spans again add no row
    await store.add(error_trace(5))
    assert span_count(factory) == 4


async def test_an_unreachable_database_is_missing_evidence_and_a_503() -> None:
    engine = make_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere")
    try:
        store = TraceStore(make_session_factory(engine), max_traces=10, max_age_s=60)
        catalog = ServiceCatalog()
        add_service(catalog, "shop")
        providers = EvidenceProviders([TracesProvider(store)], timeout_s=10)
        collected = await providers.collect(request_for("shop", catalog), ["traces"])
        assert collected.sources == [] and collected.facts == {}
        [missing] = collected.missing
        assert missing.source == "traces"
        assert missing.reason.startswith("KnowledgeBaseError: cannot read error traces:")

        async with await intake_for(store.add) as intake:
            body = export({"shop": [span(trace_id(), 1, None, "x", NOW, NOW + 1, error="e")]})
            sent = await intake.post("/v1/otlp/v1/traces", content=body, headers=PROTOBUF)
        assert sent.status_code == 503
        assert sent.json()["error"] == "the trace store is unreachable; retry later"
    finally:
        engine.dispose()
