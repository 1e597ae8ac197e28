"""The health watcher of ``selfheal dev``: polls a target's health URL (and metric) and reports
its outages through the door, like every other source of faults. What to do about each check is
the pure ``selfheal.detection.health.decide``."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

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
        """Poll every ``interval_s`` until ``stop`` is set (or the task is cancelled)."""
        stop = stop or asyncio.Event()
        async with httpx.AsyncClient() as http:
            while not stop.is_set():
                await self.observe(await self.check(http))
                try:
                    await asyncio.wait_for(stop.wait(), self.interval_s)
                except TimeoutError:
                    pass
