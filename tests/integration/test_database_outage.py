"""A healing under a Postgres outage (issue 10 §7a), with the real activities: the real dev
server, a Postgres of this module's own that the tests stop and start (private_postgres.py), the
knowledge base imported from runbooks/, the demo target crashed under selfheal's supervisor.

The bug this guards: Postgres was down about 15 s while a healing was planning; the knowledge
base read gave up after 5 attempts and the workflow failed bare, with no outcome, no record and
the crashed target left down, while ``selfheal show`` said "in progress". Now reads retry through
an outage of up to ``read_retry_max_s``, a longer one ends the healing ``escalated`` with the
error, and the record lands once the database is back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle

from selfheal.domain import HealingOutcome, HealingPhase, HealingStatus
from selfheal.healings import Healings
from selfheal.healings.queries import HealingRow
from selfheal.healings.start import start_healing
from selfheal.models.knowledge_base import HealingRecord, KnowledgeBase
from selfheal.worker import build_activities, build_worker
from selfheal.workflows.contract import FIND_SOLUTIONS
from tests.integration.demo_stack import DemoStack, demo_stack, wait_until
from tests.integration.private_postgres import PrivatePostgres, outage, private_postgres_server
from tests.integration.test_healing_e2e import fault_for, kb_sessions, settings_for
from tests.support import runbooks_for, scratch_database

pytestmark = pytest.mark.integration

__all__ = ["kb_sessions"]  # the e2e module's knowledge base, here on this module's server

# Longer than the old limit of 5 attempts (about 15 s of backoff), and than the bug's 15 s.
OUTAGE_S = 60.0


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres]:
    with private_postgres_server() as server:
        yield server


@pytest.fixture(scope="module")
def database_url(private_postgres: PrivatePostgres) -> Iterator[str]:
    """This module's knowledge base, migrated to head, on the server the tests may stop (it
    replaces the session's database for this module's fixtures, ``kb_sessions`` among them)."""
    with scratch_database(private_postgres.admin_url, "selfheal_outage") as url:
        yield url


@pytest.fixture
def target(tmp_path: Path) -> Iterator[DemoStack]:
    """The demo services, crashed: the healing's step (a restart) needs no database."""
    with demo_stack(tmp_path) as stack:
        stack.inject("crash")
        wait_until(lambda: stack.health() is None, what="the target to crash")
        yield stack


@asynccontextmanager
async def outage_worker(
    client: Client,
    task_queue: str,
    target: DemoStack,
    sessions: sessionmaker[Session],
    tmp_path: Path,
    *,
    read_retry_max_s: float,
    approval_min_confidence: float = 0.7,
) -> AsyncIterator[None]:
    """A worker with every real activity, reads retried through ``read_retry_max_s``."""
    settings = settings_for(target, runbooks_for(tmp_path / "runbooks", target.target_url))
    healing = settings.healing.model_copy(
        update={
            "read_retry_max_s": read_retry_max_s,
            "approval_min_confidence": approval_min_confidence,
        }
    )
    settings = settings.model_copy(update={"healing": healing})
    async with httpx.AsyncClient() as http:
        activities = build_activities(settings, session_factory=sessions, http=http)
        async with build_worker(client, settings, activities=activities, task_queue=task_queue):
            yield


async def pending_activities(handle: WorkflowHandle[Any, Any]) -> dict[str, Any]:
    """The healing's activities that are scheduled or retrying, by name (Temporal's own view:
    attempt, last failure)."""
    description = await handle.describe()
    return {p.activity_type.name: p for p in description.raw_description.pending_activities}


async def listed(door: Healings, workflow_id: str, *, status: str) -> HealingRow:
    """The healing's row of ``selfheal list`` once visibility shows it in ``status``."""
    deadline = time.monotonic() + 15
    while True:
        rows = [r for r in await door.list(limit=200) if r.workflow_id == workflow_id]
        if rows and rows[0].status == status:
            return rows[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"{workflow_id} never listed as {status}: {rows}")
        await asyncio.sleep(0.2)


def recorded(sessions: sessionmaker[Session], workflow_id: str) -> HealingRecord:
    record = KnowledgeBase(sessions).get_healing(workflow_id)
    assert record is not None, f"no healings row for {workflow_id}"
    return record


async def test_a_healing_outlasts_a_database_outage_then_heals_and_records(
    client: Client,
    task_queue: str,
    target: DemoStack,
    private_postgres: PrivatePostgres,
    kb_sessions: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    door = Healings(client, None, task_queue=task_queue)
    # The outage hides the metrics, traces and history evidence (soft: missing, not failed),
    # which lowers the crash's diagnosis below the default gate's 0.7: a human would be asked.
    # This test is about the reads; approvals are test_healing_e2e's and test_after_acting's.
    async with outage_worker(
        client,
        task_queue,
        target,
        kb_sessions,
        tmp_path,
        read_retry_max_s=600,
        approval_min_confidence=0.5,
    ):
        # Down before the healing starts: every read of it meets the outage, whatever the
        # worker's speed (evidence is soft and goes missing; planning must wait).
        async with outage(private_postgres):
            down_since = time.monotonic()
            started = await start_healing(client, fault_for(target), task_queue=task_queue)
            handle = client.get_workflow_handle(started.workflow_id, result_type=HealingStatus)
            await asyncio.sleep(OUTAGE_S - (time.monotonic() - down_since))

            # A minute on: still planning, the knowledge base read retried past the old limit.
            assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
            waiting = await door.show(started.workflow_id)
            assert waiting.outcome is None
            assert waiting.phase == HealingPhase.PLANNING
            assert waiting.diagnosis is not None
            assert waiting.diagnosis.root_cause == "process_crashed"
            missing = {m.source for m in waiting.diagnosis.missing}
            assert {"metrics", "traces", "history"} <= missing, waiting.diagnosis.missing
            read = (await pending_activities(handle))[FIND_SOLUTIONS.name]
            assert read.attempt > 5, read
            assert target.health() is None  # nothing acted yet

        result = await asyncio.wait_for(handle.result(), timeout=90)

    assert result.outcome == HealingOutcome.HEALED, result.outcome_detail
    assert target.health() == 200
    assert target.restarts() == 1
    assert [s.action for s in result.steps if not s.compensation] == ["process.restart"]
    record = recorded(kb_sessions, started.workflow_id)
    assert (record.run_id, record.outcome) == (result.run_id, "healed")
    assert record.outcome_detail == result.outcome_detail
    assert len(record.steps) == len(result.steps)
    shown = await door.show(started.workflow_id)  # what `selfheal show` prints
    assert (shown.outcome, shown.phase) == (HealingOutcome.HEALED, HealingPhase.HEALED)
    row = await listed(door, started.workflow_id, status="COMPLETED")  # `selfheal list`
    assert (row.outcome, row.phase) == ("healed", "healed")


async def test_an_outage_longer_than_the_read_retries_escalates_and_is_recorded_after(
    client: Client,
    task_queue: str,
    target: DemoStack,
    private_postgres: PrivatePostgres,
    kb_sessions: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    door = Healings(client, None, task_queue=task_queue)
    async with outage_worker(
        client, task_queue, target, kb_sessions, tmp_path, read_retry_max_s=10
    ):
        async with outage(private_postgres):
            started = await start_healing(client, fault_for(target), task_queue=task_queue)
            handle = client.get_workflow_handle(started.workflow_id, result_type=HealingStatus)

            # The outcome comes while the database is still down (the door raises for a healing
            # that ended without one): escalated, naming the phase and the error.
            status = await asyncio.wait_for(door.outcome(started.workflow_id), timeout=40)
            assert status.outcome == HealingOutcome.ESCALATED
            detail = status.outcome_detail
            assert detail.startswith("planning failed: KnowledgeBaseError: "), detail
            assert "cannot find solutions" in detail and private_postgres.socket_dir in detail
            assert status.diagnosis is not None
            assert status.diagnosis.root_cause == "process_crashed"
            assert status.candidates == [] and status.steps == []

            # Its audit waits for the database: the workflow retries it rather than end.
            await asyncio.sleep(8)
            assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
            retrying = await pending_activities(handle)
            assert retrying, "nothing is retried while the database is down"
            assert all(p.attempt > 1 for p in retrying.values()), retrying

        result = await asyncio.wait_for(handle.result(), timeout=90)  # not a failed workflow

    assert isinstance(result, HealingStatus)
    assert result.outcome == HealingOutcome.ESCALATED
    assert result.outcome_detail == status.outcome_detail
    assert target.restarts() == 0 and target.health() is None  # nothing was acted on
    record = recorded(kb_sessions, started.workflow_id)
    assert (record.run_id, record.outcome) == (result.run_id, "escalated")
    assert record.outcome_detail == result.outcome_detail
    shown = await door.show(started.workflow_id)
    assert (shown.outcome, shown.phase) == (HealingOutcome.ESCALATED, HealingPhase.ESCALATED)
    row = await listed(door, started.workflow_id, status="COMPLETED")
    assert (row.outcome, row.phase) == ("escalated", "escalated")
