"""The worker's client carries the OpenTelemetry TracingInterceptor: a healing leaves spans for
the workflow and each activity in the installed tracer provider."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client

from selfheal.core.settings import Settings, TelemetrySettings, TemporalSettings
from selfheal.core.telemetry import setup_tracing
from selfheal.core.temporal import connect
from selfheal.domain import Fault, HealingOutcome, HealingStatus
from selfheal.healings.start import start_healing
from selfheal.worker import build_worker
from tests.integration.standins import Scenario

pytestmark = pytest.mark.integration


async def test_healing_is_traced(client: Client, task_queue: str) -> None:
    exporter = InMemorySpanExporter()
    provider = setup_tracing(TelemetrySettings(), processor=SimpleSpanProcessor(exporter))
    assert provider is not None
    traced = await connect(
        TemporalSettings(address=client.service_client.config.target_host, task_queue=task_queue)
    )
    fault = Fault(service="demo", type="health_check_failed", target=f"t-{uuid.uuid4().hex}")
    async with build_worker(
        traced, Settings(), activities=Scenario().activities(), task_queue=task_queue
    ):
        started = await start_healing(traced, fault, task_queue=task_queue)
        handle = traced.get_workflow_handle(started.workflow_id, result_type=HealingStatus)
        result = await asyncio.wait_for(handle.result(), timeout=60)
    assert result.outcome == HealingOutcome.HEALED
    names = {span.name for span in exporter.get_finished_spans()}
    assert "RunWorkflow:HealingWorkflow" in names
    assert "RunActivity:run_step" in names
    assert "RunActivity:validate_recovery" in names


def test_no_endpoint_means_no_provider() -> None:
    assert setup_tracing(TelemetrySettings()) is None
