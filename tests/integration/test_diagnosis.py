"""collect_evidence + diagnose_fault against real HTTP servers on 127.0.0.1.

A small FastAPI app plays a target's /healthz and /metrics states. (The demo services' own
/healthz no longer names a cause: tests/integration/test_demo_target.py checks their evidence.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse
from temporalio.testing import ActivityEnvironment

from selfheal.activities.diagnosis import DiagnosisActivities
from selfheal.activities.evidence.base import EvidenceProviders
from selfheal.activities.evidence.probe import ProbeProvider
from selfheal.devstack.supervisor import ServerHandle, serve_in_thread
from selfheal.diagnosis.rules import load_rules
from selfheal.domain import Diagnosis, Evidence, Fault, MetricCheck
from selfheal.domain.payloads import CollectEvidenceInput, DiagnoseInput
from tests.integration.demo_stack import free_port

RULES = load_rules(Path(__file__).resolve().parents[2] / "runbooks" / "rules.yaml")
PROBE_TIMEOUT_S = 0.3
HANG_S = 1.0

HEALTHY = {"status": "ok", "checks": {"errors": "ok", "cache": "ok"}}


def degraded(errors: str, cache: str, flags: dict[str, bool]) -> dict[str, Any]:
    return {
        "status": "degraded",
        "checks": {"errors": errors, "cache": cache},
        "error_rate": 0.6,
        "flags": flags,
    }


@dataclass
class TargetPlay:
    """What the stand-in target answers; tests set it, the server thread reads it."""

    health: dict[str, Any] = field(default_factory=lambda: dict(HEALTHY))
    status: int = 200
    hang: bool = False
    error_ratio: float = 0.0

    def set(self, status: int, health: dict[str, Any], error_ratio: float) -> None:
        self.status, self.health, self.error_ratio = status, health, error_ratio


@pytest.fixture(scope="module")
def play() -> TargetPlay:
    return TargetPlay()


@pytest.fixture(scope="module")
def server(play: TargetPlay) -> Iterator[ServerHandle]:
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        if play.hang:
            await asyncio.sleep(HANG_S)
        return JSONResponse(status_code=play.status, content=play.health)

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(
            "# TYPE demo_error_ratio gauge\n"
            f"demo_error_ratio {play.error_ratio}\n"
            "# TYPE demo_http_requests_total counter\n"
            'demo_http_requests_total{code="200",path="/"} 40\n'
            'demo_http_requests_total{code="500",path="/"} 7\n'
            'demo_http_requests_total{code="500",path="/pay"} 3\n'
        )

    handle = serve_in_thread(app)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(autouse=True)
def reset(play: TargetPlay) -> None:
    play.set(200, dict(HEALTHY), 0.0)
    play.hang = False


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def activities(http: httpx.AsyncClient) -> DiagnosisActivities:
    return DiagnosisActivities(
        RULES, EvidenceProviders([ProbeProvider(http, timeout_s=PROBE_TIMEOUT_S)])
    )


def demo_fault(base_url: str, metric: str = "demo_error_ratio", **fields: Any) -> Fault:
    return Fault(
        service="demo",
        type="health_check_failed",
        target="demo-target",
        health_url=f"{base_url}/healthz",
        metric=MetricCheck(url=f"{base_url}/metrics", name=metric, max=0.05),
        **fields,
    )


async def observe(activities: DiagnosisActivities, fault: Fault) -> tuple[Evidence, Diagnosis]:
    env = ActivityEnvironment()
    evidence = await env.run(activities.collect_evidence, CollectEvidenceInput(fault=fault))
    diagnosis = await env.run(
        activities.diagnose_fault, DiagnoseInput(fault=fault, evidence=evidence)
    )
    return evidence, diagnosis


async def test_error_burst_with_the_flag_on_is_a_bad_feature_flag(
    activities: DiagnosisActivities, server: ServerHandle, play: TargetPlay
) -> None:
    play.set(503, degraded("failing", "ok", {"new_checkout": True}), 0.6)
    evidence, diagnosis = await observe(activities, demo_fault(server.url))

    assert evidence.probe_ok is False
    assert evidence.probe_status == 503
    assert evidence.probe_error == "http_error"
    assert evidence.metric_value == 0.6
    assert evidence.facts["body.checks.errors"] == "failing"
    assert evidence.facts["body.flags.new_checkout"] is True
    assert evidence.facts["metric_breached"] is True
    assert evidence.facts["fault.target"] == "demo-target"

    assert diagnosis.root_cause == "bad_feature_flag"
    assert diagnosis.rule == "bad-feature-flag"
    assert 0.75 <= diagnosis.confidence <= 0.9
    assert diagnosis.evidence_used == {
        "body.checks.errors": "failing",
        "body.flags.new_checkout": True,
    }
    assert [h.root_cause for h in diagnosis.hypotheses] == ["bad_feature_flag"]


async def test_errors_without_a_flag_ask_a_human(
    activities: DiagnosisActivities, server: ServerHandle, play: TargetPlay
) -> None:
    play.set(503, degraded("failing", "ok", {}), 0.6)
    _, diagnosis = await observe(activities, demo_fault(server.url))
    # only generic explanations hold: they compete, and none is sure enough to act alone
    assert [h.root_cause for h in diagnosis.hypotheses] == ["high_error_rate", "service_unhealthy"]
    assert diagnosis.root_cause == "high_error_rate"
    assert diagnosis.confidence < 0.5
    assert diagnosis.default_plan == []


async def test_poisoned_cache(
    activities: DiagnosisActivities, server: ServerHandle, play: TargetPlay
) -> None:
    play.set(503, degraded("ok", "poisoned", {}), 0.0)
    evidence, diagnosis = await observe(activities, demo_fault(server.url))
    assert evidence.facts["metric_breached"] is False
    assert diagnosis.root_cause == "cache_poisoned"
    assert diagnosis.confidence == pytest.approx(0.8)
    assert diagnosis.evidence_used["body.checks.cache"] == "poisoned"


async def test_refused_port_is_a_crashed_process(activities: DiagnosisActivities) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    evidence, diagnosis = await observe(activities, demo_fault(down))
    assert evidence.probe_error == "connection_refused"
    assert evidence.metric_value is None
    assert "metric_error" in evidence.facts
    assert diagnosis.root_cause == "process_crashed"
    assert diagnosis.confidence == pytest.approx(0.9)
    assert [s.action for s in diagnosis.default_plan] == ["process.restart"]
    assert diagnosis.default_plan[0].params == {"process": "${fault.target}"}


async def test_probe_past_its_timeout_is_a_hung_process(
    activities: DiagnosisActivities, server: ServerHandle, play: TargetPlay
) -> None:
    play.hang = True
    evidence, diagnosis = await observe(activities, demo_fault(server.url))
    assert evidence.probe_error == "timeout"
    assert evidence.probe_latency_ms is not None
    assert PROBE_TIMEOUT_S * 1000 * 0.9 <= evidence.probe_latency_ms < HANG_S * 1000
    assert diagnosis.root_cause == "process_hung"
    assert diagnosis.confidence == pytest.approx(0.85)


async def test_healthy_target_matches_no_rule(
    activities: DiagnosisActivities, server: ServerHandle
) -> None:
    evidence, diagnosis = await observe(activities, demo_fault(server.url))
    assert evidence.probe_ok is True
    assert evidence.probe_status == 200
    assert diagnosis.root_cause == "unknown"
    assert diagnosis.rule == "none"
    assert diagnosis.confidence == 0.0
    assert diagnosis.evidence_used["probe_ok"] is True


async def test_labelled_metric_selector_sums_matching_samples(
    activities: DiagnosisActivities, server: ServerHandle
) -> None:
    fault = demo_fault(server.url, metric='demo_http_requests_total{code="500"}')
    evidence, _ = await observe(activities, fault)
    assert evidence.metric_value == 10.0
    fault = demo_fault(server.url, metric='demo_http_requests_total{code="500", path="/pay"}')
    evidence, _ = await observe(activities, fault)
    assert evidence.metric_value == 3.0


async def test_unreadable_metric_is_a_fact_not_a_failure(
    activities: DiagnosisActivities, server: ServerHandle
) -> None:
    evidence, _ = await observe(activities, demo_fault(server.url, metric="absent_metric"))
    assert evidence.metric_value is None
    assert "no sample matches absent_metric" in evidence.facts["metric_error"]
    evidence, _ = await observe(activities, demo_fault(server.url, metric="bad{selector"))
    assert "invalid metric selector" in evidence.facts["metric_error"]


async def test_fault_values_and_labels_become_facts(activities: DiagnosisActivities) -> None:
    fault = Fault(
        service="shop",
        type="alert",
        labels={"alertname": "KubePodCrashLooping"},
        values={"restarts": 7.0},
    )
    evidence, diagnosis = await observe(activities, fault)
    assert evidence.probe_url is None
    assert evidence.facts == {
        "fault.service": "shop",
        "fault.type": "alert",
        "fault.severity": "warning",
        "fault.source": "manual",
        "label.alertname": "KubePodCrashLooping",
        "value.restarts": 7.0,
    }
    assert diagnosis.root_cause == "pod_crash_looping"
