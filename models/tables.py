"""The knowledge base's tables: the solutions it learns about, and the audit of every healing.

``solutions`` keeps every version of a solution: healings reference the exact version they ran.
Only the ``current`` version of a name is offered to new healings (a partial unique index keeps
it to one per name). ``solution_stats`` holds what each version learned on each service, with
recency weights (``models/ranking.py``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Identity,
    Index,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from selfheal.models.base import Base

RISK_LEVELS = "'low', 'medium', 'high', 'critical'"
APPROVAL_DECISIONS = "'approved', 'rejected', 'timeout'"


class SolutionRow(Base):
    __tablename__ = "solutions"
    __table_args__ = (
        UniqueConstraint("name", "version"),
        Index("ix_solutions_current_name", "name", unique=True, postgresql_where=text("current")),
        CheckConstraint(f"risk IN ({RISK_LEVELS})", name="risk"),
        CheckConstraint("version >= 1", name="version"),
    )

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int]
    current: Mapped[bool] = mapped_column(default=True)
    pattern: Mapped[str] = mapped_column(String(200), index=True)
    service: Mapped[str | None] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    steps: Mapped[list[Any]]
    risk: Mapped[str] = mapped_column(String(16))
    prior_successes: Mapped[int] = mapped_column(default=0)
    prior_attempts: Mapped[int] = mapped_column(default=0)
    attempts: Mapped[int] = mapped_column(default=0)
    successes: Mapped[int] = mapped_column(default=0)
    last_used_at: Mapped[datetime | None]
    mean_time_to_recover_s: Mapped[float | None]
    enabled: Mapped[bool] = mapped_column(default=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    # the solution's validation criteria (domain.criteria.ValidationCriterion), carried into plans
    validation: Mapped[list[Any]] = mapped_column(server_default=text("'[]'::jsonb"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class SolutionStatsRow(Base):
    """What one solution version learned on one service (the service acted on).

    ``attempts``/``successes`` count every outcome; ``weighted_*`` weigh each by its age (it
    halves every ``learning.half_life_s``) as of ``decayed_at``, and rank the solution. A
    solution's record over every service is the sum of its rows, decayed to one time.
    """

    __tablename__ = "solution_stats"

    solution_id: Mapped[int] = mapped_column(
        ForeignKey("solutions.id", ondelete="CASCADE"), primary_key=True
    )
    service: Mapped[str] = mapped_column(String(200), primary_key=True)
    attempts: Mapped[int] = mapped_column(default=0)
    successes: Mapped[int] = mapped_column(default=0)
    weighted_attempts: Mapped[float] = mapped_column(default=0.0)
    weighted_successes: Mapped[float] = mapped_column(default=0.0)
    decayed_at: Mapped[datetime]
    mean_time_to_recover_s: Mapped[float | None]
    last_used_at: Mapped[datetime | None]


class HealingRow(Base):
    __tablename__ = "healings"
    __table_args__ = (
        UniqueConstraint("workflow_id", "run_id"),
        CheckConstraint(
            f"approval_decision IS NULL OR approval_decision IN ({APPROVAL_DECISIONS})",
            name="approval_decision",
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(255))
    run_id: Mapped[str] = mapped_column(String(255))
    fault_fingerprint: Mapped[str] = mapped_column(String(128), index=True)
    fault_service: Mapped[str] = mapped_column(String(200))
    fault_type: Mapped[str] = mapped_column(String(200))
    fault: Mapped[dict[str, Any]]
    diagnosis: Mapped[dict[str, Any] | None]
    root_cause: Mapped[str | None] = mapped_column(String(200))
    confidence: Mapped[float | None]
    solutions_tried: Mapped[list[Any]]
    solution_id: Mapped[int | None] = mapped_column(ForeignKey("solutions.id"))
    solution_name: Mapped[str | None] = mapped_column(String(200))
    approval_required: Mapped[bool]
    approval_decision: Mapped[str | None] = mapped_column(String(16))
    approved_by: Mapped[str | None] = mapped_column(String(200))
    approval_reason: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str | None] = mapped_column(String(32))
    outcome_detail: Mapped[str] = mapped_column(Text, default="")
    dry_run: Mapped[bool]
    started_at: Mapped[datetime] = mapped_column(index=True)
    ended_at: Mapped[datetime | None]
    time_to_recover_s: Mapped[float | None]
    # the top hypothesis and whether its plan recovered the target (learning, issue 9)
    rule: Mapped[str | None] = mapped_column(String(200))
    component: Mapped[str | None] = mapped_column(String(200))
    confirmed: Mapped[bool | None]
    evidence_kinds: Mapped[list[Any]] = mapped_column(server_default=text("'[]'::jsonb"))
    recorded_at: Mapped[datetime] = mapped_column(server_default=func.now())

    steps: Mapped[list[HealingStepRow]] = relationship(
        back_populates="healing",
        order_by="HealingStepRow.id",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


class HealingStepRow(Base):
    __tablename__ = "healing_steps"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    healing_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("healings.id", ondelete="CASCADE"), index=True
    )
    candidate: Mapped[int]
    step_order: Mapped[int]
    name: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(200))
    params: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(32))
    compensation: Mapped[bool]
    output: Mapped[dict[str, Any]]
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime]

    healing: Mapped[HealingRow] = relationship(back_populates="steps")
