"""The probe provider: the target's health endpoint and its metric, as the watcher sees them.

What detected the fault travels with it: a fault the watcher raised carries the error of its
failed probes (label ``probe_error``) and a detector's fault its values. A target the watcher saw
time out is not probed again (a hung target would cost the healing a whole probe timeout), and
``detected.probe_error`` says what was seen.
"""

from __future__ import annotations

from typing import Any

import httpx

from selfheal.activities.evidence.base import EvidenceRequest, Gathered
from selfheal.core.probes import MetricReading, ProbeResult, http_client, probe_health, read_metric
from selfheal.diagnosis.rules import Facts
from selfheal.domain import Finding, MetricCheck

DETECTED_PROBE_ERROR = "probe_error"
"""the label a watcher's fault carries: the error of its last failed probe"""
_FINDINGS = {
    "connection_refused": "probe_refused",
    "timeout": "probe_timeout",
    "http_error": "probe_http_error",
}


def flatten(value: dict[str, Any], prefix: str) -> Facts:
    """``{"checks": {"cache": "ok"}}`` → ``{"<prefix>.checks.cache": "ok"}``; lists stay whole."""
    facts: Facts = {}
    for key, item in value.items():
        name = f"{prefix}.{key}"
        if isinstance(item, dict):
            facts.update(flatten(item, name))
        elif item is not None:
            facts[name] = item
    return facts


def probe_facts(probe: ProbeResult) -> Facts:
    facts: Facts = {
        "probe_url": probe.url,
        "probe_ok": probe.ok,
        "probe_latency_ms": probe.latency_ms,
        "probe_detail": probe.detail,
    }
    if probe.status is not None:
        facts["probe_status"] = probe.status
    if probe.error is not None:
        facts["probe_error"] = probe.error
    facts.update(flatten(probe.body, "body"))
    return facts


def metric_facts(check: MetricCheck, reading: MetricReading) -> Facts:
    facts: Facts = {"metric_name": check.name, "metric_max": check.max}
    if reading.value is None:
        facts["metric_error"] = reading.error or "unreadable"
    else:
        facts["metric_value"] = reading.value
        facts["metric_breached"] = reading.value > check.max
    return facts


class ProbeProvider:
    name = "probe"

    def __init__(self, http: httpx.AsyncClient | None = None, timeout_s: float = 3.0) -> None:
        self._http = http
        self._timeout_s = timeout_s

    async def gather(self, request: EvidenceRequest) -> Gathered:
        fault = request.fault
        gathered = Gathered()
        facts = gathered.facts
        detected = fault.labels.get(DETECTED_PROBE_ERROR) if fault.source == "watcher" else None
        if detected is not None:
            facts["detected.probe_error"] = detected
        async with http_client(self._http) as http:
            if fault.health_url and detected == "timeout":
                # Seen hanging by every one of the watcher's last probes: do not wait again.
                facts.update({"probe_url": fault.health_url, "probe_ok": False})
                facts["probe_error"] = "timeout"
                facts["probe_detail"] = "timed out at detection; not probed again"
            elif fault.health_url:
                facts.update(
                    probe_facts(await probe_health(http, fault.health_url, self._timeout_s))
                )
            if fault.metric is not None:
                reading = await read_metric(http, fault.metric, self._timeout_s)
                facts.update(metric_facts(fault.metric, reading))
        error = facts.get("probe_error")
        if isinstance(error, str) and error in _FINDINGS:
            gathered.findings.append(
                Finding(
                    source=self.name,
                    kind=_FINDINGS[error],
                    component=fault.service,
                    strength=0.8 if error != "http_error" else 0.4,
                    detail=str(facts.get("probe_detail", "")),
                )
            )
        return gathered
