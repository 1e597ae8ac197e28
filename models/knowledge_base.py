"""The ``KnowledgeBase`` repository: the solution catalog, what it has learned, and the audit.

Versions: importing a spec whose content (everything written in the YAML) differs from the
current version of its name adds a new version and makes it current; the old version stays, as
healings reference it. A new version starts its own learning (attempts and successes from 0)
and keeps the spec's priors: a changed solution is a different solution, and its author states
what is known about it through ``prior_successes``/``prior_attempts``. A solution missing from
an import is left as it is.

Learning: ``record_outcome`` writes the healing, its steps and the solutions' counters in one
transaction, exactly once per (workflow id, run id). A dry run is audited but teaches nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import case, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from selfheal.domain import (
    ConfigError,
    HealingOutcome,
    HealingStatus,
    KnowledgeBaseError,
    RecoveryStep,
    RiskLevel,
    Solution,
    SolutionSpec,
    StepResult,
)
from selfheal.domain.payloads import RecordOutcomeInput, RecordOutcomeResult, SolutionAttempt
from selfheal.models.base import knowledge_base_error
from selfheal.models.tables import HealingRow, HealingStepRow, SolutionRow

# Concurrent imports (several workers starting at once) take turns instead of racing on versions.
IMPORT_LOCK = 0x5E1F_CA7A


class ImportReport(BaseModel):
    """Names of the solutions an import created, gave a new version, or found unchanged."""

    created: list[str] = Field(default_factory=list)
    updated: list[str] = Field(default_factory=list)
    unchanged: list[str] = Field(default_factory=list)


class HealingStepRecord(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    candidate: int
    step_order: int
    name: str
    action: str
    params: dict[str, Any]
    status: str
    compensation: bool
    output: dict[str, Any]
    error: str | None
    started_at: datetime
    ended_at: datetime


class HealingRecord(BaseModel):
    """A healing as audited in ``healings`` and ``healing_steps``."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    workflow_id: str
    run_id: str
    fault_fingerprint: str
    fault_service: str
    fault_type: str
    fault: dict[str, Any]
    diagnosis: dict[str, Any] | None
    root_cause: str | None
    confidence: float | None
    solutions_tried: list[dict[str, Any]]
    solution_id: int | None
    solution_name: str | None
    approval_required: bool
    approval_decision: str | None
    approved_by: str | None
    approval_reason: str | None
    outcome: str | None
    outcome_detail: str
    dry_run: bool
    started_at: datetime
    ended_at: datetime | None
    time_to_recover_s: float | None
    steps: list[HealingStepRecord]


def content_hash(spec: SolutionSpec) -> str:
    """Identity of a spec's content. Defaults are left out, so that a field added to the spec
    model later does not make every stored solution look changed."""
    canonical = json.dumps(
        spec.model_dump(mode="json", exclude_defaults=True), sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class KnowledgeBase:
    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory

    def import_solutions(self, specs: Iterable[SolutionSpec]) -> ImportReport:
        specs = list(specs)
        names = [spec.name for spec in specs]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ConfigError(f"solution names must be unique; repeated: {', '.join(duplicates)}")
        report = ImportReport()
        with self._transaction("cannot import the solution catalog") as session:
            session.execute(select(func.pg_advisory_xact_lock(IMPORT_LOCK)))
            current = {
                row.name: row
                for row in session.scalars(select(SolutionRow).where(SolutionRow.current))
            }
            latest_version: dict[str, int] = {
                name: version
                for name, version in session.execute(
                    select(SolutionRow.name, func.max(SolutionRow.version)).group_by(
                        SolutionRow.name
                    )
                )
            }
            for spec in specs:
                digest = content_hash(spec)
                previous = current.get(spec.name)
                if previous is not None and previous.content_hash == digest:
                    report.unchanged.append(spec.name)
                    continue
                if previous is not None:
                    previous.current = False
                    # Before the insert: one current version per name is a unique index.
                    session.flush()
                    report.updated.append(spec.name)
                else:
                    report.created.append(spec.name)
                version = latest_version.get(spec.name, 0) + 1
                session.add(_new_solution_row(spec, version, digest))
        return report

    def list_solutions(self) -> list[Solution]:
        """The current version of every solution, disabled ones included."""
        with self._transaction("cannot list solutions") as session:
            rows = session.scalars(
                select(SolutionRow)
                .where(SolutionRow.current)
                .order_by(SolutionRow.pattern, SolutionRow.name)
            )
            return [_to_solution(row) for row in rows]

    def find_solutions(
        self, pattern: str, service: str, limit: int | None = None
    ) -> list[Solution]:
        """Enabled current solutions for a root cause and service, best first.

        A solution's ``pattern`` and ``service`` are fnmatch patterns (case-sensitive), so a
        plain name matches itself only; a solution without ``service`` fits every service.
        Best means the highest smoothed success rate, priors included; ties go to the solution
        written for this service rather than for any, then to the name.
        """
        with self._transaction("cannot find solutions") as session:
            rows = session.scalars(
                select(SolutionRow).where(SolutionRow.current, SolutionRow.enabled)
            )
            found = [
                _to_solution(row)
                for row in rows
                if fnmatchcase(pattern, row.pattern)
                and (row.service is None or fnmatchcase(service, row.service))
            ]
        found.sort(key=lambda s: (-s.success_rate, s.service is None, s.name))
        return found if limit is None else found[:limit]

    def record_outcome(self, input: RecordOutcomeInput) -> RecordOutcomeResult:
        status = input.status
        with self._transaction(f"cannot record the outcome of {status.workflow_id}") as session:
            known_ids = _existing_solution_ids(session, input.attempts)
            healing_id = session.scalar(
                pg_insert(HealingRow)
                .values(**_healing_values(input, known_ids))
                .on_conflict_do_nothing(index_elements=["workflow_id", "run_id"])
                .returning(HealingRow.id)
            )
            if healing_id is None:
                # Recorded before (a retried activity): the row's unique key decided, not a
                # read, so two concurrent calls cannot both count.
                existing = session.scalar(
                    select(HealingRow.id).where(
                        HealingRow.workflow_id == status.workflow_id,
                        HealingRow.run_id == status.run_id,
                    )
                )
                if existing is None:
                    raise KnowledgeBaseError(
                        f"healing {status.workflow_id} vanished while recording"
                    )
                return RecordOutcomeResult(healing_id=existing, already_recorded=True)
            if status.steps:
                session.execute(
                    insert(HealingStepRow),
                    [_step_values(healing_id, step) for step in status.steps],
                )
            if not status.dry_run:
                used_at = status.ended_at or datetime.now(UTC)
                # In id order: concurrent healings then lock solution rows in the same order
                # and cannot deadlock each other.
                learned = [a for a in input.attempts if a.solution_id in known_ids]
                for attempt in sorted(learned, key=lambda a: a.solution_id or 0):
                    _learn(session, attempt, used_at, status.time_to_recover_s)
        return RecordOutcomeResult(healing_id=healing_id)

    def get_healing(self, workflow_id: str) -> HealingRecord | None:
        """The latest recorded healing of a workflow id, with its steps."""
        with self._transaction(f"cannot read the healing {workflow_id}") as session:
            row = session.scalar(
                select(HealingRow)
                .where(HealingRow.workflow_id == workflow_id)
                .order_by(HealingRow.started_at.desc(), HealingRow.id.desc())
                .limit(1)
                .options(selectinload(HealingRow.steps))
            )
            return None if row is None else HealingRecord.model_validate(row)

    @contextmanager
    def _transaction(self, failure: str) -> Iterator[Session]:
        try:
            with self._session_factory() as session, session.begin():
                yield session
        except SQLAlchemyError as exc:
            raise knowledge_base_error(failure, exc) from exc


def _new_solution_row(spec: SolutionSpec, version: int, digest: str) -> SolutionRow:
    return SolutionRow(
        name=spec.name,
        version=version,
        current=True,
        pattern=spec.pattern,
        service=spec.service,
        description=spec.description,
        steps=[step.model_dump(mode="json") for step in spec.steps],
        risk=spec.risk.value,
        prior_successes=spec.prior_successes,
        prior_attempts=spec.prior_attempts,
        attempts=0,
        successes=0,
        enabled=spec.enabled,
        content_hash=digest,
    )


def _to_solution(row: SolutionRow) -> Solution:
    return Solution(
        id=row.id,
        name=row.name,
        version=row.version,
        pattern=row.pattern,
        service=row.service,
        description=row.description,
        risk=RiskLevel(row.risk),
        steps=[RecoveryStep.model_validate(step) for step in row.steps],
        prior_successes=row.prior_successes,
        prior_attempts=row.prior_attempts,
        attempts=row.attempts,
        successes=row.successes,
        mean_time_to_recover_s=row.mean_time_to_recover_s,
        last_used_at=row.last_used_at,
        enabled=row.enabled,
    )


def _existing_solution_ids(session: Session, attempts: list[SolutionAttempt]) -> set[int]:
    """Attempts may name a solution id that is not (or no longer) stored: audit, don't fail."""
    ids = {a.solution_id for a in attempts if a.solution_id is not None}
    if not ids:
        return set()
    return set(session.scalars(select(SolutionRow.id).where(SolutionRow.id.in_(ids))))


def _approval_decision(status: HealingStatus) -> str | None:
    if status.approval is not None:
        return "approved" if status.approval.approved else "rejected"
    if status.outcome is HealingOutcome.APPROVAL_TIMEOUT:
        return "timeout"
    return None


def _healing_values(input: RecordOutcomeInput, known_ids: set[int]) -> dict[str, Any]:
    status = input.status
    winner = next(
        (a for a in reversed(input.attempts) if a.succeeded and a.solution_id in known_ids), None
    )
    return {
        "workflow_id": status.workflow_id,
        "run_id": status.run_id,
        "fault_fingerprint": status.fault.fingerprint,
        "fault_service": status.fault.service,
        "fault_type": status.fault.type,
        "fault": status.fault.model_dump(mode="json"),
        "diagnosis": status.diagnosis.model_dump(mode="json") if status.diagnosis else None,
        "root_cause": status.diagnosis.root_cause if status.diagnosis else None,
        "confidence": status.diagnosis.confidence if status.diagnosis else None,
        "solutions_tried": [a.model_dump(mode="json") for a in input.attempts],
        "solution_id": winner.solution_id if winner else None,
        "solution_name": status.solution_name,
        "approval_required": status.approval_required,
        "approval_decision": _approval_decision(status),
        "approved_by": status.approval.by if status.approval else None,
        "approval_reason": status.approval.reason if status.approval else None,
        "outcome": status.outcome.value if status.outcome else None,
        "outcome_detail": status.outcome_detail,
        "dry_run": status.dry_run,
        "started_at": status.started_at,
        "ended_at": status.ended_at,
        "time_to_recover_s": status.time_to_recover_s,
        "rule": status.diagnosis.rule if status.diagnosis else None,
        "component": status.diagnosis.component if status.diagnosis else None,
        "confirmed": confirmed(status, input.attempts),
        "evidence_kinds": sorted(status.diagnosis.evidence_kinds) if status.diagnosis else [],
    }


def confirmed(status: HealingStatus, attempts: Sequence[SolutionAttempt]) -> bool | None:
    """Whether the top hypothesis was confirmed: its plan recovered the target (True), its plans
    ran and none did (False), or nothing tells (None: dry run, rejected, nothing ran)."""
    if status.dry_run or status.diagnosis is None or not attempts:
        return None
    return any(a.succeeded for a in attempts)


def _step_values(healing_id: int, step: StepResult) -> dict[str, Any]:
    return {
        "healing_id": healing_id,
        "candidate": step.candidate,
        "step_order": step.order,
        "name": step.name,
        "action": step.action,
        "params": step.params,
        "status": step.status.value,
        "compensation": step.compensation,
        "output": step.output,
        "error": step.error,
        "started_at": step.started_at,
        "ended_at": step.ended_at,
    }


def _learn(
    session: Session, attempt: SolutionAttempt, used_at: datetime, time_to_recover_s: float | None
) -> None:
    """Count one attempt, atomically in SQL so that concurrent healings never lose a count."""
    values: dict[str, Any] = {
        "attempts": SolutionRow.attempts + 1,
        "last_used_at": used_at,
    }
    if attempt.succeeded:
        values["successes"] = SolutionRow.successes + 1
        if time_to_recover_s is not None:
            # A running mean over the successes; the right-hand side reads the old values.
            old = SolutionRow.mean_time_to_recover_s
            values["mean_time_to_recover_s"] = case(
                (old.is_(None), time_to_recover_s),
                else_=old + (time_to_recover_s - old) / (SolutionRow.successes + 1),
            )
    session.execute(
        update(SolutionRow)
        .where(SolutionRow.id == attempt.solution_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
