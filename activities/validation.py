"""Recovery validation: is the target healthy again, and does it stay healthy?

A check passes when the health probe answers 2xx (if the fault has a ``health_url``) and the
metric reads at most its ``max`` (if the fault has a ``metric``). Checks run every
``interval_s`` until ``window_s`` has passed — at least one check, the last one at or after the
end of the window. The first failing check ends validation with ``healthy=False``.

Grace period: a restarted target needs a moment to listen again, and a service that judges its
health over a window of requests needs that window to drain. With ``grace_s`` (the policy's
``validation_grace_s``) the target must pass a check within ``grace_s``, then stay healthy for
``window_s`` counted from that first passing check. Without it (histories from before), a
failing check that starts within the first ``min(interval_s, 5s)`` of the window is retried.
Failing checks are retried every ``min(interval_s, 0.5s)`` and still counted in ``failures``.

A fault with neither ``health_url`` nor ``metric`` cannot be validated: the result is
``healthy=False`` with a detail saying so, because claiming a recovery nobody observed would
teach the knowledge base a success that may not be one.

Time: the activity runs about ``window_s`` plus the grace period plus one check (up to two
probe timeouts); a check heartbeats, so the heartbeat timeout must exceed
``interval_s + 2 * probe_timeout_s``.
"""

from __future__ import annotations

import asyncio
import json

import httpx
from temporalio import activity

from selfheal.core.probes import http_client, probe_health, read_metric
from selfheal.domain import Fault, ValidationResult
from selfheal.domain.payloads import ValidateRecoveryInput
from selfheal.workflows.contract import VALIDATE_RECOVERY, implements

GRACE_MAX_S = 5.0
GRACE_RETRY_S = 0.5
_BODY_EXCERPT = 200


class ValidationActivities:
    def __init__(self, http: httpx.AsyncClient | None = None, probe_timeout_s: float = 3.0) -> None:
        self._http = http
        self._timeout_s = probe_timeout_s

    @implements(VALIDATE_RECOVERY)
    async def validate_recovery(self, input: ValidateRecoveryInput) -> ValidationResult:
        """An unhealthy target is an answer (``healthy=False``), not an error."""
        fault = input.fault
        window_s = max(input.window_s, 0.0)
        if not fault.health_url and fault.metric is None:
            return ValidationResult.unchecked(
                window_s, "cannot validate: the fault has neither a health_url nor a metric"
            )
        loop = asyncio.get_running_loop()
        start = loop.time()
        # With a grace period given, the window counts from the first passing check: the target
        # recovers within grace_s, then stays healthy for window_s.
        recover_first = input.grace_s is not None
        grace_s = input.grace_s if input.grace_s is not None else min(input.interval_s, GRACE_MAX_S)
        retry_s = min(input.interval_s, GRACE_RETRY_S)
        checks = failures = 0
        healthy_since: float | None = None if recover_first else start
        async with http_client(self._http) as http:
            while True:
                check_started = loop.time() - start
                problem = await self._check(http, fault)
                checks += 1
                failures += problem is not None
                activity.heartbeat({"checks": checks, "failures": failures, "last": problem})
                if problem is not None:
                    recovering = healthy_since is None or not recover_first
                    if recovering and check_started < grace_s:
                        await asyncio.sleep(retry_s)
                        continue
                    where = (
                        f"not healthy within the {grace_s:g}s grace period"
                        if healthy_since is None
                        else f"{check_started:.1f}s into the window"
                    )
                    return ValidationResult(
                        healthy=False,
                        checks=checks,
                        failures=failures,
                        window_s=window_s,
                        detail=f"{problem} (check {checks}, {where})",
                    )
                if healthy_since is None:
                    healthy_since = start + check_started
                remaining = window_s - (loop.time() - healthy_since)
                if remaining <= 0:
                    break
                await asyncio.sleep(min(input.interval_s, remaining))
        grace_note = f", {failures} failed within the grace period" if failures else ""
        return ValidationResult(
            healthy=True,
            checks=checks,
            failures=failures,
            window_s=window_s,
            detail=f"healthy for {window_s:g}s ({checks} checks{grace_note})",
        )

    async def _check(self, http: httpx.AsyncClient, fault: Fault) -> str | None:
        """None when healthy, else what failed."""
        if fault.health_url:
            probe = await probe_health(http, fault.health_url, self._timeout_s)
            if not probe.ok:
                body = json.dumps(probe.body)[:_BODY_EXCERPT] if probe.body else ""
                return f"health probe {probe.url}: {probe.detail}" + (f" {body}" if body else "")
        if fault.metric is not None:
            reading = await read_metric(http, fault.metric, self._timeout_s)
            if reading.value is None:
                return f"metric {fault.metric.name}: {reading.error}"
            if reading.value > fault.metric.max:
                return f"metric {fault.metric.name} = {reading.value:g} > max {fault.metric.max:g}"
        return None
