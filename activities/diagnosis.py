"""Evidence collection and rule-based diagnosis.

``collect_evidence`` looks at the target (health probe, metric) and flattens what it saw, with
the fault's own fields, into ``Evidence.facts``; ``diagnose_fault`` matches the rules of
``runbooks/rules.yaml`` against those facts. Fact names:

    probe_url, probe_ok, probe_status, probe_error, probe_latency_ms, probe_detail
    body.<dotted path>        the health probe's JSON body, e.g. body.checks.cache
    metric_name, metric_max, metric_value, metric_breached (value > max), metric_error
    value.<name>              the fault's own values
    label.<key>               the fault's labels
    fault.service, fault.type, fault.target, fault.severity, fault.source

A fact that was not observed is absent, never None.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from selfheal.activities.rules import Facts, RuleSet
from selfheal.core.probes import MetricReading, ProbeResult, http_client, probe_health, read_metric
from selfheal.domain import Diagnosis, Evidence, Fault, MetricCheck
from selfheal.domain.payloads import CollectEvidenceInput, DiagnoseInput
from selfheal.workflows.contract import COLLECT_EVIDENCE, DIAGNOSE_FAULT, implements


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


def fault_facts(fault: Fault) -> Facts:
    facts: Facts = {
        "fault.service": fault.service,
        "fault.type": fault.type,
        "fault.severity": fault.severity,
        "fault.source": fault.source,
    }
    if fault.target is not None:
        facts["fault.target"] = fault.target
    facts.update({f"value.{name}": v for name, v in fault.values.items()})
    facts.update({f"label.{key}": v for key, v in fault.labels.items()})
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


class DiagnosisActivities:
    def __init__(
        self,
        rules: RuleSet,
        http: httpx.AsyncClient | None = None,
        probe_timeout_s: float = 3.0,
    ) -> None:
        self._rules = rules
        self._http = http
        self._timeout_s = probe_timeout_s

    @implements(COLLECT_EVIDENCE)
    async def collect_evidence(self, input: CollectEvidenceInput) -> Evidence:
        """Probe the target; never fails because the target is down (that is the evidence)."""
        fault = input.fault
        facts = fault_facts(fault)
        probe: ProbeResult | None = None
        reading: MetricReading | None = None
        async with http_client(self._http) as http:
            if fault.health_url:
                probe = await probe_health(http, fault.health_url, self._timeout_s)
                facts.update(probe_facts(probe))
            if fault.metric is not None:
                reading = await read_metric(http, fault.metric, self._timeout_s)
                facts.update(metric_facts(fault.metric, reading))
        return Evidence(
            collected_at=datetime.now(UTC),
            probe_url=probe.url if probe else None,
            probe_ok=probe.ok if probe else None,
            probe_status=probe.status if probe else None,
            probe_error=probe.error if probe else None,
            probe_latency_ms=probe.latency_ms if probe else None,
            probe_body=probe.body if probe else {},
            metric_value=reading.value if reading else None,
            facts=facts,
        )

    @implements(DIAGNOSE_FAULT)
    async def diagnose_fault(self, input: DiagnoseInput) -> Diagnosis:
        # The fault's own facts are recomputed so that hand-built evidence diagnoses the same.
        facts = fault_facts(input.fault) | input.evidence.facts
        return self._rules.diagnose(facts)
