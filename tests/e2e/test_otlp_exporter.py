"""The official OpenTelemetry metrics pipeline into the intake: ``opentelemetry-sdk``'s
MeterProvider with the OTLP/HTTP (protobuf) metric exporter, bearer token in its headers, sends
the demo service's error ratio to ``/v1/otlp/v1/metrics``; the detector configured for it in
runbooks/detectors.yaml raises a fault, whose healing starts on the real dev server (worked by
stand-in activities: the point here is the signal path, not the remedy)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExportResult,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from temporalio.client import Client

from selfheal.core.settings import Settings
from selfheal.devstack.supervisor import ServerHandle
from selfheal.domain import HealingOutcome, HealingStatus
from selfheal.worker import build_worker
from tests.e2e.peers import REPO, intake_app
from tests.integration.demo_stack import TARGET
from tests.integration.standins import Scenario

pytestmark = pytest.mark.integration

TOKEN = "otlp-e2e-token"
CHECKOUT = {"service": "checkout"}  # the demo's label: detectors.yaml matches on it
BASELINE_EXPORTS = 8  # beyond the EWMA rule's min_points (5): the detector has learned "0"


@pytest.fixture
def intake(client: Client, task_queue: str) -> Iterator[ServerHandle]:
    handle = intake_app(client, task_queue, REPO / "runbooks", tokens={TOKEN: ["ingest"]})
    try:
        yield handle
    finally:
        handle.stop()


def meter_provider(intake_url: str, token: str) -> MeterProvider:
    exporter = OTLPMetricExporter(
        endpoint=f"{intake_url}/v1/otlp/v1/metrics",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    # Exports happen on force_flush only: the test decides when a point leaves.
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    return MeterProvider(
        resource=Resource.create({"service.name": "checkout"}), metric_readers=[reader]
    )


async def healings_on(client: Client, task_queue: str) -> list[str]:
    return [w.id async for w in client.list_workflows(f'TaskQueue = "{task_queue}"')]


def intake_counter(intake_url: str, name: str) -> float:
    for line in httpx.get(f"{intake_url}/metrics", timeout=5).text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_sdk_exporter_feeds_a_detector_that_starts_a_healing(
    client: Client, task_queue: str, intake: ServerHandle
) -> None:
    provider = meter_provider(intake.url, TOKEN)
    error_ratio = provider.get_meter("selfheal.e2e").create_gauge(
        "demo_error_ratio", description="failed share of checkouts"
    )

    async def export(value: float) -> None:
        error_ratio.set(value, CHECKOUT)
        # force_flush blocks on the HTTP export: keep the event loop (and the worker) running
        assert await asyncio.to_thread(provider.force_flush, 10_000)
        await asyncio.sleep(0.01)  # distinct timestamps per point

    scenario = Scenario()
    try:
        async with build_worker(
            client, Settings(), activities=scenario.activities(), task_queue=task_queue
        ):
            for _ in range(BASELINE_EXPORTS):
                await export(0.0)
            assert intake_counter(intake.url, "selfheal_intake_metric_points_total") == (
                BASELINE_EXPORTS
            )
            assert await healings_on(client, task_queue) == []  # a steady series raises nothing

            await export(0.6)  # the error burst

            ids: list[str] = []
            for _ in range(50):
                ids = await healings_on(client, task_queue)
                if ids:
                    break
                await asyncio.sleep(0.1)
            assert len(ids) == 1, f"expected one healing, found {ids}"
            handle = client.get_workflow_handle(ids[0], result_type=HealingStatus)
            result = await asyncio.wait_for(handle.result(), timeout=30)
            started = 'selfheal_intake_faults_total{endpoint="otlp_metrics",result="started"}'
            assert intake_counter(intake.url, started) == 1
    finally:
        # shutdown exports once more: a healthy last value, so that it raises nothing
        error_ratio.set(0.0, CHECKOUT)
        await asyncio.to_thread(provider.shutdown)

    fault = result.fault
    assert (fault.source, fault.service, fault.type, fault.target) == (
        "otlp", "checkout", "error_rate_high", TARGET,
    )  # fmt: skip
    assert fault.labels["detector_rule"] == "checkout-error-ratio"
    assert fault.values["value"] == pytest.approx(0.6)
    assert result.outcome == HealingOutcome.HEALED


async def test_exporter_without_the_right_token_is_refused(
    client: Client, task_queue: str, intake: ServerHandle
) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(
        resource=Resource.create({"service.name": "checkout"}), metric_readers=[reader]
    )
    provider.get_meter("selfheal.e2e").create_gauge("demo_error_ratio").set(0.9)
    data = reader.get_metrics_data()
    assert data is not None

    def export(token: str) -> MetricExportResult:
        exporter = OTLPMetricExporter(
            endpoint=f"{intake.url}/v1/otlp/v1/metrics",
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        )
        try:
            return exporter.export(data)
        finally:
            exporter.shutdown()

    assert await asyncio.to_thread(export, "not-a-token") == MetricExportResult.FAILURE
    assert intake_counter(intake.url, "selfheal_intake_metric_points_total") == 0
    assert await asyncio.to_thread(export, TOKEN) == MetricExportResult.SUCCESS
    assert intake_counter(intake.url, "selfheal_intake_metric_points_total") == 1
    assert await healings_on(client, task_queue) == []  # one point teaches, it does not alert
    provider.shutdown()
