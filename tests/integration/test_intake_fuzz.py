"""Property-based fuzzing of the intake: whatever arrives, no 5xx, and a refusal starts nothing.

Runs against the real Temporal dev server (no worker: nothing should ever be scheduled). The
number of healings on the test's own task queue is counted before and after every refused
request.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio.client import Client

from selfheal.api.app import IntakeDeps, create_app
from selfheal.core.catalog import ServiceCatalog
from selfheal.core.settings import IntakeSettings
from selfheal.detection.detector_config import DetectorConfig
from selfheal.detection.metrics_router import MetricsRouter
from tests.support import add_service, door_for

pytestmark = pytest.mark.integration

TOKEN = {"Authorization": "Bearer fuzz-token"}
JSON = {**TOKEN, "Content-Type": "application/json"}
QUEUE = f"fuzz-{uuid.uuid4()}"
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


def valid_alert() -> dict[str, Any]:
    return {
        "status": "firing",
        "labels": {"alertname": "A", "service": "fuzzed", "pod": "p"},
        "annotations": {},
        "startsAt": "2026-01-01T00:00:00Z",
        "fingerprint": "0011223344556677",
    }


@st.composite
def broken_webhooks(draw: st.DrawFn) -> dict[str, Any]:
    """A valid webhook with one field replaced by an arbitrary JSON value that does not fit."""
    body: dict[str, Any] = {"version": "4", "status": "firing", "alerts": [valid_alert()]}
    where = draw(st.sampled_from(
        ["alerts", "alert.status", "alert.labels", "alert.startsAt", "label.alertname",
         "label.service", "alert.fingerprint"]
    ))  # fmt: skip
    value = draw(json_values)
    alert = body["alerts"][0]
    if where == "alerts":
        body["alerts"] = value if not isinstance(value, list) or value else 3
    elif where.startswith("alert."):
        alert[where.removeprefix("alert.")] = value
    else:
        alert["labels"][where.removeprefix("label.")] = value
    return body


@pytest_asyncio.fixture
async def api(client: Client) -> AsyncIterator[httpx.AsyncClient]:
    router = MetricsRouter(
        DetectorConfig.model_validate(
            {
                "metrics": [
                    {"name": "r", "metric": "m", "detector": "ewma", "params": {"min_points": 1},
                     "fault": {"type": "t", "service": "fuzzed"}}
                ],
                "heartbeats": {"components": [{"match": "*", "service": "fuzzed"}]},
            }
        )
    )  # fmt: skip
    catalog = ServiceCatalog()
    add_service(catalog, "fuzzed", "fuzzed-target")
    deps = IntakeDeps(
        door=door_for(client, QUEUE, catalog),
        settings=IntakeSettings(tokens={"fuzz-token": ["ingest", "approve"]}, max_body_bytes=4096),
        router=router,
    )
    transport = httpx.ASGITransport(app=create_app(deps))
    async with httpx.AsyncClient(transport=transport, base_url="http://intake") as session:
        yield session


async def healings(client: Client) -> int:
    return (await client.count_workflows(f"TaskQueue='{QUEUE}'")).count


async def refused_start_nothing(client: Client, response: httpx.Response, before: int) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body["error"], str) and body["error"]
        assert await healings(client) == before


@FUZZ
@given(body=st.one_of(json_values.map(json.dumps), broken_webhooks().map(json.dumps)))
async def test_alertmanager_fuzz(client: Client, api: httpx.AsyncClient, body: str) -> None:
    before = await healings(client)
    response = await api.post("/v1/alertmanager", content=body, headers=JSON)
    await refused_start_nothing(client, response, before)
    assert response.status_code in (200, 400, 413, 422)


@FUZZ
@given(body=st.dictionaries(
    st.sampled_from(["service", "type", "target", "severity", "labels", "values", "metric",
                     "fingerprint", "detected_at", "dry_run", "extra"]),
    json_values, max_size=6,
))  # fmt: skip
async def test_faults_fuzz(client: Client, api: httpx.AsyncClient, body: dict[str, Any]) -> None:
    before = await healings(client)
    # json.dumps writes NaN and Infinity as Python does: the intake must refuse them
    response = await api.post("/v1/faults", content=json.dumps(body), headers=JSON)
    await refused_start_nothing(client, response, before)


@FUZZ
@given(
    body=st.binary(max_size=600),
    path=st.sampled_from(["/v1/otlp/v1/metrics", "/v1/otlp/v1/traces"]),
    media=st.sampled_from(["application/x-protobuf", "application/json", "text/plain", ""]),
    coding=st.sampled_from([None, "gzip", "identity", "deflate"]),
)
async def test_otlp_fuzz(
    client: Client, api: httpx.AsyncClient, body: bytes, path: str, media: str, coding: str | None
) -> None:
    headers = {**TOKEN, "Content-Type": media}
    if coding is not None:
        headers["Content-Encoding"] = coding
    before = await healings(client)
    response = await api.post(path, content=body, headers=headers)
    await refused_start_nothing(client, response, before)


@FUZZ
@given(
    component=st.text(min_size=1, max_size=40),
    workflow_id=st.text(min_size=1, max_size=40),
    body=json_values.map(json.dumps),
    authorization=st.one_of(st.none(), st.text(max_size=30), st.just(TOKEN["Authorization"])),
)
async def test_paths_and_headers_fuzz(
    client: Client,
    api: httpx.AsyncClient,
    component: str,
    workflow_id: str,
    body: str,
    authorization: str | None,
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    before = await healings(client)
    for method, path in [
        ("POST", f"/v1/heartbeats/{quote(component, safe='')}"),
        ("POST", f"/v1/healings/{quote(workflow_id, safe='')}/approve"),
        ("GET", f"/v1/healings/{quote(workflow_id, safe='')}"),
        ("GET", "/v1/healings"),
    ]:
        try:
            response = await api.request(method, path, content=body, headers=headers)
        except (UnicodeEncodeError, httpx.LocalProtocolError):
            continue  # a header value HTTP cannot carry
        assert response.status_code < 500, response.text
        if authorization != TOKEN["Authorization"]:
            # a route that does not exist (an id holding "/") is 404 before any token check
            assert response.status_code in (401, 404), response.text
    assert await healings(client) == before
