"""One door into healings: the same fault through every way in (HTTP faults, the Alertmanager
webhook, ``selfheal fault submit``, the door itself, the health watcher, OTLP metrics, heartbeats)
gives the same workflow input, and no door lets a report choose where to act: target, health
URL, metric, ``base_url``, ``namespace`` and ``cache_prefix`` come from the service catalog, and
a target outside it is refused everywhere, before anything starts.

Healings start on a task queue no worker polls, so each input is read from the workflow's first
history event exactly as the door wrote it, then the workflow is terminated.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
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
from temporalio.service import RPCError
from typer.testing import CliRunner

from selfheal.api.app import IntakeDeps, create_app
from selfheal.cli.main import app as cli_app
from selfheal.core.catalog import ServiceCatalog, TargetSpec
from selfheal.core.settings import IntakeSettings, get_settings
from selfheal.detection.detector_config import DetectorConfig
from selfheal.detection.health import WatchTarget
from selfheal.detection.metrics_router import MetricsRouter
from selfheal.devstack.watcher import HealthWatcher
from selfheal.domain import Fault, HealingInput, IntakeError, MetricCheck
from selfheal.healings import Healings
from tests.support import add_service, free_port

pytestmark = pytest.mark.integration

TOKEN = {"Authorization": "Bearer door-token"}
# What a report would like to steer: none of it may reach a healing.
FOREIGN = "http://127.0.0.1:9/elsewhere"
HOSTILE_LABELS = {"base_url": FOREIGN, "namespace": "kube-system", "cache_prefix": "victim:"}
HOSTILE_FIELDS: dict[str, Any] = {
    "health_url": f"{FOREIGN}/healthz",
    "metric": {"url": f"{FOREIGN}/metrics", "name": "x", "max": 1},
}


@dataclass
class World:
    client: Client
    task_queue: str
    service: str
    target: TargetSpec
    door: Healings
    api: httpx.AsyncClient
    runbooks: Path
    clock: list[float]

    def fault(self, target: str | None = None, **extra: Any) -> dict[str, Any]:
        return {
            "service": self.service,
            "type": "health_check_failed",
            "target": target or self.target.name,
            "labels": {**HOSTILE_LABELS, "team": "payments"},
            **HOSTILE_FIELDS,
            **extra,
        }


@pytest_asyncio.fixture
async def world(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[World]:
    task_queue = f"doors-{uuid.uuid4().hex[:8]}"  # no worker: healings stay as started
    service = f"shop-{uuid.uuid4().hex[:8]}"
    target = TargetSpec(
        name="web",
        kind="http",
        namespace="shop",
        health_url="http://127.0.0.1:8780/healthz",
        base_url="http://127.0.0.1:8780",
        metric=MetricCheck(url="http://127.0.0.1:8780/metrics", name="errors", max=0.1),
        labels={"cache_prefix": "shop:"},
    )
    catalog = ServiceCatalog()
    add_service(catalog, service, target)
    runbooks = tmp_path / "runbooks"
    runbooks.mkdir()
    (runbooks / "services.yaml").write_text(json.dumps(catalog.model_dump(mode="json")))
    monkeypatch.setenv("SELFHEAL_TEMPORAL__ADDRESS", client.service_client.config.target_host)
    monkeypatch.setenv("SELFHEAL_TEMPORAL__TASK_QUEUE", task_queue)
    monkeypatch.setenv("SELFHEAL_RUNBOOKS_DIR", str(runbooks))
    get_settings.cache_clear()
    clock = [1_000.0]
    router = MetricsRouter(
        DetectorConfig.model_validate(
            {
                "metrics": [
                    {
                        "name": "errors",
                        "metric": "errors",
                        "detector": "zscore",
                        "params": {"window": 30, "sigma": 3, "direction": "up", "min_std": 0.1},
                        "fault": {
                            "type": "health_check_failed",
                            "service_label": "service.name",
                            "target_label": "target",
                        },
                    }
                ],
                "heartbeats": {"components": [{"match": "*", "service": service}]},
            }
        ),
        clock=lambda: clock[0],
    )
    door = Healings(client, catalog, task_queue=task_queue)
    deps = IntakeDeps(
        door=door, settings=IntakeSettings(tokens={"door-token": ["ingest"]}), router=router
    )
    transport = httpx.ASGITransport(app=create_app(deps))
    async with httpx.AsyncClient(transport=transport, base_url="http://intake") as api:
        yield World(client, task_queue, service, target, door, api, runbooks, clock)
    get_settings.cache_clear()
    async for execution in client.list_workflows(f"TaskQueue='{task_queue}'"):
        try:
            await client.get_workflow_handle(execution.id).terminate("test over")
        except RPCError:
            pass


# ------------------------------------------------------------------------------------ doors

Door = Callable[[World, str | None], Awaitable[str | None]]
"""Reports the world's fault (to ``target``, default the catalog's) with every safety flag the
door can carry; the workflow id it started, or None when it was refused (having checked the
refusal is one the door shows its caller)."""


async def http_faults(world: World, target: str | None) -> str | None:
    response = await world.api.post(
        "/v1/faults",
        params={"dry_run": "true", "require_approval": "true"},
        json=world.fault(target),
        headers=TOKEN,
    )
    if target is not None and target != world.target.name:
        assert response.status_code == 422, response.text
        assert "not a target" in response.json()["error"]
        return None
    assert response.status_code == 200, response.text
    workflow_id: str = response.json()["workflow_id"]
    return workflow_id


async def alertmanager(world: World, target: str | None) -> str | None:
    labels = {
        **HOSTILE_LABELS,
        "team": "payments",
        "alertname": "health_check_failed",
        "service": world.service,
        "target": target or world.target.name,
        "selfheal_dry_run": "true",
        "selfheal_require_approval": "true",
    }
    alert = {
        "status": "firing",
        "labels": labels,
        "annotations": {"summary": "down"},
        "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": uuid.uuid4().hex[:16],
    }
    body = {"version": "4", "status": "firing", "receiver": "selfheal", "alerts": [alert]}
    response = await world.api.post("/v1/alertmanager", json=body, headers=TOKEN)
    assert response.status_code == 200, response.text
    result = response.json()
    if target is not None and target != world.target.name:
        assert result["accepted"] == 0 and "not a target" in result["refused"][0]["reason"]
        return None
    [workflow_id] = result["started"]
    return str(workflow_id)


async def cli_submit(world: World, target: str | None) -> str | None:
    args = ["fault", "submit", "-", "--dry-run", "--require-approval"]
    stdin = json.dumps(world.fault(target))
    result = await asyncio.to_thread(CliRunner().invoke, cli_app, args, input=stdin)
    if target is not None and target != world.target.name:
        assert result.exit_code == 2, result.output
        assert "not a target" in result.stderr and len(result.stderr.splitlines()) == 1
        return None
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


async def door_report(world: World, target: str | None) -> str | None:
    fault = Fault.model_validate(world.fault(target))
    if target is not None and target != world.target.name:
        with pytest.raises(IntakeError, match="not a target"):
            await world.door.report(fault, dry_run=True, require_approval=True)
        return None
    return (await world.door.report(fault, dry_run=True, require_approval=True)).workflow_id


async def watcher(world: World, target: str | None) -> str | None:
    watching = HealthWatcher(
        world.door,
        WatchTarget(
            service=world.service,
            # the watcher probes what it was given (here: nothing answers), but reports only
            # what the catalog says
            health_url=f"http://127.0.0.1:{free_port()}/healthz",
            target=target or world.target.name,
            labels=dict(HOSTILE_LABELS),
        ),
        interval_s=0.01,
        timeout_s=0.5,
    )
    async with httpx.AsyncClient() as http:
        for _ in range(watching.failure_threshold):
            await watching.observe(await watching.check(http))
    if target is not None and target != world.target.name:
        assert watching.detections == [] and watching.state.reported
        return None
    [detection] = watching.detections
    return detection.workflow_id


async def otlp_metrics(world: World, target: str | None) -> str | None:
    attributes = [
        KeyValue(key=k, value=AnyValue(string_value=v))
        for k, v in {"target": target or world.target.name, **HOSTILE_LABELS}.items()
    ]
    values = [1.0] * 20 + [50.0]
    points = [
        NumberDataPoint(
            time_unix_nano=(1_700_000_000 + i) * 10**9, as_double=v, attributes=attributes
        )
        for i, v in enumerate(values)
    ]
    service = KeyValue(key="service.name", value=AnyValue(string_value=world.service))
    request = ExportMetricsServiceRequest(
        resource_metrics=[
            ResourceMetrics(
                resource=Resource(attributes=[service]),
                scope_metrics=[
                    ScopeMetrics(metrics=[Metric(name="errors", gauge=Gauge(data_points=points))])
                ],
            )
        ]
    )
    response = await world.api.post(
        "/v1/otlp/v1/metrics",
        content=json_format.MessageToJson(request),
        headers={**TOKEN, "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    return await _only_healing(world, refused=target is not None and target != world.target.name)


async def heartbeats(world: World, target: str | None) -> str | None:
    component = target or world.target.name
    for _ in range(10):
        response = await world.api.post(f"/v1/heartbeats/{component}", headers=TOKEN)
        assert response.status_code == 200, response.text
        world.clock[0] += 1.0
    world.clock[0] += 120.0  # silent since
    response = await world.api.post(f"/v1/heartbeats/{component}-sweeper", headers=TOKEN)
    assert response.status_code == 200, response.text
    refused = [r for r in response.json()["refused"] if component in r["reason"]]
    if target is not None and target != world.target.name:
        assert refused and "not a target" in refused[0]["reason"]
        return None
    [delivery] = [d for d in response.json()["faults"]]
    return str(delivery["workflow_id"])


async def _only_healing(world: World, *, refused: bool) -> str | None:
    ids = [e.id async for e in world.client.list_workflows(f"TaskQueue='{world.task_queue}'")]
    if refused:
        assert ids == []
        return None
    [workflow_id] = ids
    return workflow_id


# Doors that carry a report's safety flags, and selfheal's own detectors, which carry none.
WITH_FLAGS: dict[str, Door] = {
    "http_faults": http_faults,
    "alertmanager": alertmanager,
    "cli": cli_submit,
    "door": door_report,
}
DETECTORS: dict[str, Door] = {
    "watcher": watcher,
    "otlp_metrics": otlp_metrics,
    "heartbeats": heartbeats,
}


async def started_input(client: Client, workflow_id: str) -> HealingInput:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    [value] = pydantic_data_converter.payload_converter.from_payloads(
        list(started.input.payloads), [HealingInput]
    )
    assert isinstance(value, HealingInput)
    return value


def where_to_act(given: HealingInput) -> dict[str, Any]:
    """What the catalog decides, and the flags, as a healing received them."""
    fault = given.fault
    return {
        "service": fault.service,
        "target": fault.target,
        "health_url": fault.health_url,
        "metric": fault.metric,
        "catalog_labels": {k: fault.labels.get(k) for k in HOSTILE_LABELS},
        "dry_run": (given.dry_run, fault.dry_run),
        "require_approval": (given.require_approval, fault.require_approval),
    }


def expected(target: TargetSpec, *, flags: bool) -> dict[str, Any]:
    return {
        "service": None,  # filled in by the test
        "target": target.name,
        "health_url": target.health_url,
        "metric": target.metric,
        "catalog_labels": {
            "base_url": target.base_url,
            "namespace": target.namespace,
            "cache_prefix": "shop:",
        },
        "dry_run": (flags, flags),
        "require_approval": (flags, flags),
    }


@pytest.mark.parametrize("name", [*WITH_FLAGS, *DETECTORS])
async def test_every_door_gives_the_same_workflow_input(world: World, name: str) -> None:
    door = {**WITH_FLAGS, **DETECTORS}[name]
    workflow_id = await door(world, None)
    assert workflow_id is not None
    given = await started_input(world.client, workflow_id)
    want = expected(world.target, flags=name in WITH_FLAGS) | {"service": world.service}
    assert where_to_act(given) == want
    # nothing a report said about where to act survives anywhere in the input
    text = given.model_dump_json()
    assert FOREIGN not in text and "victim:" not in text and "kube-system" not in text


@pytest.mark.parametrize("name", [*WITH_FLAGS, *DETECTORS])
async def test_a_target_outside_the_catalog_is_refused_at_every_door(
    world: World, name: str
) -> None:
    door = {**WITH_FLAGS, **DETECTORS}[name]
    assert await door(world, "db-primary") is None
    assert [e async for e in world.client.list_workflows(f"TaskQueue='{world.task_queue}'")] == []


async def test_no_worker_answering_is_temporal_unavailable_not_a_crash(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decision or a status query that no worker answers is "retry later" (503 over HTTP,
    one line in the CLI), not a traceback, and not "Temporal refused" (502: do not retry)."""
    from datetime import timedelta

    from selfheal.domain.errors import TemporalUnavailable
    from selfheal.healings import door, queries

    monkeypatch.setattr(door, "WORKER_ANSWER_TIMEOUT", timedelta(seconds=1))
    monkeypatch.setattr(queries, "WORKER_ANSWER_TIMEOUT", timedelta(seconds=1))
    workflow_id = await door_report(world, None)  # no worker polls this task queue
    assert workflow_id is not None
    with pytest.raises(TemporalUnavailable, match="no worker answered the approve update"):
        await world.door.decide(workflow_id, "approve", by="alice")
    with pytest.raises(TemporalUnavailable, match="did not answer in time"):
        await world.door.show(workflow_id)
