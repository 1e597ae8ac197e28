"""Guardrails: the kill switch, target locks, the healings that acted, every decision.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # One row at most: no row means "not paused".
    op.create_table(
        "guardrail_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("changed_by", sa.String(length=200), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_guardrail_state_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guardrail_state")),
    )

    # The primary key on the target is the lock: one holder per target.
    op.create_table(
        "target_locks",
        sa.Column("target", sa.String(length=401), nullable=False),
        sa.Column("workflow_id", sa.String(length=255), nullable=False),
        sa.Column("run_id", sa.String(length=255), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("target", name=op.f("pk_target_locks")),
    )

    op.create_table(
        "healing_actions",
        sa.Column("workflow_id", sa.String(length=255), nullable=False),
        sa.Column("run_id", sa.String(length=255), nullable=False),
        sa.Column("service", sa.String(length=200), nullable=False),
        sa.Column("target", sa.String(length=401), nullable=False),
        sa.Column("acted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("workflow_id", "run_id", name=op.f("pk_healing_actions")),
    )
    # The budget counts a service's recent healings; the cooldown reads a target's latest end.
    op.create_index(
        "ix_healing_actions_service_acted_at", "healing_actions", ["service", "acted_at"]
    )
    op.create_index("ix_healing_actions_target_ended_at", "healing_actions", ["target", "ended_at"])

    op.create_table(
        "guardrail_decisions",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("workflow_id", sa.String(length=255), nullable=False),
        sa.Column("run_id", sa.String(length=255), nullable=False),
        sa.Column("candidate", sa.Integer(), nullable=True),
        sa.Column("step_order", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(length=200), nullable=True),
        sa.Column("target", sa.String(length=401), nullable=False),
        sa.Column("allowed", sa.Boolean(), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("fault_resolved", sa.Boolean(), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column(
            "decided_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guardrail_decisions")),
    )
    op.create_index(
        "ix_guardrail_decisions_workflow_id", "guardrail_decisions", ["workflow_id", "run_id"]
    )


def downgrade() -> None:
    op.drop_table("guardrail_decisions")
    op.drop_table("healing_actions")
    op.drop_table("target_locks")
    op.drop_table("guardrail_state")
