"""Learning from healings, on a real Postgres: the audit records whether the top hypothesis was
confirmed (its plan recovered the target), per rule and with the finding kinds it rested on; the
next diagnoses read those records, so a rule that keeps being wrong loses confidence."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from selfheal.activities.diagnosis import DiagnosisActivities, learned_records
from selfheal.activities.evidence.base import EvidenceProviders
from selfheal.diagnosis.rules import RuleSet
from selfheal.domain import (
    Diagnosis,
    Evidence,
    Fault,
    Finding,
    HealingOutcome,
    HealingStatus,
)
from selfheal.domain.payloads import DiagnoseInput, RecordOutcomeInput, SolutionAttempt
from selfheal.models import HealingRow, KnowledgeBase
from tests.support import scratch_database, sessions

pytestmark = pytest.mark.integration

T0 = datetime.now(UTC) - timedelta(hours=1)
FAULT = Fault(service="checkout", type="health_check_failed", target="checkout")
RULES = RuleSet.model_validate(
    {
        "rules": [
            {"name": "slow", "when": {"slow": True}, "root_cause": "dependency_degraded",
             "confidence": 0.8},
        ]
    }
)  # fmt: skip


@pytest.fixture
def factory(postgres_admin_url: str) -> Iterator[sessionmaker[Session]]:
    with scratch_database(postgres_admin_url, "selfheal_learning") as url, sessions(url) as made:
        yield made


def ended(outcome: HealingOutcome, *, kinds: list[str], dry_run: bool = False) -> HealingStatus:
    diagnosis = Diagnosis(
        root_cause="dependency_degraded",
        confidence=0.8,
        rule="slow",
        component="checkout",
        evidence_kinds=kinds,
    )
    return HealingStatus(
        workflow_id=f"heal-{uuid.uuid4().hex[:12]}",
        run_id="run-1",
        phase=outcome.phase,
        fault=FAULT,
        diagnosis=diagnosis,
        outcome=outcome,
        dry_run=dry_run,
        started_at=T0,
        ended_at=T0 + timedelta(seconds=30),
    )


def record(
    kb: KnowledgeBase,
    outcome: HealingOutcome,
    *,
    ran: bool,
    kinds: list[str],
    dry_run: bool = False,
) -> None:
    attempts = (
        [SolutionAttempt(candidate=0, solution_id=None, solution_name="degrade",
                         succeeded=outcome is HealingOutcome.HEALED)]
        if ran
        else []
    )  # fmt: skip
    kb.record_outcome(
        RecordOutcomeInput(status=ended(outcome, kinds=kinds, dry_run=dry_run), attempts=attempts)
    )


def diagnose(factory: sessionmaker[Session], findings: list[Finding]) -> Diagnosis:
    activities = DiagnosisActivities(RULES, EvidenceProviders([]), history=learned_records(factory))
    evidence = Evidence(collected_at=datetime.now(UTC), facts={"slow": True}, findings=findings)
    return asyncio.run(activities.diagnose_fault(DiagnoseInput(fault=FAULT, evidence=evidence)))


def test_the_audit_says_whether_the_top_hypothesis_was_confirmed(
    factory: sessionmaker[Session],
) -> None:
    kb = KnowledgeBase(factory)
    record(kb, HealingOutcome.HEALED, ran=True, kinds=["trace_origin"])
    record(kb, HealingOutcome.ESCALATED, ran=True, kinds=["metric_shift"])
    record(kb, HealingOutcome.REJECTED, ran=False, kinds=[])
    record(kb, HealingOutcome.DRY_RUN, ran=True, kinds=[], dry_run=True)
    with factory() as session:
        rows = session.execute(
            select(HealingRow.outcome, HealingRow.rule, HealingRow.component,
                   HealingRow.confirmed, HealingRow.evidence_kinds)
            .order_by(HealingRow.id)
        ).all()  # fmt: skip
    assert [tuple(r) for r in rows] == [
        ("healed", "slow", "checkout", True, ["trace_origin"]),
        ("escalated", "slow", "checkout", False, ["metric_shift"]),
        ("rejected", "slow", "checkout", None, []),  # nothing ran: nothing learned
        ("dry_run", "slow", "checkout", None, []),
    ]


def test_a_rule_that_keeps_failing_loses_confidence_and_asks_a_human(
    factory: sessionmaker[Session],
) -> None:
    fresh = diagnose(factory, [])
    assert fresh.confidence == 0.8

    kb = KnowledgeBase(factory)
    for _ in range(8):
        record(kb, HealingOutcome.ESCALATED, ran=True, kinds=["probe_http_error"])
    learned = diagnose(factory, [])
    assert learned.confidence < 0.3 < 0.7  # below the approval policy's minimum
    assert any("history: 0 of 8 confirmed" in line for line in learned.hypotheses[0].evidence)


def test_a_kind_seen_when_the_rule_was_right_raises_it(factory: sessionmaker[Session]) -> None:
    kb = KnowledgeBase(factory)
    for _ in range(6):
        record(kb, HealingOutcome.HEALED, ran=True, kinds=["trace_origin"])
    for _ in range(6):
        record(kb, HealingOutcome.ESCALATED, ran=True, kinds=[])
    origin = Finding(source="traces", kind="trace_origin", component="checkout", strength=0.5)
    without = diagnose(factory, [])
    with_origin = diagnose(factory, [origin])
    assert with_origin.confidence > without.confidence
    assert with_origin.evidence_kinds == ["trace_origin"]
