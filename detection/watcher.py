"""The health watcher: polls a target and turns a run of failed checks into a healing.

The decision is a pure function of the previous state and one check (``decide``), so that it
can be tested without a network; ``HealthWatcher`` does the probing and talks to Temporal.

A fault is reported once per outage: after ``failure_threshold`` consecutive failures. When the
target has passed ``recovery_threshold`` consecutive checks again, the healing is told that its
fault resolved (a healing that already ended simply ignores this).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum

import httpx
import structlog
from temporalio.client import Client
from temporalio.service import RPCError

from selfheal.core.probes import probe_health, read_metric
from selfheal.detection.intake import report_resolved, start_healing
from selfheal.domain import Fault, MetricCheck
from selfheal.workflows.contract import TASK_QUEUE

log = structlog.get_logger(__name__)

FAULT_TYPE = "health_check_failed"


@dataclass(frozen=True)
class Check:
    """One observation of the target."""

    ok: bool
    at: datetime
    detail: str = ""
    status: int | None = None
    metric_value: float | None = None


@dataclass(frozen=True)
class WatchState:
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    first_failure_at: datetime | None = None
    last_failure: Check | None = None
    reported: bool = False


class Action(StrEnum):
    NONE = "none"
    REPORT_FAULT = "report_fault"
    REPORT_RESOLVED = "report_resolved"


def decide(
    state: WatchState, check: Check, *, failure_threshold: int = 3, recovery_threshold: int = 1
) -> tuple[WatchState, Action]:
    """The next state and what to do about ``check``."""
    if not check.ok:
        failures = state.consecutive_failures + 1
        new = replace(
            state,
            consecutive_failures=failures,
            consecutive_successes=0,
            first_failure_at=state.first_failure_at or check.at,
            last_failure=check,
        )
        if not state.reported and failures >= failure_threshold:
            return replace(new, reported=True), Action.REPORT_FAULT
        return new, Action.NONE
    successes = state.consecutive_successes + 1
    if state.reported:
        if successes >= recovery_threshold:
            return WatchState(), Action.REPORT_RESOLVED
        return replace(state, consecutive_successes=successes), Action.NONE
    # A blip shorter than the threshold is forgotten on the first good check.
    return WatchState(consecutive_successes=successes), Action.NONE


@dataclass(frozen=True)
class WatchTarget:
    """What to watch and how to name its fault."""

    service: str
    health_url: str
    target: str | None = None
    metric: MetricCheck | None = None
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class Detection:
    """A reported outage, for the timeline: when it began, was declared, and ended."""

    fault: Fault
    workflow_id: str
    first_failure_at: datetime
    detected_at: datetime
    resolved_at: datetime | None = None


def build_fault(target: WatchTarget, state: WatchState, now: datetime) -> Fault:
    last = state.last_failure
    values: dict[str, float] = {"consecutive_failures": float(state.consecutive_failures)}
    if last is not None and last.status is not None:
        values["http_status"] = float(last.status)
    if last is not None and last.metric_value is not None:
        values["metric_value"] = last.metric_value
    detail = last.detail if last is not None else "failing"
    return Fault(
        service=target.service,
        type=FAULT_TYPE,
        target=target.target,
        severity="critical",
        summary=(
            f"{target.health_url}: {state.consecutive_failures} consecutive failed checks "
            f"({detail})"
        ),
        labels=dict(target.labels),
        values=values,
        health_url=target.health_url,
        metric=target.metric,
        source="watcher",
        detected_at=now,
    )


class HealthWatcher:
    def __init__(
        self,
        client: Client,
        target: WatchTarget,
        *,
        interval_s: float = 5.0,
        failure_threshold: int = 3,
        recovery_threshold: int = 1,
        timeout_s: float = 3.0,
        task_queue: str = TASK_QUEUE,
    ) -> None:
        if failure_threshold < 1 or recovery_threshold < 1:
            raise ValueError("failure_threshold and recovery_threshold must be at least 1")
        self.client = client
        self.target = target
        self.interval_s = interval_s
        self.failure_threshold = failure_threshold
        self.recovery_threshold = recovery_threshold
        self.timeout_s = timeout_s
        self.task_queue = task_queue
        self.state = WatchState()
        self.detections: list[Detection] = []

    @property
    def current(self) -> Detection | None:
        """The outage being healed, if any."""
        if self.detections and self.detections[-1].resolved_at is None:
            return self.detections[-1]
        return None

    async def check(self, http: httpx.AsyncClient) -> Check:
        # A check is known when it concludes: a probe that times out after 3 s tells at 3 s.
        probe = await probe_health(http, self.target.health_url, self.timeout_s)
        now = datetime.now(UTC)
        if not probe.ok:
            return Check(ok=False, at=now, detail=probe.detail, status=probe.status)
        metric = self.target.metric
        if metric is None:
            return Check(ok=True, at=now, detail=probe.detail, status=probe.status)
        reading = await read_metric(http, metric, self.timeout_s)
        now = datetime.now(UTC)
        if reading.value is None:
            return Check(ok=False, at=now, detail=reading.error or "metric unreadable")
        ok = reading.value <= metric.max
        detail = f"{metric.name} = {reading.value:g} ({'<=' if ok else '>'} {metric.max:g})"
        return Check(ok=ok, at=now, detail=detail, status=probe.status, metric_value=reading.value)

    async def observe(self, check: Check) -> Action:
        """Apply one check: update the state, and start or tell the healing as decided."""
        new_state, action = decide(
            self.state,
            check,
            failure_threshold=self.failure_threshold,
            recovery_threshold=self.recovery_threshold,
        )
        if action is Action.REPORT_FAULT:
            fault = build_fault(self.target, new_state, check.at)
            try:
                started = await start_healing(self.client, fault, task_queue=self.task_queue)
            except RPCError as exc:
                # Not reported: the next failed check tries again.
                log.warning("starting the healing failed", error=str(exc), service=fault.service)
                self.state = replace(new_state, reported=False)
                return Action.NONE
            assert new_state.first_failure_at is not None
            self.detections.append(
                Detection(fault, started.workflow_id, new_state.first_failure_at, check.at)
            )
            log.info("fault reported", workflow_id=started.workflow_id, summary=fault.summary)
        elif action is Action.REPORT_RESOLVED:
            current = self.current
            if current is not None:
                current.resolved_at = check.at
                try:
                    await report_resolved(self.client, current.fault, note="health check passes")
                except RPCError as exc:
                    # Most often the healing already ended, which is what we hoped for.
                    log.info("resolution not delivered", error=str(exc))
        self.state = new_state
        return action

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Poll every ``interval_s`` until ``stop`` is set (or the task is cancelled)."""
        stop = stop or asyncio.Event()
        async with httpx.AsyncClient() as http:
            while not stop.is_set():
                await self.observe(await self.check(http))
                try:
                    await asyncio.wait_for(stop.wait(), self.interval_s)
                except TimeoutError:
                    pass
