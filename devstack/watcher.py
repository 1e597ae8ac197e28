"""The health watcher of ``selfheal dev``: polls a target's health URL (and metric) and reports
its outages through the door, like every other source of faults. What to do about each check is
the pure ``selfheal.detection.health.decide``."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable
from dataclasses import replace
from datetime import UTC, datetime
from typing import TypeVar

import httpx
import structlog

from selfheal.core.probes import probe_health, read_metric
from selfheal.detection.health import (
    Action,
    Check,
    Detection,
    WatchState,
    WatchTarget,
    build_fault,
    decide,
)
from selfheal.domain import IntakeError
from selfheal.domain.errors import TemporalRefused, TemporalUnavailable
from selfheal.healings import Healings

log = structlog.get_logger(__name__)

T = TypeVar("T")


class HealthWatcher:
    """Polls ``target`` and reports its outages through the door."""

    def __init__(
        self,
        door: Healings,
        target: WatchTarget,
        *,
        interval_s: float = 5.0,
        failure_threshold: int = 3,
        recovery_threshold: int = 1,
        timeout_s: float = 3.0,
        repeat_after_s: float | None = 30.0,
    ) -> None:
        if failure_threshold < 1 or recovery_threshold < 1:
            raise ValueError("failure_threshold and recovery_threshold must be at least 1")
        self.door = door
        self.target = target
        self.interval_s = interval_s
        self.failure_threshold = failure_threshold
        self.recovery_threshold = recovery_threshold
        self.timeout_s = timeout_s
        self.repeat_after_s = repeat_after_s
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
            return Check(
                ok=False, at=now, detail=probe.detail, status=probe.status, error=probe.error
            )
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
            repeat_after_s=self.repeat_after_s,
        )
        if action is Action.REPORT_FAULT:
            fault = build_fault(self.target, new_state, check.at)
            try:
                report = await self.door.report(fault)
            except (TemporalUnavailable, TemporalRefused) as exc:
                # Not reported: the next failed check tries again.
                log.warning("starting the healing failed", error=str(exc), service=fault.service)
                self.state = replace(new_state, reported=False)
                return Action.NONE
            except IntakeError as exc:
                # The catalog refuses this target: say so once per outage, never heal it.
                log.error("fault refused by the service catalog", error=str(exc))
                self.state = new_state
                return Action.NONE
            assert new_state.first_failure_at is not None
            if self.current is not None and report.kind != "started":
                # A repeat of a persisting outage, counted on the healing that answers for it.
                log.info("outage persists", workflow_id=report.workflow_id, kind=report.kind)
            else:
                self.detections.append(
                    Detection(
                        report.fault, report.workflow_id, new_state.first_failure_at, check.at
                    )
                )
                log.info("outage detected", workflow_id=report.workflow_id, summary=fault.summary)
        elif action is Action.REPORT_RESOLVED:
            current = self.current
            if current is not None:
                current.resolved_at = check.at
                try:
                    told = await self.door.resolved(current.fault, note="health check passes")
                except (TemporalUnavailable, TemporalRefused) as exc:
                    log.info("resolution not delivered", error=str(exc))
                else:
                    if not told:  # most often the healing already ended, as we hoped
                        log.info("resolution not delivered: no running healing")
        self.state = new_state
        return action

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Start a check every ``interval_s`` until ``stop`` is set (or the task is cancelled),
        and observe each as it concludes, in the order they started. Checks overlap: a target
        that hangs is known to after one probe timeout plus ``failure_threshold - 1``
        intervals, not after ``failure_threshold`` timeouts back to back."""
        stop = stop or asyncio.Event()
        in_flight = max(1, math.ceil(self.timeout_s / self.interval_s) + 1)
        started: asyncio.Queue[asyncio.Task[Check]] = asyncio.Queue(maxsize=in_flight)
        async with httpx.AsyncClient() as http:

            async def start_checks() -> None:
                while not stop.is_set():
                    await started.put(asyncio.create_task(self.check(http)))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.interval_s)

            starter = asyncio.create_task(start_checks())
            try:
                while not stop.is_set():
                    check = await _until_stopped(started.get(), stop)
                    if check is None:
                        break
                    concluded = await _until_stopped(check, stop)
                    if concluded is None:
                        break
                    await self.observe(concluded)
            finally:
                starter.cancel()
                while not started.empty():
                    started.get_nowait().cancel()


async def _until_stopped(awaitable: Awaitable[T], stop: asyncio.Event) -> T | None:
    """``awaitable``'s result, or None once ``stop`` is set first."""
    task = asyncio.ensure_future(awaitable)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if not task.done():
        task.cancel()
        return None
    return task.result()
