"""Evidence collection and diagnosis: the two activities of a healing's first phase.

``collect_evidence`` asks the service's evidence providers (``activities/evidence``) at once,
each bounded and soft, and returns their facts, findings and what was missing.
``diagnose_fault`` evaluates the rules (a decision tree over the facts, re-read when the file
changes), ranks what they propose with the findings and each rule's learned record
(``diagnosis/hypotheses.py``), and returns the top hypothesis as the diagnosis, with all of them.

Fact names: docs/diagnosis.md. The fault's own facts:

    value.<name>              the fault's own values
    label.<key>               the fault's labels
    fault.service, fault.type, fault.target, fault.severity, fault.source
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import structlog
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity

from selfheal.activities.evidence.base import EvidenceProviders, EvidenceRequest
from selfheal.core.catalog import PROVIDER_NAMES, ServiceCatalog, resolve_fault
from selfheal.core.settings import EvidenceSettings
from selfheal.core.yaml_source import ReloadingFile
from selfheal.diagnosis.hypotheses import RuleRecord, rank
from selfheal.diagnosis.rules import Facts, RuleSet, diagnosis_of, load_rules, unknown_diagnosis
from selfheal.domain import Diagnosis, Evidence, Fault, IntakeError
from selfheal.domain.payloads import CollectEvidenceInput, DiagnoseInput
from selfheal.models.diagnosis_history import confirmed_counts
from selfheal.workflows.contract import COLLECT_EVIDENCE, DIAGNOSE_FAULT, implements

log = structlog.get_logger(__name__)

RuleHistory = Callable[[Sequence[str]], Awaitable[dict[str, RuleRecord]]]
"""rule names → each one's record of confirmed healings (``models`` reads it from Postgres)"""


def learned_records(session_factory: sessionmaker[Session], *, limit: int = 500) -> RuleHistory:
    """Each rule's record over the newest ``limit`` judged healings, read from Postgres."""

    async def records(rules: Sequence[str]) -> dict[str, RuleRecord]:
        counts = await asyncio.to_thread(confirmed_counts, session_factory, limit=limit)
        found: dict[str, RuleRecord] = {}
        for rule in rules:
            confirmed, total = counts.rules.get(rule, (0, 0))
            if total == 0:
                continue
            kinds: dict[bool, dict[str, int]] = {True: {}, False: {}}
            for (name, kind, verdict), n in counts.rule_kinds.items():
                if name == rule:
                    kinds[verdict][kind] = n
            found[rule] = RuleRecord(confirmed, total, kinds[True], kinds[False])
        return found

    return records


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


class RulesSource(ReloadingFile[RuleSet]):
    """The rules file, re-read when it changes: a worker picks up an edit without a restart.

    A broken edit keeps the last good rules, says why once per edit (a log line, and the
    ``selfheal_rules_reload_failures`` counter of the worker's metrics), and is retried on the
    next change."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, load_rules, what="rules", on_failure=_count_reload_failure)


def _count_reload_failure() -> None:
    if activity.in_activity():
        activity.metric_meter().create_counter(
            "selfheal_rules_reload_failures", "rule files that failed to load on change"
        ).add(1)


class DiagnosisActivities:
    def __init__(
        self,
        rules: RulesSource | RuleSet,
        providers: EvidenceProviders,
        catalog: ServiceCatalog | None = None,
        settings: EvidenceSettings | None = None,
        history: RuleHistory | None = None,
    ) -> None:
        self._rules = rules
        self._providers = providers
        self._catalog = catalog or ServiceCatalog()
        self._settings = settings or EvidenceSettings()
        self._history = history

    def rules(self) -> RuleSet:
        return self._rules.current() if isinstance(self._rules, RulesSource) else self._rules

    @implements(COLLECT_EVIDENCE)
    async def collect_evidence(self, input: CollectEvidenceInput) -> Evidence:
        """Ask the service's providers; never fails because a source or the target is down
        (that is evidence, or missing evidence)."""
        fault = input.fault
        service = self._catalog.get(fault.service)
        wanted = list(service.evidence.providers) if service else list(PROVIDER_NAMES)
        request = EvidenceRequest(
            fault=fault,
            at=fault.detected_at,
            window_before_s=self._settings.window_before_s,
            window_after_s=self._settings.window_after_s,
            service=service,
            catalog=self._catalog,
        )
        collected = await self._providers.collect(request, wanted)
        facts = fault_facts(fault) | collected.facts
        log.info(
            "evidence collected",
            sources=collected.sources,
            missing=[f"{m.source}: {m.reason}" for m in collected.missing],
            findings=[f"{f.kind} on {f.component} ({f.strength:.2f})" for f in collected.findings],
        )
        log.debug("evidence facts", facts=facts)
        error = facts.get("probe_error")
        return Evidence(
            collected_at=datetime.now(UTC),
            probe_url=_str(facts.get("probe_url")),
            probe_ok=_bool(facts.get("probe_ok")),
            probe_status=_int(facts.get("probe_status")),
            probe_error=error if error in ("connection_refused", "timeout", "http_error") else None,
            probe_latency_ms=_float(facts.get("probe_latency_ms")),
            metric_value=_float(facts.get("metric_value")),
            facts=facts,
            findings=collected.findings,
            missing=collected.missing,
            sources=collected.sources,
        )

    @implements(DIAGNOSE_FAULT)
    async def diagnose_fault(self, input: DiagnoseInput) -> Diagnosis:
        # The fault's own facts are recomputed so that hand-built evidence diagnoses the same.
        evidence = input.evidence
        facts = fault_facts(input.fault) | evidence.facts
        matches = self.rules().matches(facts)
        if not matches:
            return unknown_diagnosis(facts).model_copy(update={"missing": evidence.missing})
        records: dict[str, RuleRecord] = {}
        if self._history is not None:
            try:
                records = await self._history([m.rule.name for m in matches])
            except Exception as exc:  # learning is a refinement: diagnose without it
                log.warning("rule history unavailable", error=str(exc))
        hypotheses = rank(matches, evidence.findings, evidence.missing, records)
        top = hypotheses[0]
        chosen = next(
            m for m in matches if m.rule.name == top.rule and m.component == top.component
        )
        kinds = sorted({f.kind for f in evidence.findings})
        return diagnosis_of(chosen, confidence=top.confidence).model_copy(
            update={
                "hypotheses": hypotheses,
                "missing": evidence.missing,
                "evidence_kinds": kinds,
                "acting_on": self._acting_on(input.fault, top.component),
            }
        )

    def _acting_on(self, fault: Fault, component: str) -> Fault | None:
        """The fault moved onto ``component``'s default target, when that is another service of
        the catalog; None otherwise (the healing acts on the reported fault)."""
        if component == fault.service or self._catalog.get(component) is None:
            return None
        moved = fault.model_copy(
            update={"service": component, "target": None, "health_url": None, "metric": None}
        )
        try:
            return resolve_fault(moved, self._catalog)
        except IntakeError as exc:
            log.warning(
                "cannot act on the diagnosed component", component=component, error=str(exc)
            )
            return None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _bool(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
