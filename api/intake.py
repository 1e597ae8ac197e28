"""The intake's state, one per app: the door, the detectors, the error-trace store, the kill
switch and the metrics; ``deliver`` hands faults to the door and counts what became of them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import BaseModel, Field

from selfheal.api.traces import ErrorTraceStore
from selfheal.core.settings import IntakeSettings
from selfheal.detection.metrics_router import MetricsRouter
from selfheal.detection.parsers import ErrorSpan, IntervalMeans, MetricPoint
from selfheal.domain import Fault, IntakeError
from selfheal.domain.kill_switch import KillSwitch
from selfheal.healings import Healings, Report

log = structlog.get_logger(__name__)


@dataclass
class IntakeDeps:
    door: Healings
    settings: IntakeSettings
    router: MetricsRouter | None = None
    # name -> a check that raises when its dependency is not reachable (Temporal's is built in)
    ready_checks: dict[str, Callable[[], Awaitable[None]]] = field(default_factory=dict)
    heartbeat_sweep_s: float = 1.0
    # the guardrails' database (the kill switch); None: /v1/guardrails* answer 503
    kill_switch: KillSwitch | None = None
    # Where OTLP metric points and error traces are kept for diagnosis (Postgres, so that every
    # worker sees them: ``models``); None: not kept.
    metric_sink: Callable[[list[MetricPoint]], Awaitable[None]] | None = None
    trace_sink: Callable[[list[ErrorSpan]], Awaitable[None]] | None = None


class Delivery(BaseModel):
    workflow_id: str
    started: bool = Field(description="False when the report joined a running healing")


class Refusal(BaseModel):
    fingerprint: str
    service: str
    reason: str


class SignalResult(BaseModel):
    faults: list[Delivery] = Field(default_factory=list)
    refused: list[Refusal] = Field(default_factory=list)


class IntakeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.received = Counter(
            "selfheal_intake_alerts_received", "reports received", ["endpoint"], registry=r
        )
        self.accepted = Counter(
            "selfheal_intake_alerts_accepted",
            "reports durably delivered to a healing (every report counts once)",
            ["endpoint"],
            registry=r,
        )
        self.deduped = Counter(
            "selfheal_intake_alerts_deduped",
            "reports folded into another report's Temporal call",
            ["endpoint"],
            registry=r,
        )
        self.faults = Counter(
            "selfheal_intake_faults",
            "faults by result: started, joined, refused",
            ["endpoint", "result"],
            registry=r,
        )
        self.resolved = Counter(
            "selfheal_intake_resolved", "resolved reports", ["endpoint"], registry=r
        )
        self.points = Counter(
            "selfheal_intake_metric_points", "OTLP metric points received", registry=r
        )
        self.spans = Counter(
            "selfheal_intake_spans", "OTLP spans received, by status", ["status"], registry=r
        )
        self.latency = Histogram(
            "selfheal_intake_start_latency_seconds",
            "from request received to its workflow durably started or signalled",
            ["endpoint"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )


class Intake:
    """The app's state: one per ``create_app``."""

    def __init__(self, deps: IntakeDeps) -> None:
        self.deps = deps
        self.door = deps.door
        self.traces = ErrorTraceStore(deps.settings.error_traces_max)
        self.means = IntervalMeans()
        self.metrics = IntakeMetrics()

    async def deliver(
        self,
        faults: list[Fault],
        endpoint: str,
        received_at: float,
        *,
        require_approval: bool = False,
    ) -> SignalResult:
        """Report every fault through the door; returns once all are durable. A fault the
        catalog refuses is listed under ``refused`` (the door refuses it before any Temporal
        call); the others go on."""
        result = SignalResult()
        self.metrics.received.labels(endpoint).inc(len(faults))
        outcomes = await asyncio.gather(
            *(self.door.report(f, require_approval=require_approval) for f in faults),
            return_exceptions=True,
        )
        failure: BaseException | None = None
        for fault, outcome in zip(faults, outcomes, strict=True):
            if isinstance(outcome, IntakeError):
                log.warning("fault refused", fingerprint=fault.fingerprint, reason=str(outcome))
                result.refused.append(
                    Refusal(
                        fingerprint=fault.fingerprint, service=fault.service, reason=str(outcome)
                    )
                )
                self.metrics.faults.labels(endpoint, "refused").inc()
            elif isinstance(outcome, BaseException):
                failure = failure or outcome
            else:
                self._count(outcome, endpoint, received_at)
                result.faults.append(
                    Delivery(workflow_id=outcome.workflow_id, started=outcome.started)
                )
        if failure is not None:
            raise failure
        return result

    def _count(self, report: Report, endpoint: str, received_at: float) -> None:
        self.metrics.accepted.labels(endpoint).inc()
        if report.coalesced:
            self.metrics.deduped.labels(endpoint).inc()
        self.metrics.faults.labels(endpoint, "started" if report.started else "joined").inc()
        self.metrics.latency.labels(endpoint).observe(time.monotonic() - received_at)

    async def resolve(self, fault: Fault, endpoint: str) -> None:
        self.metrics.resolved.labels(endpoint).inc()
        await self.door.resolved(fault, note=f"resolved by {fault.source}")

    async def sweep_heartbeats(self, endpoint: str = "heartbeats") -> SignalResult:
        router = self.deps.router
        if router is None:
            return SignalResult()
        faults = router.check_heartbeats()
        return await self.deliver(faults, endpoint, time.monotonic()) if faults else SignalResult()

    async def sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.deps.heartbeat_sweep_s)
            try:
                await self.sweep_heartbeats()
            except Exception:
                log.exception("heartbeat sweep failed; retrying")
