"""The knowledge base: solutions (every version), healings and their steps.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "solutions",
        sa.Column("id", sa.Integer(), sa.Identity(always=False), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("current", sa.Boolean(), nullable=False),
        sa.Column("pattern", sa.String(length=200), nullable=False),
        sa.Column("service", sa.String(length=200), nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("steps", JSONB(), nullable=False),
        sa.Column("risk", sa.String(length=16), nullable=False),
        sa.Column("prior_successes", sa.Integer(), nullable=False),
        sa.Column("prior_attempts", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("successes", sa.Integer(), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("mean_time_to_recover_s", sa.Double(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint(
            "risk IN ('low', 'medium', 'high', 'critical')", name=op.f("ck_solutions_risk")
        ),
        sa.CheckConstraint("version >= 1", name=op.f("ck_solutions_version")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_solutions")),
        sa.UniqueConstraint("name", "version", name=op.f("uq_solutions_name_version")),
    )
    # One current version per name: the partial index is what keeps it so.
    op.create_index(
        "ix_solutions_current_name",
        "solutions",
        ["name"],
        unique=True,
        postgresql_where=sa.text("current"),
    )
    op.create_index(op.f("ix_solutions_pattern"), "solutions", ["pattern"])

    op.create_table(
        "healings",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("workflow_id", sa.String(length=255), nullable=False),
        sa.Column("run_id", sa.String(length=255), nullable=False),
        sa.Column("fault_fingerprint", sa.String(length=128), nullable=False),
        sa.Column("fault_service", sa.String(length=200), nullable=False),
        sa.Column("fault_type", sa.String(length=200), nullable=False),
        sa.Column("fault", JSONB(), nullable=False),
        sa.Column("diagnosis", JSONB(), nullable=True),
        sa.Column("root_cause", sa.String(length=200), nullable=True),
        sa.Column("confidence", sa.Double(), nullable=True),
        sa.Column("solutions_tried", JSONB(), nullable=False),
        sa.Column("solution_id", sa.Integer(), nullable=True),
        sa.Column("solution_name", sa.String(length=200), nullable=True),
        sa.Column("approval_required", sa.Boolean(), nullable=False),
        sa.Column("approval_decision", sa.String(length=16), nullable=True),
        sa.Column("approved_by", sa.String(length=200), nullable=True),
        sa.Column("approval_reason", sa.Text(), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("outcome_detail", sa.Text(), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("time_to_recover_s", sa.Double(), nullable=True),
        sa.Column(
            "recorded_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint(
            "approval_decision IS NULL OR approval_decision IN ('approved', 'rejected', 'timeout')",
            name=op.f("ck_healings_approval_decision"),
        ),
        sa.ForeignKeyConstraint(
            ["solution_id"], ["solutions.id"], name=op.f("fk_healings_solution_id_solutions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_healings")),
        sa.UniqueConstraint("workflow_id", "run_id", name=op.f("uq_healings_workflow_id_run_id")),
    )
    op.create_index(op.f("ix_healings_fault_fingerprint"), "healings", ["fault_fingerprint"])
    op.create_index(op.f("ix_healings_started_at"), "healings", ["started_at"])

    op.create_table(
        "healing_steps",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("healing_id", sa.BigInteger(), nullable=False),
        sa.Column("candidate", sa.Integer(), nullable=False),
        sa.Column("step_order", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=200), nullable=False),
        sa.Column("params", JSONB(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("compensation", sa.Boolean(), nullable=False),
        sa.Column("output", JSONB(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["healing_id"],
            ["healings.id"],
            name=op.f("fk_healing_steps_healing_id_healings"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_healing_steps")),
    )
    op.create_index(op.f("ix_healing_steps_healing_id"), "healing_steps", ["healing_id"])


def downgrade() -> None:
    op.drop_table("healing_steps")
    op.drop_table("healings")
    op.drop_table("solutions")
