"""Guardrail state in Postgres: the kill switch, target locks, the healings that acted, and the
audit of every guardrail decision.

- ``guardrail_state``: one row (id 1); no row means "not paused".
- ``target_locks``: at most one healing run on a target at a time. Held from the guardrail check
  at the start of a healing (``hold``: after planning, before the approval gate, so that a second
  fault of the same target waits while the first waits for a human) or, for a healing that did
  not take it then, from its first mutating step (``claim``); freed when the healing ends
  (``release``). Holding is not acting.
- ``healing_actions``: one row per healing run that acted (a mutating step was allowed), with
  when it first acted and when it ended. The per-service budget counts these rows; a target's
  cooldown starts at its latest ``ended_at``. Healings that never acted (dry runs, refusals,
  escalations before any step) count for neither, so a fault that keeps firing while it is
  escalated cannot extend its own cooldown forever.
- ``guardrail_decisions``: every answer of the guardrail activity, allowed or refused.

A target is keyed ``<service>/<target>``: the same name in two services is two targets.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ColumnElement,
    Identity,
    Index,
    String,
    Text,
    and_,
    delete,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from selfheal.domain.kill_switch import PauseState
from selfheal.models.base import Base, knowledge_base_error

__all__ = ["DatabaseKillSwitch", "Guardrails", "PauseState", "set_paused"]

_STATE_ID = 1
_BUDGET_WINDOW = timedelta(hours=1)


class GuardrailStateRow(Base):
    __tablename__ = "guardrail_state"
    __table_args__ = (CheckConstraint(f"id = {_STATE_ID}", name="single_row"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    paused: Mapped[bool]
    reason: Mapped[str] = mapped_column(Text, default="")
    changed_by: Mapped[str] = mapped_column(String(200))
    changed_at: Mapped[datetime]


class TargetLockRow(Base):
    __tablename__ = "target_locks"

    target: Mapped[str] = mapped_column(String(401), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(255))
    run_id: Mapped[str] = mapped_column(String(255))
    acquired_at: Mapped[datetime]


class HealingActionRow(Base):
    __tablename__ = "healing_actions"
    __table_args__ = (
        Index("ix_healing_actions_service_acted_at", "service", "acted_at"),
        Index("ix_healing_actions_target_ended_at", "target", "ended_at"),
    )

    workflow_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    service: Mapped[str] = mapped_column(String(200))
    target: Mapped[str] = mapped_column(String(401))
    acted_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]


class GuardrailDecisionRow(Base):
    __tablename__ = "guardrail_decisions"
    __table_args__ = (Index("ix_guardrail_decisions_workflow_id", "workflow_id", "run_id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(255))
    run_id: Mapped[str] = mapped_column(String(255))
    candidate: Mapped[int | None]
    step_order: Mapped[int | None]
    action: Mapped[str | None] = mapped_column(String(200))
    target: Mapped[str] = mapped_column(String(401))
    allowed: Mapped[bool]
    rule: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    fault_resolved: Mapped[bool]
    dry_run: Mapped[bool]
    decided_at: Mapped[datetime] = mapped_column(server_default=func.now())


def target_key(service: str, target: str | None) -> str:
    return f"{service}/{target or '-'}"


class DecisionRecord(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    workflow_id: str
    run_id: str
    candidate: int | None
    step_order: int | None
    action: str | None
    target: str
    allowed: bool
    rule: str
    reason: str
    fault_resolved: bool
    dry_run: bool
    decided_at: datetime


@dataclass(frozen=True)
class Run:
    """A healing run: the workflow id and the run id (the same fault healed again is a new run)."""

    workflow_id: str
    run_id: str


@dataclass(frozen=True)
class Held:
    run: Run
    since: datetime


@dataclass(frozen=True)
class RecentEnd:
    workflow_id: str
    ended_at: datetime


@dataclass(frozen=True)
class Claim:
    """Outcome of ``Guardrails.claim`` and ``Guardrails.hold``: ``ok``, or why not (with what
    the refusal needs)."""

    status: Literal["ok", "budget", "busy"]
    acted_last_hour: int = 0
    holder: str = ""
    held_since: datetime | None = None


class Guardrails:
    """The guardrails' storage. Every method is one transaction."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory

    def state(self) -> PauseState:
        with self._transaction("cannot read the kill switch") as session:
            return _pause_state(session.get(GuardrailStateRow, _STATE_ID))

    def set_paused(
        self, paused: bool, by: str, reason: str = "", now: datetime | None = None
    ) -> tuple[PauseState, PauseState]:
        """Set the kill switch; (before, after). Setting the state it already has updates who,
        why and when, so the audit names the latest operator."""
        at = now or datetime.now(UTC)
        with self._transaction("cannot set the kill switch") as session:
            before = _pause_state(
                session.scalar(
                    select(GuardrailStateRow)
                    .where(GuardrailStateRow.id == _STATE_ID)
                    .with_for_update()
                )
            )
            values = {"paused": paused, "reason": reason, "changed_by": by, "changed_at": at}
            session.execute(
                pg_insert(GuardrailStateRow)
                .values(id=_STATE_ID, **values)
                .on_conflict_do_update(index_elements=["id"], set_=values)
            )
        return before, PauseState(paused=paused, reason=reason, by=by, at=at)

    def last_end(self, target: str, exclude: Run, since: datetime) -> RecentEnd | None:
        """The latest healing (other than ``exclude``) that acted on ``target`` and ended at or
        after ``since``."""
        with self._transaction(f"cannot read the healings of {target}") as session:
            row = session.execute(
                select(HealingActionRow.workflow_id, HealingActionRow.ended_at)
                .where(
                    HealingActionRow.target == target,
                    HealingActionRow.ended_at >= since,
                    ~_is(exclude),
                )
                .order_by(HealingActionRow.ended_at.desc())
                .limit(1)
            ).first()
        if row is None or row.ended_at is None:
            return None
        return RecentEnd(row.workflow_id, row.ended_at)

    def acted_count(self, service: str, exclude: Run, now: datetime) -> int:
        """Healings of ``service`` other than ``exclude`` that first acted within the hour."""
        with self._transaction(f"cannot count the healings of {service}") as session:
            return _acted_count(session, service, exclude, now)

    def hold(self, target: str, run: Run, now: datetime, *, dry_run: bool) -> Claim:
        """At the start of a healing: take ``target``'s lock (idempotent for the same run), or
        ``busy`` with its holder. Holding does not count as having acted: neither the budget nor
        the cooldown sees it until ``claim``. A dry run only reads: it takes nothing."""
        with self._transaction(f"cannot hold {target}") as session:
            if not dry_run:
                _take_lock(session, target, run, now)
            return _holder_claim(session.get(TargetLockRow, target), run)

    def claim(
        self, service: str, target: str, run: Run, budget: int, now: datetime, *, dry_run: bool
    ) -> Claim:
        """Before a mutating step: within the service's budget, and the target's lock.

        A run that has acted already holds its place in the budget. A dry run only reads: it
        neither takes the lock nor counts as having acted.
        """
        with self._transaction(f"cannot claim {target}") as session:
            if not dry_run:
                # Two healings of one service claiming at once must not both fit the last slot.
                session.execute(
                    text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                    {"key": f"selfheal-budget:{service}"},
                )
            acted = session.get(HealingActionRow, (run.workflow_id, run.run_id)) is not None
            if not acted:
                count = _acted_count(session, service, run, now)
                if count >= budget:
                    return Claim("budget", acted_last_hour=count)
            if not dry_run:
                _take_lock(session, target, run, now)
            held = _holder_claim(session.get(TargetLockRow, target), run)
            if held.status == "busy":
                return held
            if not acted and not dry_run:
                session.add(
                    HealingActionRow(
                        workflow_id=run.workflow_id,
                        run_id=run.run_id,
                        service=service,
                        target=target,
                        acted_at=now,
                    )
                )
            return Claim("ok")

    def release(self, run: Run, now: datetime | None = None) -> None:
        """The healing ended: free its target and start the target's cooldown. Idempotent."""
        at = now or datetime.now(UTC)
        with self._transaction(f"cannot release the target of {run.workflow_id}") as session:
            session.execute(
                delete(TargetLockRow).where(
                    TargetLockRow.workflow_id == run.workflow_id,
                    TargetLockRow.run_id == run.run_id,
                )
            )
            session.execute(
                update(HealingActionRow)
                .where(_is(run), HealingActionRow.ended_at.is_(None))
                .values(ended_at=at)
            )

    def unlock(self, target: str, now: datetime | None = None) -> Held | None:
        """Free ``target`` whoever holds it (a healing terminated before ``release``), ending
        the holder's hold as ``release`` would; the lock that was freed, if any."""
        with self._transaction(f"cannot unlock {target}") as session:
            row = session.scalar(
                delete(TargetLockRow).where(TargetLockRow.target == target).returning(TargetLockRow)
            )
            if row is None:
                return None
            held = Held(Run(row.workflow_id, row.run_id), row.acquired_at)
            session.execute(
                update(HealingActionRow)
                .where(_is(held.run), HealingActionRow.ended_at.is_(None))
                .values(ended_at=now or datetime.now(UTC))
            )
            return held

    def lock_holder(self, target: str) -> Run | None:
        with self._transaction(f"cannot read the lock of {target}") as session:
            row = session.get(TargetLockRow, target)
            return None if row is None else Run(row.workflow_id, row.run_id)

    def record_decision(self, record: DecisionRecord) -> None:
        with self._transaction(f"cannot record a guardrail decision of {record.workflow_id}") as s:
            s.add(GuardrailDecisionRow(**record.model_dump()))

    def refused_since(self, run: Run, rule: str) -> datetime | None:
        """When ``run``'s current streak of refusals by ``rule`` began: its first such decision
        after its latest decision of any other kind; None when its latest decision is another."""
        mine = (GuardrailDecisionRow.workflow_id == run.workflow_id) & (
            GuardrailDecisionRow.run_id == run.run_id
        )
        other = GuardrailDecisionRow.allowed | (GuardrailDecisionRow.rule != rule)
        with self._transaction(f"cannot read the decisions of {run.workflow_id}") as session:
            latest_other = session.scalar(
                select(func.max(GuardrailDecisionRow.id)).where(mine, other)
            )
            return session.scalar(
                select(func.min(GuardrailDecisionRow.decided_at)).where(
                    mine, ~other, GuardrailDecisionRow.id > (latest_other or 0)
                )
            )

    def decisions(self, workflow_id: str, run_id: str | None = None) -> list[DecisionRecord]:
        """The decisions about a healing, oldest first (every run, unless ``run_id`` is given)."""
        query = select(GuardrailDecisionRow).where(GuardrailDecisionRow.workflow_id == workflow_id)
        if run_id is not None:
            query = query.where(GuardrailDecisionRow.run_id == run_id)
        with self._transaction(f"cannot read the guardrail decisions of {workflow_id}") as session:
            rows = session.scalars(query.order_by(GuardrailDecisionRow.id)).all()
            return [DecisionRecord.model_validate(row) for row in rows]

    @contextmanager
    def _transaction(self, failure: str) -> Iterator[Session]:
        try:
            with self._session_factory() as session, session.begin():
                yield session
        except SQLAlchemyError as exc:
            raise knowledge_base_error(failure, exc) from exc


def set_paused(
    session_factory: sessionmaker[Session], paused: bool, by: str, reason: str = ""
) -> PauseState:
    """Set the kill switch (for the HTTP API and the CLI); the new state."""
    return Guardrails(session_factory).set_paused(paused, by, reason)[1]


class DatabaseKillSwitch:
    """The kill switch in Postgres, for the intake (domain.kill_switch.KillSwitch)."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._guardrails = Guardrails(session_factory)

    def state(self) -> PauseState:
        return self._guardrails.state()

    def set(self, paused: bool, by: str, reason: str = "") -> PauseState:
        return self._guardrails.set_paused(paused, by, reason)[1]


def _pause_state(row: GuardrailStateRow | None) -> PauseState:
    if row is None:
        return PauseState(paused=False)
    return PauseState(paused=row.paused, reason=row.reason, by=row.changed_by, at=row.changed_at)


def _is(run: Run) -> ColumnElement[bool]:
    return and_(
        HealingActionRow.workflow_id == run.workflow_id, HealingActionRow.run_id == run.run_id
    )


def _take_lock(session: Session, target: str, run: Run, now: datetime) -> None:
    """Take ``target``'s lock unless someone (this run included) holds it."""
    session.execute(
        pg_insert(TargetLockRow)
        .values(target=target, workflow_id=run.workflow_id, run_id=run.run_id, acquired_at=now)
        .on_conflict_do_nothing(index_elements=["target"])
    )


def _holder_claim(holder: TargetLockRow | None, run: Run) -> Claim:
    """``busy`` when another run holds the lock, else ``ok``."""
    if holder is not None and not (
        holder.workflow_id == run.workflow_id and holder.run_id == run.run_id
    ):
        return Claim("busy", holder=holder.workflow_id, held_since=holder.acquired_at)
    return Claim("ok")


def _acted_count(session: Session, service: str, exclude: Run, now: datetime) -> int:
    count = session.scalar(
        select(func.count())
        .select_from(HealingActionRow)
        .where(
            HealingActionRow.service == service,
            HealingActionRow.acted_at > now - _BUDGET_WINDOW,
            ~_is(exclude),
        )
    )
    return int(count or 0)
