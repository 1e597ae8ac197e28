"""The ``KnowledgeBase`` repository: the solution catalog, what it has learned, and the audit.

Versions: importing a spec whose content (everything written in the YAML) differs from the
current version of its name adds a new version and makes it current; the old version stays, as
healings reference it. A new version starts its own learning (attempts and successes from 0)
and keeps the spec's priors: a changed solution is a different solution, and its author states
what is known about it through ``prior_successes``/``prior_attempts``. A solution missing from
an import is left as it is.

Learning: ``record_outcome`` writes the healing, its steps and the solutions' counters in one
transaction, exactly once per (workflow id, run id). A dry run is audited but teaches nothing.
Each counted attempt teaches the solution's global counters and its record on the service acted
on (``solution_stats``: plain counts and recency-weighted ones).

Ranking: ``find_solutions`` draws from each candidate's posterior (Thompson sampling, see
``models/ranking.py``), on its record on the service, or over every service while the service
has too little of it. ``stats`` reports what was learned: per solution and service, and how
often each rule's and root cause's top hypothesis was confirmed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import case, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import InstrumentedAttribute, Session, selectinload, sessionmaker

from selfheal.core.settings import LearningSettings
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
from selfheal.domain.criteria import ValidationCriterion
from selfheal.domain.payloads import RecordOutcomeInput, RecordOutcomeResult, SolutionAttempt
from selfheal.models.base import knowledge_base_error
from selfheal.models.ranking import (
    CREDIBLE_MASS,
    Basis,
    Candidate,
    Tally,
    combined,
    posterior,
    thompson_rank,
)
from selfheal.models.tables import HealingRow, HealingStepRow, SolutionRow, SolutionStatsRow

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


class RankedSolution(BaseModel):
    """A candidate solution with the draw that ranked it and the record it was drawn from."""

    solution: Solution
    sampled: float = Field(description="the Thompson sample (the higher, the earlier tried)")
    success_rate: float = Field(description="the posterior mean the sample was drawn around")
    basis: Basis = Field(
        description="service: its record on the service acted on; global: over every service"
    )
    weighted_attempts: float
    weighted_successes: float


class SolutionStats(BaseModel):
    """What one solution version learned on one service, as of ``KnowledgeStats.at``."""

    solution_id: int
    solution: str
    version: int
    current: bool
    pattern: str
    service: str
    attempts: int
    successes: int
    weighted_attempts: float = Field(description="attempts weighed by age (half-life)")
    weighted_successes: float
    success_rate: float = Field(
        description="posterior mean on this service: (weighted successes + prior successes + 1)"
        " / (weighted attempts + prior attempts + 2)"
    )
    success_rate_lower: float = Field(description="the credible interval's lower bound")
    success_rate_upper: float
    mean_time_to_recover_s: float | None
    last_used_at: datetime | None
    ranked_by: Basis = Field(
        description="what ranks it for a healing on this service now: its record here, or "
        "(too few weighted attempts here) its record over every service"
    )


class HitRate(BaseModel):
    """How often the top hypothesis of a rule (or a root cause) was confirmed: its plan
    recovered the target. Healings where nothing ran (rejected, dry run) decide nothing."""

    key: str
    healings: int
    decided: int
    confirmed: int
    hit_rate: float | None = Field(description="confirmed / decided; None: nothing decided")


class KnowledgeStats(BaseModel):
    at: datetime
    half_life_s: float
    min_service_attempts: float
    credible_mass: float
    solutions: list[SolutionStats]
    rules: list[HitRate]
    root_causes: list[HitRate]


def content_hash(spec: SolutionSpec) -> str:
    """Identity of a spec's content. Defaults are left out, so that a field added to the spec
    model later does not make every stored solution look changed."""
    canonical = json.dumps(
        spec.model_dump(mode="json", exclude_defaults=True), sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class KnowledgeBase:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        learning: LearningSettings | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        self._session_factory = session_factory
        self._learning = learning or LearningSettings()
        # Only ``find_solutions`` draws from it; a seeded one makes rankings reproducible.
        self._rng = rng or np.random.default_rng()

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
        self,
        pattern: str,
        service: str,
        limit: int | None = None,
        *,
        now: datetime | None = None,
        rng: np.random.Generator | None = None,
    ) -> list[RankedSolution]:
        """Enabled current solutions for a root cause and service, ranked by Thompson sampling.

        A solution's ``pattern`` and ``service`` are fnmatch patterns (case-sensitive), so a
        plain name matches itself only; a solution without ``service`` fits every service.
        ``service`` is the service acted on, whose record ranks each solution once it holds
        ``learning.min_service_attempts`` weighted attempts (see ``models/ranking.py``). Draws
        are made in a fixed order (the solution written for this service before one for any,
        then by name), which also breaks ties.
        """
        now = now or datetime.now(UTC)
        with self._transaction("cannot find solutions") as session:
            rows = session.scalars(
                select(SolutionRow).where(SolutionRow.current, SolutionRow.enabled)
            )
            found = sorted(
                (
                    _to_solution(row)
                    for row in rows
                    if fnmatchcase(pattern, row.pattern)
                    and (row.service is None or fnmatchcase(service, row.service))
                ),
                key=lambda s: (s.service is None, s.name),
            )
            records = _records(session, [s.id for s in found])
        half_life_s = self._learning.half_life_s
        candidates = [
            Candidate(
                key=solution,
                service=records.get(solution.id, {}).get(service, Tally()),
                overall=combined(records.get(solution.id, {}).values(), now, half_life_s),
                prior_successes=solution.prior_successes,
                prior_attempts=solution.prior_attempts,
            )
            for solution in found
        ]
        ranked = [
            RankedSolution(
                solution=r.key,
                sampled=r.sampled,
                success_rate=r.posterior.mean,
                basis=r.basis,
                weighted_attempts=r.tally.attempts,
                weighted_successes=r.tally.successes,
            )
            for r in thompson_rank(
                candidates,
                now=now,
                half_life_s=half_life_s,
                min_service_attempts=self._learning.min_service_attempts,
                rng=rng or self._rng,
            )
        ]
        return ranked if limit is None else ranked[:limit]

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
                service = acted_on(status)
                # In id order: concurrent healings then lock solution rows in the same order
                # and cannot deadlock each other.
                learned = [a for a in input.attempts if a.solution_id in known_ids]
                for attempt in sorted(learned, key=lambda a: a.solution_id or 0):
                    _learn(session, attempt, used_at, status.time_to_recover_s)
                    _learn_on_service(
                        session,
                        attempt,
                        service,
                        used_at,
                        status.time_to_recover_s,
                        self._learning.half_life_s,
                    )
        return RecordOutcomeResult(healing_id=healing_id)

    def stats(self, *, now: datetime | None = None) -> KnowledgeStats:
        """What was learned, as of ``now``: per solution version and service (every version
        that was ever tried), and the hit rate of the top hypothesis per rule and root cause."""
        now = now or datetime.now(UTC)
        learning = self._learning
        with self._transaction("cannot read the knowledge base's statistics") as session:
            rows = session.execute(
                select(SolutionStatsRow, SolutionRow)
                .join(SolutionRow, SolutionRow.id == SolutionStatsRow.solution_id)
                .order_by(SolutionRow.name, SolutionRow.version, SolutionStatsRow.service)
            ).all()
            rules = _hit_rates(session, HealingRow.rule)
            root_causes = _hit_rates(session, HealingRow.root_cause)
        solutions = []
        for stats_row, solution in rows:
            tally = _tally(stats_row).decayed(now, learning.half_life_s)
            belief = posterior(tally, solution.prior_successes, solution.prior_attempts)
            lower, upper = belief.interval(CREDIBLE_MASS)
            solutions.append(
                SolutionStats(
                    solution_id=solution.id,
                    solution=solution.name,
                    version=solution.version,
                    current=solution.current,
                    pattern=solution.pattern,
                    service=stats_row.service,
                    attempts=stats_row.attempts,
                    successes=stats_row.successes,
                    weighted_attempts=tally.attempts,
                    weighted_successes=tally.successes,
                    success_rate=belief.mean,
                    success_rate_lower=lower,
                    success_rate_upper=upper,
                    mean_time_to_recover_s=stats_row.mean_time_to_recover_s,
                    last_used_at=stats_row.last_used_at,
                    ranked_by=(
                        "service" if tally.attempts >= learning.min_service_attempts else "global"
                    ),
                )
            )
        return KnowledgeStats(
            at=now,
            half_life_s=learning.half_life_s,
            min_service_attempts=learning.min_service_attempts,
            credible_mass=CREDIBLE_MASS,
            solutions=solutions,
            rules=rules,
            root_causes=root_causes,
        )

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
        validation=[criterion.model_dump(mode="json") for criterion in spec.validation],
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
        validation=[ValidationCriterion.model_validate(c) for c in row.validation],
    )


def acted_on(status: HealingStatus) -> str:
    """The service the healing acted on: the diagnosed component's when the diagnosis moved the
    fault there, else the fault's own. A solution learns on it."""
    diagnosis = status.diagnosis
    if diagnosis is not None and diagnosis.acting_on is not None:
        return diagnosis.acting_on.service
    return status.fault.service


def _tally(row: SolutionStatsRow) -> Tally:
    return Tally(row.weighted_attempts, row.weighted_successes, row.decayed_at)


def _records(session: Session, solution_ids: list[int]) -> dict[int, dict[str, Tally]]:
    """The stored tallies of these solutions, by solution id and service."""
    records: dict[int, dict[str, Tally]] = {}
    if not solution_ids:
        return records
    rows = session.scalars(
        select(SolutionStatsRow).where(SolutionStatsRow.solution_id.in_(solution_ids))
    )
    for row in rows:
        records.setdefault(row.solution_id, {})[row.service] = _tally(row)
    return records


def _hit_rates(session: Session, column: InstrumentedAttribute[str | None]) -> list[HitRate]:
    rows = session.execute(
        select(
            column,
            func.count(),
            func.count(HealingRow.confirmed),
            func.count().filter(HealingRow.confirmed.is_(True)),
        )
        .where(column.is_not(None))
        .group_by(column)
        .order_by(column)
    )
    return [
        HitRate(
            key=key,
            healings=healings,
            decided=decided,
            confirmed=hits,
            hit_rate=hits / decided if decided else None,
        )
        for key, healings, decided, hits in rows
    ]


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


def _learn_on_service(
    session: Session,
    attempt: SolutionAttempt,
    service: str,
    used_at: datetime,
    time_to_recover_s: float | None,
    half_life_s: float,
) -> None:
    """Count one attempt on the service acted on. The row is locked while it is read and
    written: the weighted counts are decayed in Python (``models/ranking.py``), the same code
    that ranks."""
    key = {"solution_id": attempt.solution_id, "service": service}
    session.execute(
        pg_insert(SolutionStatsRow)
        .values(**key, attempts=0, successes=0, weighted_attempts=0.0, weighted_successes=0.0,
                decayed_at=used_at)
        .on_conflict_do_nothing(index_elements=["solution_id", "service"])
    )  # fmt: skip
    row = session.scalars(select(SolutionStatsRow).filter_by(**key).with_for_update()).one()
    tally = _tally(row).add(attempt.succeeded, used_at, half_life_s)
    row.weighted_attempts, row.weighted_successes = tally.attempts, tally.successes
    row.decayed_at = tally.at or used_at
    row.attempts += 1
    row.last_used_at = used_at if row.last_used_at is None else max(row.last_used_at, used_at)
    if attempt.succeeded:
        row.successes += 1
        if time_to_recover_s is not None:
            old = row.mean_time_to_recover_s
            row.mean_time_to_recover_s = (
                time_to_recover_s
                if old is None
                else old + (time_to_recover_s - old) / row.successes
            )
    session.flush()
