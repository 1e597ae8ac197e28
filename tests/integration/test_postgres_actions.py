"""``postgres.terminate_backends`` against the real Postgres on 127.0.0.1:5432 (trust auth,
database ``test``; started by .ci/services.sh). Each test makes its own login role, so that the
action, filtered by that role, can only ever reach the sessions the test opened."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from selfheal.activities.actions.postgres import (
    POSTGRES_DSNS,
    POSTGRES_TERMINATE_BACKENDS,
    TerminateBackendsParams,
)
from selfheal.activities.actions.registry import ActionContext
from selfheal.domain import InvalidParams, TargetError

pytestmark = pytest.mark.integration

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"
IDLE_LIMIT_S = 0.3


def dsn_of(role: str) -> str:
    return f"postgresql://{role}@127.0.0.1:5432/test"


class Sessions:
    """Sessions of one throwaway role, opened and closed by the test."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.opened: list[psycopg.Connection[tuple[object, ...]]] = []

    def open(self, application_name: str = "victim") -> psycopg.Connection[tuple[object, ...]]:
        conn = psycopg.connect(dsn_of(self.role), application_name=application_name)
        self.opened.append(conn)
        return conn

    def idle_in_transaction(self, application_name: str = "victim") -> int:
        conn = self.open(application_name)
        conn.execute("SELECT 1")  # psycopg opened a transaction: now idle in it
        return conn.info.backend_pid

    def idle(self) -> int:
        conn = self.open()
        conn.autocommit = True
        conn.execute("SELECT 1")
        return conn.info.backend_pid

    def alive(self) -> set[int]:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            rows = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE usename = %s", [self.role]
            ).fetchall()
        return {pid for (pid,) in rows}

    def close(self) -> None:
        for conn in self.opened:
            conn.close()


@pytest.fixture
def sessions() -> Iterator[Sessions]:
    role = f"victim_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    found = Sessions(role)
    try:
        yield found
    finally:
        found.close()
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", [role]
            )
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def context(key: str = "heal-x/run/0/0", dsns: dict[str, str] | None = None) -> ActionContext:
    return ActionContext(
        idempotency_key=key,
        workflow_id="heal-x",
        services={POSTGRES_DSNS: {"main": ADMIN_DSN} if dsns is None else dsns},
    )


def params(**kw: object) -> TerminateBackendsParams:
    return POSTGRES_TERMINATE_BACKENDS.parse({"dsn": "main", **kw})


async def test_ends_only_old_idle_transactions_and_never_selfheals_own(
    sessions: Sessions,
) -> None:
    stuck = sessions.idle_in_transaction()
    ours = sessions.idle_in_transaction(application_name="selfheal")
    spared = sessions.idle_in_transaction(application_name="batch-job")
    idle = sessions.idle()
    time.sleep(IDLE_LIMIT_S + 0.2)
    young = sessions.idle_in_transaction()

    output = await POSTGRES_TERMINATE_BACKENDS.run(
        context(),
        params(
            role=sessions.role,
            database="test",
            idle_in_transaction_s=IDLE_LIMIT_S,
            exclude_application_names=["batch-job"],
        ),
    )

    assert [t["pid"] for t in output["terminated"]] == [stuck]
    (ended,) = output["terminated"]
    assert ended["state"] == "idle in transaction"
    assert ended["role"] == sessions.role and ended["database"] == "test"
    assert ended["application_name"] == "victim"
    assert ended["duration_s"] >= IDLE_LIMIT_S
    assert sessions.alive() == {ours, spared, idle, young}
    with pytest.raises(psycopg.OperationalError):
        sessions.opened[0].execute("SELECT 1")


async def test_the_callers_own_idle_transaction_survives(sessions: Sessions) -> None:
    """The action's caller, connected as the very role it targets and idle in a transaction,
    is selfheal's: it is not terminated."""
    caller = psycopg.connect(dsn_of(sessions.role), application_name="selfheal")
    caller.execute("SELECT 1")
    time.sleep(IDLE_LIMIT_S + 0.2)
    try:
        output = await POSTGRES_TERMINATE_BACKENDS.run(
            context(), params(role=sessions.role, idle_in_transaction_s=IDLE_LIMIT_S)
        )
        assert output["terminated"] == []
        assert caller.execute("SELECT 2").fetchone() == (2,)
    finally:
        caller.close()


async def test_ends_a_statement_running_too_long(sessions: Sessions) -> None:
    busy = sessions.open()
    pid = busy.info.backend_pid
    failures: list[BaseException] = []

    def sleep_long() -> None:
        try:
            busy.execute("SELECT pg_sleep(30)")
        except psycopg.Error as exc:
            failures.append(exc)

    thread = threading.Thread(target=sleep_long)
    thread.start()
    time.sleep(IDLE_LIMIT_S + 0.3)

    output = await POSTGRES_TERMINATE_BACKENDS.run(
        context(), params(database="test", role=sessions.role, running_s=IDLE_LIMIT_S)
    )
    thread.join(10)

    assert [(t["pid"], t["state"]) for t in output["terminated"]] == [(pid, "active")]
    assert output["terminated"][0]["duration_s"] >= IDLE_LIMIT_S
    assert not thread.is_alive() and len(failures) == 1


async def test_a_retry_with_the_same_key_terminates_once(sessions: Sessions) -> None:
    sessions.idle_in_transaction()
    sessions.idle_in_transaction()
    time.sleep(IDLE_LIMIT_S + 0.2)
    step = params(role=sessions.role, idle_in_transaction_s=IDLE_LIMIT_S)

    first = await POSTGRES_TERMINATE_BACKENDS.run(context("heal-x/run/0/2"), step)
    survivor = sessions.idle_in_transaction()  # opened after the step: too young to end
    again = await POSTGRES_TERMINATE_BACKENDS.run(context("heal-x/run/0/2"), step)

    assert len(first["terminated"]) == 2
    assert (again["matched"], again["terminated"]) == (0, [])
    assert sessions.alive() == {survivor}


async def test_more_sessions_than_the_bound_is_a_hard_stop(sessions: Sessions) -> None:
    pids = {sessions.idle_in_transaction() for _ in range(3)}
    time.sleep(IDLE_LIMIT_S + 0.2)

    with pytest.raises(TargetError, match="refused: 3 sessions match, more than max_sessions=2"):
        await POSTGRES_TERMINATE_BACKENDS.run(
            context(),
            params(role=sessions.role, idle_in_transaction_s=IDLE_LIMIT_S, max_sessions=2),
        )

    assert sessions.alive() == pids


async def test_a_role_without_the_monitoring_roles_is_told_what_to_grant(
    sessions: Sessions,
) -> None:
    sessions.idle_in_transaction()
    weak = context(dsns={"main": dsn_of(sessions.role)})

    with pytest.raises(
        TargetError, match="needs pg_read_all_stats and pg_signal_backend"
    ) as raised:
        await POSTGRES_TERMINATE_BACKENDS.run(
            weak, params(database="test", idle_in_transaction_s=IDLE_LIMIT_S)
        )

    assert raised.value.retryable is False
    assert f"TO {sessions.role}" in str(raised.value)


async def test_an_unknown_dsn_name_lists_the_known_ones() -> None:
    with pytest.raises(TargetError, match=r"unknown dsn 'orders' \(known: main\)") as raised:
        await POSTGRES_TERMINATE_BACKENDS.run(
            context(),
            POSTGRES_TERMINATE_BACKENDS.parse(
                {"dsn": "orders", "database": "test", "running_s": 5}
            ),
        )
    assert raised.value.retryable is False


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"idle_in_transaction_s": 5}, "give 'database' or 'role'"),
        ({"database": "test"}, "give 'idle_in_transaction_s' or 'running_s'"),
        ({"database": "test", "running_s": 0}, "running_s: Input should be greater than 0"),
        ({"database": "test", "running_s": 5, "pids": [1]}, "pids: Extra inputs"),
    ],
)
def test_bad_params_name_the_field(given: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidParams, match=message):
        POSTGRES_TERMINATE_BACKENDS.parse({"dsn": "main", **given})


def test_declared_high_risk_and_not_compensable() -> None:
    action = POSTGRES_TERMINATE_BACKENDS
    assert (action.risk.value, action.mutating, action.compensable) == ("high", True, False)
