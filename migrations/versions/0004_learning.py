"""Learning per solution and service, with recency weights; a solution's validation criteria.

The new ``solution_stats`` is filled from the audit: every counted attempt of ``healings``
(dry runs teach nothing) on the service acted on (the diagnosis' ``acting_on``, else the fault's
service). The weights of the past are not known here (the half-life is a setting), so past
outcomes count in full as of the latest of them; from then on they fade as any outcome does.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BACKFILL = """
INSERT INTO solution_stats (
    solution_id, service, attempts, successes, weighted_attempts, weighted_successes,
    decayed_at, mean_time_to_recover_s, last_used_at
)
SELECT
    s.id,
    COALESCE(h.diagnosis -> 'acting_on' ->> 'service', h.fault_service),
    count(*),
    count(*) FILTER (WHERE (t.attempt ->> 'succeeded')::boolean),
    count(*),
    count(*) FILTER (WHERE (t.attempt ->> 'succeeded')::boolean),
    max(COALESCE(h.ended_at, h.recorded_at)),
    avg(h.time_to_recover_s) FILTER (WHERE (t.attempt ->> 'succeeded')::boolean),
    max(COALESCE(h.ended_at, h.recorded_at))
FROM healings AS h
CROSS JOIN LATERAL jsonb_array_elements(h.solutions_tried) AS t(attempt)
JOIN solutions AS s
    ON jsonb_typeof(t.attempt -> 'solution_id') = 'number'
    AND s.id = (t.attempt ->> 'solution_id')::integer
WHERE NOT h.dry_run
GROUP BY 1, 2
"""


def upgrade() -> None:
    op.add_column(
        "solutions",
        sa.Column(
            "validation",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
    )
    op.create_table(
        "solution_stats",
        sa.Column("solution_id", sa.Integer(), nullable=False),
        sa.Column("service", sa.String(length=200), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("successes", sa.Integer(), nullable=False),
        sa.Column("weighted_attempts", sa.Float(), nullable=False),
        sa.Column("weighted_successes", sa.Float(), nullable=False),
        sa.Column("decayed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("mean_time_to_recover_s", sa.Float(), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["solution_id"],
            ["solutions.id"],
            name=op.f("fk_solution_stats_solution_id_solutions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("solution_id", "service", name=op.f("pk_solution_stats")),
    )
    op.execute(BACKFILL)


def downgrade() -> None:
    op.drop_table("solution_stats")
    op.drop_column("solutions", "validation")
