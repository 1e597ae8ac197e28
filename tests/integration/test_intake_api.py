"""The HTTP intake against the real Temporal dev server and a worker with stand-in activities:
every endpoint's happy path, the refusals that start nothing, Temporal down, an alert storm,
and the official OpenTelemetry exporters against a real uvicorn server."""

from __future__ import annotations

import asyncio
import gzip
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import pytest_asyncio
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    Gauge,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RetryConfig, RPCError, RPCStatusCode

from selfheal.api.app import IntakeDeps, create_app
from selfheal.api.routes import signals
from selfheal.core.catalog import ServiceCatalog, TargetSpec, load_services
from selfheal.core.database import to_libpq_url
from selfheal.core.settings import IntakeSettings
from selfheal.detection.detector_config import DetectorConfig
from selfheal.detection.metrics_router import MetricsRouter
from selfheal.devstack.supervisor.serving import serve_in_thread
from selfheal.domain import HealingOutcome, HealingStatus, healing_workflow_id
from selfheal.domain.fault import fingerprint_of
from tests.integration.standins import Scenario
from tests.integration.test_workflow_logic import running, status_when
from tests.support import TcpProxy, add_service, door_for

pytestmark = pytest.mark.integration

INGEST = {"Authorization": "Bearer ingest-token"}
JSON_INGEST = {**INGEST, "Content-Type": "application/json"}
APPROVER = {"Authorization": "Bearer approve-token"}
TOKENS = {"ingest-token": ["ingest"], "approve-token": ["approve", "name:alice"]}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def detector_config() -> DetectorConfig:
    return DetectorConfig.model_validate(
        {
            "metrics": [
                {
                    "name": "queue",
                    "metric": "queue_depth",
                    "detector": "zscore",
                    "params": {"window": 30, "sigma": 3, "direction": "up", "min_std": 0.1},
                    "fault": {"type": "queue_backlog", "service_label": "service.name"},
                }
            ],
            "heartbeats": {"components": [{"match": "beat-*", "service": "beats"}]},
        }
    )


# Every service a test names (``service()``) is declared here: the door refuses any other.
CATALOG = ServiceCatalog()
# what the heartbeat detector of ``detector_config`` raises its faults on
add_service(CATALOG, "beats")


def make_deps(
    client: Client, task_queue: str, catalog: ServiceCatalog | None = None, **overrides: Any
) -> IntakeDeps:
    settings = IntakeSettings(tokens=TOKENS, max_body_bytes=64_000, error_traces_max=5)
    deps = IntakeDeps(door=door_for(client, task_queue, catalog or CATALOG), settings=settings)
    for key, value in overrides.items():
        setattr(deps, key, value)
    return deps


def beat_component() -> str:
    """A heartbeat component, declared as a target of the ``beats`` service."""
    component = f"beat-{uuid.uuid4().hex[:6]}"
    beats = CATALOG.get("beats")
    assert beats is not None
    beats.targets.append(TargetSpec(name=component, kind="process"))
    return component


def http(deps: IntakeDeps) -> httpx.AsyncClient:
    app = create_app(deps)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://intake")


@pytest_asyncio.fixture
async def scenario(client: Client, task_queue: str) -> AsyncIterator[Scenario]:
    # low confidence: every healing waits for a human, so tests can watch it mid-way
    found = Scenario(confidence=0.3)
    async with running(client, task_queue, found):
        yield found


@pytest_asyncio.fixture
async def api(
    client: Client, task_queue: str, scenario: Scenario
) -> AsyncIterator[httpx.AsyncClient]:
    async with http(make_deps(client, task_queue)) as session:
        yield session


def service() -> str:
    """A service of this test alone, with the targets the tests' faults name."""
    return add_service(CATALOG, f"svc-{uuid.uuid4().hex[:8]}", "api-1", "api", "x")


def alert(
    svc: str, status: str = "firing", fingerprint: str = "0123456789abcdef"
) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": "HighErrorRate", "service": svc, "pod": "api-1"},
        "annotations": {"summary": "errors"},
        "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": svc.removeprefix("svc-") * 2,  # Alertmanager's hash of the labels
    }


def webhook(*alerts: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": "4",
        "status": alerts[0]["status"],
        "receiver": "selfheal",
        "truncatedAlerts": 0,
        "notification_reason": "new_alert",
        "routeLabels": {"team": "pay"},
        "alerts": list(alerts),
    }


async def workflows_of(client: Client, svc: str) -> list[str]:
    query = f"WorkflowType='HealingWorkflow' AND FaultService='{svc}'"
    return [e.id async for e in client.list_workflows(query)]


async def listed(client: Client, svc: str, count: int = 1) -> list[str]:
    """The healings of ``svc`` once visibility lists ``count`` of them (it may lag a start)."""
    for _ in range(100):
        found = await workflows_of(client, svc)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.1)
    return found


async def exists(client: Client, workflow_id: str) -> bool:
    try:
        await client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        assert exc.status == RPCStatusCode.NOT_FOUND
        return False
    return True


def awaiting(status: HealingStatus) -> bool:
    return status.awaiting_approval


def metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            found = dict(
                part.split("=", 1)
                for part in line[line.find("{") + 1 : line.find("}")].split(",")
                if "=" in part
            )
            if all(found.get(k) == f'"{v}"' for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


# ------------------------------------------------------------------------------ happy paths


async def test_alertmanager_fires_then_resolves_before_action(
    client: Client, api: httpx.AsyncClient
) -> None:
    svc = service()
    response = await api.post("/v1/alertmanager", json=webhook(alert(svc)), headers=INGEST)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 1 and len(body["started"]) == 1
    workflow_id = body["started"][0]
    assert workflow_id == f"heal-{alert(svc)['fingerprint']}-api-1"  # Alertmanager's, per target
    assert await exists(client, workflow_id)
    handle = client.get_workflow_handle(workflow_id, result_type=HealingStatus)
    status = await status_when(handle, awaiting)
    assert status.fault.source == "alertmanager" and status.fault.target == "api-1"
    assert status.fault.labels["alertname"] == "HighErrorRate"

    again = await api.post("/v1/alertmanager", json=webhook(alert(svc)), headers=INGEST)
    assert again.json()["joined"] == [workflow_id]

    resolved = await api.post(
        "/v1/alertmanager", json=webhook(alert(svc, "resolved")), headers=INGEST
    )
    assert resolved.status_code == 200 and resolved.json()["resolved"] == 1
    result = await asyncio.wait_for(handle.result(), timeout=30)
    assert result.outcome == HealingOutcome.RESOLVED_BEFORE_ACTION
    assert result.occurrences == 2

    # resolved again once its healing has ended: nothing to tell, still acknowledged
    late = await api.post("/v1/alertmanager", json=webhook(alert(svc, "resolved")), headers=INGEST)
    assert late.status_code == 200


async def test_fault_listed_shown_and_approved_by_the_token_identity(
    client: Client, api: httpx.AsyncClient
) -> None:
    svc = service()
    fault = {"service": svc, "type": "health_check_failed", "target": "api"}
    response = await api.post("/v1/faults", json=fault, headers=INGEST)
    assert response.status_code == 200, response.text
    assert response.json()["started"] is True
    workflow_id = response.json()["workflow_id"]
    await status_when(client.get_workflow_handle(workflow_id), awaiting)

    listed = await api.get("/v1/healings", params={"phase": "awaiting_approval"}, headers=INGEST)
    assert listed.status_code == 200
    assert workflow_id in [row["workflow_id"] for row in listed.json()]
    assert (
        await api.get("/v1/healings", params={"phase": "nope"}, headers=INGEST)
    ).status_code == 422

    shown = await api.get(f"/v1/healings/{workflow_id}", headers=INGEST)
    assert shown.status_code == 200 and shown.json()["awaiting_approval"] is True
    missing = await api.get("/v1/healings/heal-doesnotexist", headers=INGEST)
    assert missing.status_code == 404

    denied = await api.post(f"/v1/healings/{workflow_id}/approve", json={}, headers=INGEST)
    assert denied.status_code == 403
    approved = await api.post(
        f"/v1/healings/{workflow_id}/approve", json={"reason": "looks right"}, headers=APPROVER
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["by"] == "name:alice" and approved.json()["approved"] is True
    result = await asyncio.wait_for(
        client.get_workflow_handle(workflow_id, result_type=HealingStatus).result(), timeout=30
    )
    assert result.outcome == HealingOutcome.HEALED
    assert result.approval is not None and result.approval.reason == "looks right"

    again = await api.post(f"/v1/healings/{workflow_id}/reject", json={}, headers=APPROVER)
    assert again.status_code == 409


async def test_reject_and_dry_run(client: Client, api: httpx.AsyncClient) -> None:
    fault = {"service": service(), "type": "t", "target": "x"}
    response = await api.post("/v1/faults?dry_run=true", json=fault, headers=INGEST)
    workflow_id = response.json()["workflow_id"]
    handle = client.get_workflow_handle(workflow_id, result_type=HealingStatus)
    status = await status_when(handle, awaiting)
    assert status.dry_run
    rejected = await api.post(
        f"/v1/healings/{workflow_id}/reject", json={"reason": "not now"}, headers=APPROVER
    )
    assert rejected.status_code == 200 and rejected.json()["approved"] is False
    result = await asyncio.wait_for(handle.result(), timeout=30)
    assert result.outcome == HealingOutcome.REJECTED
    bad = await api.post(f"/v1/healings/{workflow_id}/reject", json={"why": 1}, headers=APPROVER)
    assert bad.status_code == 422 and bad.json()["field"] == "why"


# ---------------------------------------------------------------------- refusals start nothing


async def test_auth_size_and_payload_refusals_start_nothing(
    client: Client, api: httpx.AsyncClient
) -> None:
    svc = service()
    good = json.dumps(webhook(alert(svc))).encode()
    cases: list[tuple[dict[str, str], bytes, int, str | None]] = [
        ({}, good, 401, None),
        ({"Authorization": "Bearer wrong"}, good, 401, None),
        (APPROVER, good, 403, None),
        ({**INGEST, "Content-Encoding": "br"}, good, 415, None),
        (INGEST, b"x" * 70_000, 413, None),
        ({**INGEST, "Content-Encoding": "gzip"}, gzip.compress(b" " * 200_000), 413, None),
        ({**INGEST, "Content-Encoding": "gzip"}, b"not gzip", 400, None),
        (JSON_INGEST, b"{oops", 400, "body"),
        (JSON_INGEST, json.dumps({**webhook(alert(svc)), "alerts": [{"status": "x"}]}).encode(),
         422, "alerts[0].status"),
        # one bad alert among good ones: none of them starts
        (JSON_INGEST, json.dumps(webhook(alert(svc), {**alert(svc), "labels": {"service": svc}}))
         .encode(), 422, "alerts[1].labels.alertname"),
        # the body must be declared JSON
        (INGEST, good, 415, None),
        ({**INGEST, "Content-Type": "text/plain"}, good, 415, None),
        # only version 4 of the webhook
        (JSON_INGEST, json.dumps({**webhook(alert(svc)), "version": "3"}).encode(),
         422, "version"),
    ]  # fmt: skip
    for headers, body, status, field in cases:
        response = await api.post("/v1/alertmanager", content=body, headers=headers)
        assert response.status_code == status, (headers, response.text)
        assert "error" in response.json()
        assert "ingest-token" not in response.text
        if field is not None:
            assert response.json()["field"] == field
    bad_fault = await api.post(
        "/v1/faults", json={"service": svc, "type": "t", "severity": "loud"}, headers=INGEST
    )
    assert bad_fault.status_code == 422 and bad_fault.json()["field"] == "severity"
    assert await workflows_of(client, svc) == []
    # describe is strongly consistent, where visibility may lag
    assert not await exists(client, f"heal-{alert(svc)['fingerprint']}-api-1")
    assert (await api.post("/v1/healings/x/approve", json={})).status_code == 401
    assert (await api.get("/v1/healings")).status_code == 401


async def test_over_long_fields_are_422_naming_the_field_and_start_nothing(
    client: Client, api: httpx.AsyncClient
) -> None:
    # issue 8: a 5,000-character type reached Temporal, which refused its search attribute (502)
    svc = service()
    long_type = {"service": svc, "type": "t" * 5000, "target": "api"}
    response = await api.post("/v1/faults", json=long_type, headers=INGEST)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "type"
    assert "at most 128 characters" in response.json()["error"]
    assert len(response.text) < 300  # the value is not echoed back
    for fields, field in [
        ({"labels": {"team": "x" * 1025}}, "labels.team"),
        ({"summary": "s" * 4097}, "summary"),
        ({"health_url": "notaurl"}, "health_url"),
        ({"metric": {"url": "notaurl", "name": "m", "max": 1}}, "metric.url"),
    ]:
        fault = {"service": svc, "type": "t", "target": "api", **fields}
        response = await api.post("/v1/faults", json=fault, headers=INGEST)
        assert response.status_code == 422, response.text
        assert response.json()["field"] == field

    long_alert = alert(svc)
    long_alert["labels"] = {**long_alert["labels"], "alertname": "A" * 5000}
    response = await api.post("/v1/alertmanager", json=webhook(long_alert), headers=INGEST)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "alerts[0].labels.alertname"
    assert await workflows_of(client, svc) == []


async def test_json_endpoints_refuse_another_content_type(
    client: Client, api: httpx.AsyncClient
) -> None:
    svc = service()
    fault = json.dumps({"service": svc, "type": "t", "target": "api"})
    hook = json.dumps(webhook(alert(svc)))
    for path, body in (("/v1/faults", fault), ("/v1/alertmanager", hook)):
        for media in (None, "text/plain", "application/x-www-form-urlencoded"):
            headers = INGEST if media is None else {**INGEST, "Content-Type": media}
            response = await api.post(path, content=body, headers=headers)
            assert response.status_code == 415, (path, media, response.text)
            assert "application/json" in response.json()["error"]
    assert await workflows_of(client, svc) == []
    # a charset parameter is fine
    headers = {**INGEST, "Content-Type": "Application/JSON; charset=utf-8"}
    response = await api.post("/v1/faults", content=fault, headers=headers)
    assert response.status_code == 200, response.text


async def test_unknown_severity_and_odd_flags_keep_the_alert_and_say_so(
    client: Client, api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged: list[dict[str, Any]] = []

    class Log:
        def warning(self, event: str, **fields: Any) -> None:
            logged.append({"event": event, **fields})

    monkeypatch.setattr(signals, "log", Log())
    svc = service()
    odd = alert(svc)
    odd["labels"] = {
        **odd["labels"],
        "severity": "page",
        "selfheal_dry_run": "yes",  # a usual spelling of true: no warning
        "selfheal_require_approval": "maybe",  # unrecognised: true, and said so
    }
    response = await api.post("/v1/alertmanager", json=webhook(odd), headers=INGEST)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 1 and len(body["started"]) == 1
    assert [w["field"] for w in body["warnings"]] == [
        "alerts[0].labels.severity",
        "alerts[0].labels.selfheal_require_approval",
    ]
    assert "taken as warning" in body["warnings"][0]["message"]
    assert "taken as true" in body["warnings"][1]["message"]
    status = await status_when(client.get_workflow_handle(body["started"][0]), awaiting)
    assert status.dry_run and status.fault.dry_run
    assert status.fault.require_approval and status.fault.severity == "warning"
    assert [(e["event"], e["field"]) for e in logged] == [
        ("alert taken on a guess", w["field"]) for w in body["warnings"]
    ]

    plain = await api.post("/v1/alertmanager", json=webhook(alert(service())), headers=INGEST)
    assert plain.json()["warnings"] == []


async def test_temporal_unreachable_is_503_and_not_ready(client: Client, task_queue: str) -> None:
    # Temporal goes away under a connected intake: every call answers 503, Retry-After.
    proxy = await TcpProxy(client.service_client.config.target_host).start()
    through = await Client.connect(
        proxy.address,
        data_converter=pydantic_data_converter,
        retry_config=RetryConfig(max_retries=0),
    )
    await proxy.close()
    svc = service()
    async with http(make_deps(through, task_queue)) as api:
        fault = {"service": svc, "type": "t"}
        response = await api.post("/v1/faults", json=fault, headers=INGEST)
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"]
        storm = await api.post("/v1/alertmanager", json=webhook(alert(svc)), headers=INGEST)
        assert storm.status_code == 503
        resolved = await api.post(
            "/v1/alertmanager", json=webhook(alert(svc, "resolved")), headers=INGEST
        )
        assert resolved.status_code == 503
        assert (await api.get("/v1/healings", headers=INGEST)).status_code == 503
        assert (await api.get("/v1/healings/heal-x", headers=INGEST)).status_code == 503
        approve = await api.post("/v1/healings/heal-x/approve", json={}, headers=APPROVER)
        assert approve.status_code == 503
        assert (await api.get("/healthz")).status_code == 200
        ready = await api.get("/readyz")
        assert ready.status_code == 503 and ready.json()["temporal"].startswith("unreachable")


async def test_temporal_refusing_is_502_naming_why(client: Client, task_queue: str) -> None:
    elsewhere = await Client.connect(
        client.service_client.config.target_host,
        namespace="no-such-namespace",
        data_converter=pydantic_data_converter,
    )
    async with http(make_deps(elsewhere, task_queue)) as api:
        fault = {"service": service(), "type": "t"}
        response = await api.post("/v1/faults", json=fault, headers=INGEST)
    assert response.status_code == 502
    assert "no-such-namespace" in response.json()["error"]


async def test_readyz_checks_temporal_and_postgres(
    client: Client, task_queue: str, database_url: str
) -> None:
    async def postgres() -> None:
        async with await psycopg.AsyncConnection.connect(to_libpq_url(database_url)) as conn:
            await conn.execute("SELECT 1")

    async def broken() -> None:
        raise OSError("connection refused")

    async with http(make_deps(client, task_queue, ready_checks={"database": postgres})) as api:
        ready = await api.get("/readyz")
        assert ready.status_code == 200 and ready.json() == {"temporal": "ok", "database": "ok"}
    async with http(make_deps(client, task_queue, ready_checks={"database": broken})) as api:
        ready = await api.get("/readyz")
        assert ready.status_code == 503 and ready.json()["database"].startswith("unreachable")


# --------------------------------------------------------------------------------- the storm


async def test_storm_of_10000_identical_alerts_is_one_healing_counting_all(
    client: Client, api: httpx.AsyncClient
) -> None:
    svc = service()
    payload = webhook(*[alert(svc) for _ in range(100)])
    responses = await asyncio.gather(
        *(api.post("/v1/alertmanager", json=payload, headers=INGEST) for _ in range(100))
    )
    assert {r.status_code for r in responses} == {200}
    assert sum(r.json()["accepted"] for r in responses) == 10_000
    ids = {wid for r in responses for wid in r.json()["started"] + r.json()["joined"]}
    assert len(ids) == 1
    assert sum(len(r.json()["started"]) for r in responses) == 1
    assert len(await listed(client, svc)) == 1
    [workflow_id] = ids
    status = await status_when(client.get_workflow_handle(workflow_id), awaiting)
    assert status.occurrences == 10_000

    text = (await api.get("/metrics")).text
    assert metric(text, "selfheal_intake_alerts_accepted_total", endpoint="alertmanager") == 10_000
    assert (
        metric(text, "selfheal_intake_faults_total", endpoint="alertmanager", result="started") == 1
    )
    assert metric(text, "selfheal_intake_alerts_deduped_total", endpoint="alertmanager") > 9_000
    assert (
        metric(text, "selfheal_intake_start_latency_seconds_count", endpoint="alertmanager")
        == 10_000
    )


async def test_storm_through_the_catalog_counts_every_alert(
    client: Client, task_queue: str, scenario: Scenario, tmp_path: Path
) -> None:
    svc = service()
    path = tmp_path / "services.yaml"
    path.write_text(f"services:\n  - name: {svc}\n    targets: [{{name: api-1, kind: process}}]\n")
    async with http(make_deps(client, task_queue, load_services(path))) as api:
        payload = webhook(*[alert(svc) for _ in range(50)])
        responses = await asyncio.gather(
            *(api.post("/v1/alertmanager", json=payload, headers=INGEST) for _ in range(20))
        )
    assert {r.status_code for r in responses} == {200}
    [workflow_id] = await listed(client, svc)
    status = await status_when(client.get_workflow_handle(workflow_id), awaiting)
    assert status.occurrences == 1_000


# ------------------------------------------------------------------------------------- OTLP


def gauge_request(svc: str, values: list[float]) -> ExportMetricsServiceRequest:
    start = 1_700_000_000_000_000_000
    points = [
        NumberDataPoint(time_unix_nano=start + i * 1_000_000_000, as_double=v)
        for i, v in enumerate(values)
    ]
    resource = Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value=svc))])
    return ExportMetricsServiceRequest(
        resource_metrics=[
            ResourceMetrics(
                resource=resource,
                scope_metrics=[
                    ScopeMetrics(
                        metrics=[Metric(name="queue_depth", gauge=Gauge(data_points=points))]
                    )
                ],
            )
        ]
    )


async def test_otlp_metrics_protobuf_gzip_and_json_feed_the_detectors(
    client: Client, task_queue: str, scenario: Scenario
) -> None:
    router = MetricsRouter(detector_config())
    async with http(make_deps(client, task_queue, router=router)) as api:
        quiet, noisy = service(), service()
        body = gauge_request(quiet, [1.0] * 20).SerializeToString()
        response = await api.post(
            "/v1/otlp/v1/metrics",
            content=gzip.compress(body),
            headers={
                **INGEST,
                "Content-Type": "application/x-protobuf",
                "Content-Encoding": "gzip",
            },
        )
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-protobuf"
        ExportMetricsServiceResponse.FromString(response.content)
        assert await workflows_of(client, quiet) == []

        as_json = json_format.MessageToJson(gauge_request(noisy, [1.0] * 20 + [50.0]))
        response = await api.post(
            "/v1/otlp/v1/metrics",
            content=as_json,
            headers={**INGEST, "Content-Type": "application/json"},
        )
        assert response.status_code == 200, response.text
        assert response.json() == {}
        [workflow_id] = await listed(client, noisy)
        status = await status_when(client.get_workflow_handle(workflow_id), awaiting)
        assert (status.fault.type, status.fault.source) == ("queue_backlog", "otlp")

        wrong = await api.post(
            "/v1/otlp/v1/metrics",
            content=b"\x0a\xff",
            headers={**INGEST, "Content-Type": "text/plain"},
        )
        assert wrong.status_code == 415
        garbage = await api.post(
            "/v1/otlp/v1/metrics",
            content=b"\xff\xff\xff",
            headers={**INGEST, "Content-Type": "application/x-protobuf"},
        )
        assert garbage.status_code == 400


async def test_otlp_labels_over_a_faults_bounds_never_fail_the_export(
    client: Client, task_queue: str, scenario: Scenario
) -> None:
    # an over-long attribute is clipped; an over-long service name is refused by the catalog
    router = MetricsRouter(detector_config())
    async with http(make_deps(client, task_queue, router=router)) as api:
        svc, stranger = service(), "s" * 5000
        for name in (svc, stranger):
            request = gauge_request(name, [1.0] * 20 + [50.0])
            point = request.resource_metrics[0].scope_metrics[0].metrics[0].gauge.data_points
            for p in point:
                p.attributes.append(KeyValue(key="query", value=AnyValue(string_value="q" * 2000)))
            response = await api.post(
                "/v1/otlp/v1/metrics",
                content=request.SerializeToString(),
                headers={**INGEST, "Content-Type": "application/x-protobuf"},
            )
            assert response.status_code == 200, response.text
        [workflow_id] = await listed(client, svc)
        status = await status_when(client.get_workflow_handle(workflow_id), awaiting)
        assert status.fault.labels["query"] == "q" * 1023 + "…"
        text = (await api.get("/metrics")).text
        assert (
            metric(text, "selfheal_intake_faults_total", endpoint="otlp_metrics", result="refused")
            >= 1
        )


async def test_heartbeats_raise_a_fault_when_a_component_goes_silent(
    client: Client, task_queue: str, scenario: Scenario
) -> None:
    clock = Clock()
    router = MetricsRouter(detector_config(), clock=clock)
    component = beat_component()
    async with http(make_deps(client, task_queue, router=router)) as api:
        for _ in range(10):
            response = await api.post(f"/v1/heartbeats/{component}", headers=INGEST)
            assert response.status_code == 200 and response.json()["faults"] == []
            clock.now += 1.0
        unknown = await api.post("/v1/heartbeats/other", headers=INGEST)
        assert unknown.status_code == 404 and unknown.json()["field"] == "component"
        bad = await api.post("/v1/heartbeats/b%20d", headers=INGEST)
        assert bad.status_code == 422
        clock.now += 60.0
        response = await api.post("/v1/heartbeats/beat-z", headers=INGEST)
        [delivery] = response.json()["faults"]
        status = await status_when(client.get_workflow_handle(delivery["workflow_id"]), awaiting)
        assert status.fault.target == component and status.fault.type == "heartbeat_missed"


async def test_the_app_sweeps_heartbeats_in_the_background(
    client: Client, task_queue: str, scenario: Scenario
) -> None:
    clock = Clock()
    router = MetricsRouter(detector_config(), clock=clock)
    component = beat_component()
    for _ in range(10):
        router.heartbeat(component)
        clock.now += 1.0
    clock.now += 60.0  # silent since, and no request comes: only the sweep can notice
    workflow_id = healing_workflow_id(fingerprint_of("beats", "heartbeat_missed", component))
    app = create_app(make_deps(client, task_queue, router=router, heartbeat_sweep_s=0.05))
    async with app.router.lifespan_context(app):
        for _ in range(100):
            if await exists(client, workflow_id):
                break
            await asyncio.sleep(0.05)
    status = await status_when(client.get_workflow_handle(workflow_id), awaiting)
    assert (status.fault.source, status.fault.target) == ("heartbeat", component)


async def test_catalog_refuses_unknown_services_and_foreign_targets(
    client: Client, task_queue: str, scenario: Scenario, tmp_path: Path
) -> None:
    svc, frontend = service(), service()
    path = tmp_path / "services.yaml"
    path.write_text(
        f"services:\n  - name: {svc}\n    targets:\n      - {{name: api-1, kind: process}}\n"
        f"  - name: {frontend}\n    depends_on: [{svc}]\n"
        "    targets:\n      - {name: web, kind: process}\n"
    )
    deps = make_deps(client, task_queue, load_services(path))
    async with http(deps) as api:
        stranger = {"service": "nobody", "type": "t"}
        refused = await api.post("/v1/faults", json=stranger, headers=INGEST)
        assert refused.status_code == 422 and "unknown service 'nobody'" in refused.json()["error"]
        foreign = {**alert(svc), "labels": {**alert(svc)["labels"], "pod": "db-0"}}
        response = await api.post(
            "/v1/alertmanager", json=webhook(alert(svc), foreign), headers=INGEST
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["accepted"] == 1 and len(body["refused"]) == 1
        assert "db-0" in body["refused"][0]["reason"]
        [root] = await listed(client, svc)
        assert await workflows_of(client, "nobody") == []

        # a symptom on a service that depends on one being healed joins that healing
        symptom = {"service": frontend, "type": "latency_high"}
        joined = await api.post("/v1/faults", json=symptom, headers=INGEST)
        assert joined.status_code == 200, joined.text
        assert joined.json() == {"workflow_id": root, "started": False}
        status = await status_when(
            client.get_workflow_handle(root), lambda s: len(s.secondary_faults) == 1
        )
        assert status.secondary_faults[0].service == frontend
        assert await workflows_of(client, frontend) == []


# ------------------------------------------------------- the official exporters, a real server


async def test_official_otlp_exporters_against_a_real_server(
    client: Client, task_queue: str, scenario: Scenario
) -> None:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource as SdkResource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import Status as SpanStatus
    from opentelemetry.trace import StatusCode

    app = create_app(make_deps(client, task_queue))
    server = serve_in_thread(app)
    try:
        exporter = OTLPSpanExporter(
            endpoint=f"{server.url}/v1/otlp/v1/traces",
            headers={"Authorization": "Bearer ingest-token"},
            compression=Compression.Gzip,
        )
        provider = TracerProvider(resource=SdkResource.create({"service.name": "pay"}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("test")
        await asyncio.to_thread(_emit_spans, tracer, SpanStatus(StatusCode.ERROR, "card declined"))
        provider.shutdown()
        async with httpx.AsyncClient(base_url=server.url) as session:
            errors = await session.get(
                "/v1/traces/errors", params={"service": "pay"}, headers=INGEST
            )
        assert errors.status_code == 200
        assert [(e["name"], e["message"]) for e in errors.json()] == [
            ("charge-2", "card declined"),
            ("charge-1", "card declined"),
        ]
        assert len(errors.json()[0]["trace_id"]) == 32
    finally:
        server.stop()


def _emit_spans(tracer: Any, error: Any) -> None:
    for name in ("charge-1", "fine", "charge-2"):
        with tracer.start_as_current_span(name) as span:
            if name != "fine":
                span.set_status(error)


async def test_openapi_document_is_served_and_committed(api: httpx.AsyncClient) -> None:
    served = (await api.get("/openapi.json")).json()
    assert "/v1/alertmanager" in served["paths"]
    assert "Fault" in served["components"]["schemas"]
    committed = (Path(__file__).resolve().parents[2] / "docs" / "openapi.json").read_text()
    assert json.loads(committed) == served, (
        "docs/openapi.json is stale: regenerate it with selfheal serve --openapi docs/openapi.json"
    )
