"""``postgres.terminate_backends``: end stuck sessions, the "reset connections" recovery.

    - action: postgres.terminate_backends
      params: {dsn: orders, database: orders, idle_in_transaction_s: 60}
      compensable: false

Ends the client sessions of a database and/or role that are idle in a transaction for longer
than ``idle_in_transaction_s`` (they hold locks and block vacuum), or that have been running
one statement for longer than ``running_s``. Never selfheal's own: its connection (the current
backend), any session whose application_name is ``selfheal`` (selfheal connects under that
name), and any application name listed in ``exclude_application_names``.

``dsn`` names a connection string in the worker's ``postgres_dsns`` service (a mapping from
name to DSN, from settings): a plan names a server it may act on, and carries no password into
its history and audit. ``max_sessions`` is a hard stop, like ``redis.delete_keys``'s bound:
when more sessions match, none is terminated and the step fails without retry.

The DSN's role needs pg_read_all_stats (without it Postgres hides other roles' session states,
and the step would find nothing) and pg_signal_backend, or superuser; the step checks and names
what to grant.

A retry finds the sessions already gone and terminates only what matches then. Terminating a
session rolls back its transaction, which nothing can replay: ``compensable=False``.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict, Field, model_validator

from selfheal.activities.actions.heartbeat import heartbeating
from selfheal.activities.actions.registry import Action, ActionContext, Output
from selfheal.domain import RiskLevel, TargetError

POSTGRES_DSNS = "postgres_dsns"
APPLICATION_NAME = "selfheal"
_REQUIRED_ROLES = ("pg_read_all_stats", "pg_signal_backend")

# Durations in seconds; "idle in transaction" counts from the last state change, "running" from
# the start of the current statement.
_FIND = """
SELECT pid, usename, datname, application_name, state,
       extract(epoch FROM now() - state_change)::float8 AS idle_s,
       extract(epoch FROM now() - query_start)::float8 AS running_s
FROM pg_stat_activity
WHERE backend_type = 'client backend'
  AND pid <> pg_backend_pid()
  AND coalesce(application_name, '') <> ALL(%(excluded)s)
  AND (%(database)s::text IS NULL OR datname = %(database)s)
  AND (%(role)s::text IS NULL OR usename = %(role)s)
  AND (
    (%(idle)s::float8 IS NOT NULL
     AND state IN ('idle in transaction', 'idle in transaction (aborted)')
     AND now() - state_change > make_interval(secs => %(idle)s))
    OR
    (%(running)s::float8 IS NOT NULL
     AND state = 'active'
     AND now() - query_start > make_interval(secs => %(running)s))
  )
ORDER BY pid
"""


class TerminateBackendsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dsn: str = Field(min_length=1, description="name of a DSN in the worker's postgres_dsns")
    database: str | None = Field(default=None, min_length=1, description="only this database")
    role: str | None = Field(default=None, min_length=1, description="only this role (usename)")
    idle_in_transaction_s: float | None = Field(
        default=None, gt=0, description="end sessions idle in a transaction for longer"
    )
    running_s: float | None = Field(
        default=None, gt=0, description="end sessions running one statement for longer"
    )
    exclude_application_names: list[str] = Field(
        default_factory=list, description="never end these applications' sessions"
    )
    max_sessions: int = Field(
        default=50, ge=1, le=10_000, description="refuse, ending none, when more sessions match"
    )
    timeout_s: float = Field(default=10.0, gt=0, le=300)

    @model_validator(mode="after")
    def _bounded(self) -> TerminateBackendsParams:
        if self.database is None and self.role is None:
            raise ValueError("give 'database' or 'role' (or both): a server-wide purge is refused")
        if self.idle_in_transaction_s is None and self.running_s is None:
            raise ValueError("give 'idle_in_transaction_s' or 'running_s' (or both)")
        return self


async def terminate_backends(ctx: ActionContext, params: TerminateBackendsParams) -> Output:
    dsns: dict[str, str] = ctx.services.get(POSTGRES_DSNS) or {}
    dsn = dsns.get(params.dsn)
    if dsn is None:
        known = ", ".join(sorted(dsns)) or "none configured"
        raise TargetError(
            f"postgres.terminate_backends: unknown dsn {params.dsn!r} (known: {known})",
            retryable=False,
        )
    query_args: dict[str, Any] = {
        "excluded": [APPLICATION_NAME, *params.exclude_application_names],
        "database": params.database,
        "role": params.role,
        "idle": params.idle_in_transaction_s,
        "running": params.running_s,
    }
    try:
        async with (
            heartbeating(ctx, {"terminating": params.dsn}),
            await psycopg.AsyncConnection.connect(
                dsn,
                application_name=APPLICATION_NAME,
                connect_timeout=max(1, round(params.timeout_s)),
                autocommit=True,
                row_factory=dict_row,
            ) as conn,
        ):
            await conn.execute(f"SET statement_timeout = {int(params.timeout_s * 1000)}")
            await _check_privileges(conn, params.dsn)
            rows = await (await conn.execute(_FIND, query_args)).fetchall()
            if len(rows) > params.max_sessions:
                raise TargetError(
                    f"refused: {len(rows)} sessions match, more than max_sessions="
                    f"{params.max_sessions}; none was terminated",
                    retryable=False,
                )
            terminated = []
            for row in rows:
                cursor = await conn.execute("SELECT pg_terminate_backend(%s) AS ok", [row["pid"]])
                done = await cursor.fetchone()
                # False: the session ended on its own between the query and now.
                if done is not None and done["ok"]:
                    terminated.append(_describe(row))
    except pg_errors.InsufficientPrivilege as exc:
        raise TargetError(
            f"postgres {params.dsn!r}: permission denied: the role needs pg_signal_backend "
            f"(or superuser) to terminate others' sessions: {exc}",
            retryable=False,
        ) from exc
    except psycopg.OperationalError as exc:
        raise TargetError(f"postgres {params.dsn!r} unreachable: {exc}".strip()) from exc
    except psycopg.Error as exc:
        raise TargetError(f"postgres {params.dsn!r}: {exc}".strip(), retryable=False) from exc
    return {
        "dsn": params.dsn,
        "matched": len(rows),
        "terminated": terminated,
    }


async def _check_privileges(conn: psycopg.AsyncConnection[Any], name: str) -> None:
    """Without these roles Postgres hides other roles' session states and refuses to end them:
    the step would find nothing and report success, so it fails instead, naming the role."""
    cursor = await conn.execute(
        "SELECT current_user AS me, r AS role FROM unnest(%s::text[]) AS r "
        "WHERE NOT pg_has_role(current_user, r, 'MEMBER')",
        [list(_REQUIRED_ROLES)],
    )
    missing = await cursor.fetchall()
    if missing:
        roles = " and ".join(row["role"] for row in missing)
        raise TargetError(
            f"postgres {name!r}: role {missing[0]['me']!r} needs {roles} (or superuser) to see "
            f"and terminate other roles' sessions: GRANT {', '.join(_REQUIRED_ROLES)} TO "
            f"{missing[0]['me']}",
            retryable=False,
        )


def _describe(row: dict[str, Any]) -> dict[str, Any]:
    idle = row["state"] != "active"
    seconds = row["idle_s"] if idle else row["running_s"]
    return {
        "pid": row["pid"],
        "role": row["usename"],
        "database": row["datname"],
        "application_name": row["application_name"],
        "state": row["state"],
        "duration_s": round(float(seconds), 3),
    }


POSTGRES_TERMINATE_BACKENDS = Action(
    name="postgres.terminate_backends",
    params_model=TerminateBackendsParams,
    risk=RiskLevel.HIGH,
    run=terminate_backends,
    compensable=False,
    idempotency="a retry finds the terminated sessions gone and ends only what matches then",
    description="Terminate sessions idle in transaction or running too long (never selfheal's).",
)
