"""kube-prometheus alerts posted to the HTTP intake as Alertmanager posts them, against the real
Temporal dev server: the healing started is the catalog target's, an alert that names no
catalog target is refused beside the others of its webhook, and the resolved alert reaches the
same healing. (The Kubernetes end-to-end tests act on a real API server; this one stops at the
door and the workflow's input.)"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio.client import Client

from selfheal.api.app import IntakeDeps, create_app
from selfheal.core.catalog import ServiceCatalog, TargetSpec
from selfheal.core.settings import IntakeSettings
from selfheal.domain import HealingStatus
from tests.integration.standins import Scenario
from tests.integration.test_workflow_logic import running, status_when
from tests.support import add_service, door_for

pytestmark = pytest.mark.integration

INGEST = {"Authorization": "Bearer ingest-token"}
KSM = {
    "job": "kube-state-metrics",
    "service": "kube-prometheus-stack-kube-state-metrics",
    "endpoint": "http",
    "instance": "10.0.3.7:8080",
    "pod": "kube-prometheus-stack-kube-state-metrics-6d8c9f7b5-q7x2m",
    "container": "kube-state-metrics",
}


def alert(name: str, fingerprint: str, state: str = "firing", **labels: str) -> dict[str, Any]:
    return {
        "status": state,
        "labels": {"alertname": name, "severity": "warning", **labels},
        "annotations": {"summary": f"{name} summary"},
        "startsAt": "2026-11-30T12:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": fingerprint,
    }


def webhook(*alerts: dict[str, Any]) -> dict[str, Any]:
    return {"version": "4", "status": alerts[0]["status"], "receiver": "selfheal", "alerts": alerts}


@pytest_asyncio.fixture
async def setup(
    client: Client, task_queue: str
) -> AsyncIterator[tuple[httpx.AsyncClient, str, str]]:
    """The intake with a catalog of one Deployment (its namespace unique to this test) and one
    node, and a worker whose healings wait for a human (so they can be looked at)."""
    namespace = f"ns-{uuid.uuid4().hex[:8]}"
    catalog = ServiceCatalog()
    web = add_service(
        catalog, f"web-{namespace}", TargetSpec(name="web", kind="deployment", namespace=namespace)
    )
    add_service(catalog, f"nodes-{namespace}", TargetSpec(name=f"node-{namespace}", kind="node"))
    settings = IntakeSettings(tokens={"ingest-token": ["ingest"]})
    app = create_app(IntakeDeps(door=door_for(client, task_queue, catalog), settings=settings))
    async with (
        running(client, task_queue, Scenario(confidence=0.3)),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://i") as api,
    ):
        yield api, namespace, web


def awaiting(status: HealingStatus) -> bool:
    return status.awaiting_approval


async def test_kube_prometheus_alerts_heal_their_catalog_targets(
    client: Client, setup: tuple[httpx.AsyncClient, str, str]
) -> None:
    api, namespace, web = setup
    fp = uuid.uuid4().hex[:16]
    crash = alert(
        "KubePodCrashLooping",
        fp,
        **{**KSM, "namespace": namespace, "pod": "web-7d9f8b6c5d-x2x4z", "container": "app"},
        reason="CrashLoopBackOff",
    )
    node = alert(
        "KubeNodeNotReady",
        fp[::-1],
        **{**KSM, "namespace": "monitoring"},
        node=f"node-{namespace}",
        condition="Ready",
        status="true",
    )
    stranger = alert("KubePodNotReady", fp[1:] + "0", namespace=namespace, pod="cart-0")
    response = await api.post(
        "/v1/alertmanager", json=webhook(crash, node, stranger), headers=INGEST
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 2 and len(body["started"]) == 2
    [refused] = body["refused"]
    assert refused["fingerprint"] == fp[1:] + "0"
    assert refused["reason"].startswith(
        f"no target of the service catalog matches pod 'cart-0' in namespace '{namespace}'"
    )

    crashing = await status_when(client.get_workflow_handle(f"heal-{fp}-web"), awaiting)
    fault = crashing.fault
    assert (fault.service, fault.target, fault.type) == (web, "web", "KubePodCrashLooping")
    assert fault.labels["namespace"] == namespace
    assert (fault.labels["pod"], fault.labels["container"]) == ("web-7d9f8b6c5d-x2x4z", "app")
    handle = client.get_workflow_handle(f"heal-{fp[::-1]}-node-{namespace}")
    down = await status_when(handle, awaiting)
    assert (down.fault.target, down.fault.labels["node"]) == (f"node-{namespace}",) * 2
    assert "pod" not in down.fault.labels and "container" not in down.fault.labels

    # the alert resolved, as Alertmanager sends it: the same healing hears of it
    over = {**crash, "status": "resolved", "endsAt": "2026-11-30T12:20:00Z"}
    response = await api.post("/v1/alertmanager", json=webhook(over), headers=INGEST)
    assert response.status_code == 200, response.text
    assert response.json()["resolved"] == 1
    resolved = await status_when(
        client.get_workflow_handle(f"heal-{fp}-web"), lambda s: s.resolved_at is not None
    )
    assert resolved.fault.target == "web"
