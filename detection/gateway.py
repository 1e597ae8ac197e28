"""From Faults to their healings, for the HTTP intake: resolve each through the service catalog,
fold concurrent reports of one fault into one Temporal call (``Coalescer``), start or join, and
count every report. A delivery returns only once Temporal has durably started or signalled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import BaseModel, Field
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from selfheal.core.settings import IntakeSettings
from selfheal.detection.coalesce import Coalescer
from selfheal.detection.correlation import route_fault
from selfheal.detection.intake import report_resolved, start_healing
from selfheal.detection.metrics_router import MetricsRouter
from selfheal.detection.parsers import ErrorSpan, IntervalMeans
from selfheal.detection.services import resolve_fault
from selfheal.detection.traces import ErrorTraceStore
from selfheal.domain import Fault, IntakeError
from selfheal.domain.kill_switch import KillSwitch
from selfheal.domain.services import ServiceCatalog

log = logging.getLogger(__name__)

# The Redis key prefix of a cache, which a plan may delete (``selfheal dev`` sets it on its
# watcher's faults). Only selfheal's in-process detectors may set these labels: they are dropped
# from every report that comes in over HTTP, so that no sender chooses what a plan deletes.
CACHE_PREFIX_LABEL = "cache_prefix"
INTERNAL_LABELS = frozenset({CACHE_PREFIX_LABEL})

_TEMPORAL_DOWN = {
    RPCStatusCode.UNAVAILABLE,
    RPCStatusCode.DEADLINE_EXCEEDED,
    RPCStatusCode.RESOURCE_EXHAUSTED,
}


@dataclass
class IntakeDeps:
    client: Client
    settings: IntakeSettings
    task_queue: str
    router: MetricsRouter | None = None
    catalog: ServiceCatalog | None = None  # None: faults are taken as they come, uncorrelated
    # name -> a check that raises when its dependency is not reachable (Temporal's is built in)
    ready_checks: dict[str, Callable[[], Awaitable[None]]] = field(default_factory=dict)
    rpc_timeout_s: float = 10.0
    heartbeat_sweep_s: float = 1.0
    # the guardrails' database (the kill switch); None: /v1/guardrails* answer 503
    kill_switch: KillSwitch | None = None


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


class TemporalUnavailable(Exception):
    pass


def temporal_down(exc: BaseException) -> bool:
    if isinstance(exc, RPCError):
        return exc.status in _TEMPORAL_DOWN
    # a lazily connected client reports an unreachable server this way on first use
    return isinstance(exc, RuntimeError) and "client connect" in str(exc)


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
        self.traces = ErrorTraceStore(deps.settings.error_traces_max)
        self.means = IntervalMeans()
        self.metrics = IntakeMetrics()
        self._coalescer: Coalescer[Delivery] = Coalescer(self._route)

    @property
    def client(self) -> Client:
        return self.deps.client

    def recent_errors(self, service: str | None, limit: int = 50) -> list[ErrorSpan]:
        """The most recent error spans of ``service`` (None: any), newest first."""
        return self.traces.recent_errors(service, limit)

    # -- Temporal

    async def _route(self, fault: Fault, count: int) -> Delivery:
        """The one place where faults meet Temporal: correlated when a catalog is loaded; the
        ``count`` folded reports travel in the one signal-with-start."""
        rpc_timeout = timedelta(seconds=self.deps.rpc_timeout_s)
        catalog = self.deps.catalog
        if catalog is None:
            started = await start_healing(
                self.client,
                fault,
                task_queue=self.deps.task_queue,
                dry_run=fault.dry_run,
                count=count,
                rpc_timeout=rpc_timeout,
            )
            return Delivery(workflow_id=started.workflow_id, started=started.started)
        routed = await route_fault(
            self.client,
            fault,
            catalog,
            task_queue=self.deps.task_queue,
            dry_run=fault.dry_run,
            count=count,
            rpc_timeout=rpc_timeout,
        )
        return Delivery(workflow_id=routed.workflow_id, started=routed.kind == "started")

    def _resolved(self, fault: Fault) -> Fault:
        """The fault's target and fingerprint from the catalog, without internal labels;
        IntakeError when the catalog refuses it."""
        if INTERNAL_LABELS & fault.labels.keys():
            labels = {k: v for k, v in fault.labels.items() if k not in INTERNAL_LABELS}
            fault = fault.model_copy(update={"labels": labels})
        return fault if self.deps.catalog is None else resolve_fault(fault, self.deps.catalog)

    async def deliver(self, faults: list[Fault], endpoint: str, received_at: float) -> SignalResult:
        """Start or join the healing of every fault; returns once all are durable."""
        result = SignalResult()
        self.metrics.received.labels(endpoint).inc(len(faults))
        accepted: list[Fault] = []
        for fault in faults:
            try:
                accepted.append(self._resolved(fault))
            except IntakeError as exc:
                log.warning("fault %s refused: %s", fault.fingerprint, exc)
                result.refused.append(
                    Refusal(fingerprint=fault.fingerprint, service=fault.service, reason=str(exc))
                )
                self.metrics.faults.labels(endpoint, "refused").inc()
        outcomes = await asyncio.gather(
            *(self._coalescer.fire(f) for f in accepted), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                if temporal_down(outcome):
                    raise TemporalUnavailable(str(outcome)) from outcome
                raise outcome
            self.metrics.accepted.labels(endpoint).inc()
            if outcome.coalesced:
                self.metrics.deduped.labels(endpoint).inc()
            started = outcome.result.started and not outcome.coalesced
            self.metrics.faults.labels(endpoint, "started" if started else "joined").inc()
            self.metrics.latency.labels(endpoint).observe(time.monotonic() - received_at)
            result.faults.append(Delivery(workflow_id=outcome.result.workflow_id, started=started))
        return result

    async def resolve(self, fault: Fault, endpoint: str) -> None:
        self.metrics.resolved.labels(endpoint).inc()
        try:
            fault = self._resolved(fault)
        except IntakeError:
            return  # a fault the catalog refuses has no healing to tell
        try:
            await report_resolved(self.client, fault, note=f"resolved by {fault.source}")
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:  # no such (running) healing: nothing to do
                raise

    async def sweep_heartbeats(self, endpoint: str = "heartbeats") -> SignalResult:
        router = self.deps.router
        if router is None:
            return SignalResult()
        faults = router.check_heartbeats()
        return await self.deliver(faults, endpoint, time.monotonic()) if faults else SignalResult()
