"""Evidence kept for diagnosis: recent OTLP metric samples, error traces; the diagnosis learned.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "metric_samples",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("series", sa.String(length=64), nullable=False),
        sa.Column("service", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("labels", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metric_samples")),
    )
    op.create_index(
        "ix_metric_samples_service_name_ts", "metric_samples", ["service", "name", "ts"]
    )
    op.create_index("ix_metric_samples_series_ts", "metric_samples", ["series", "ts"])

    op.create_table(
        "trace_spans",
        sa.Column("trace_id", sa.String(length=64), nullable=False),
        sa.Column("span_id", sa.String(length=32), nullable=False),
        sa.Column("parent_span_id", sa.String(length=32), nullable=True),
        sa.Column("service", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("error", sa.Boolean(), nullable=False),
        sa.Column("status_message", sa.Text(), nullable=False),
        sa.Column("start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("exceptions", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("attributes", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("trace_id", "span_id", name=op.f("pk_trace_spans")),
    )
    op.create_index("ix_trace_spans_received_at", "trace_spans", ["received_at"])
    op.create_index("ix_trace_spans_service_start", "trace_spans", ["service", "start"])

    op.add_column("healings", sa.Column("rule", sa.String(length=200), nullable=True))
    op.add_column("healings", sa.Column("component", sa.String(length=200), nullable=True))
    op.add_column("healings", sa.Column("confirmed", sa.Boolean(), nullable=True))
    op.add_column(
        "healings",
        sa.Column(
            "evidence_kinds",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
    )


def downgrade() -> None:
    for column in ("evidence_kinds", "confirmed", "component", "rule"):
        op.drop_column("healings", column)
    op.drop_index("ix_trace_spans_service_start", table_name="trace_spans")
    op.drop_index("ix_trace_spans_received_at", table_name="trace_spans")
    op.drop_table("trace_spans")
    op.drop_index("ix_metric_samples_series_ts", table_name="metric_samples")
    op.drop_index("ix_metric_samples_service_name_ts", table_name="metric_samples")
    op.drop_table("metric_samples")
