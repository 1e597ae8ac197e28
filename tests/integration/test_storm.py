"""Alert storms cost one healing: after its outcome, a healing whose fault is still firing keeps
answering for its fingerprint for the suppression window, counting repeated reports and starting
nothing; it ends when the window passes or the fault resolves, and only then may a report start
a new healing. Real Temporal dev server, the door, stand-in activities."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from temporalio.client import Client, WorkflowExecutionStatus

from selfheal.core.catalog import ServiceCatalog
from selfheal.domain import Fault, HealingOutcome, HealingPolicy, HealingStatus
from selfheal.healings import Healings
from tests.integration.standins import Scenario
from tests.integration.test_workflow_logic import running, status_when
from tests.support import add_service, door_for

pytestmark = pytest.mark.integration

WINDOW_S = 3.0


def storm_world(client: Client, task_queue: str) -> tuple[Healings, Fault, Scenario]:
    catalog = ServiceCatalog()
    service = add_service(catalog, f"storm-{uuid.uuid4().hex[:8]}", "api")
    door = door_for(client, task_queue, catalog)
    door._coalescer._interval_s = 0.05  # keep the test quick; the fold itself is unit-tested
    policy = HealingPolicy(stabilization_window_s=0, probe_interval_s=1, suppression_s=WINDOW_S)
    return door, Fault(service=service, type="errors_high"), Scenario(policy=policy)


async def healed(door: Healings, workflow_id: str) -> HealingStatus:
    status = await asyncio.wait_for(door.outcome(workflow_id, poll_s=0.1), 30)
    assert status.outcome == HealingOutcome.HEALED
    return status


async def test_reports_after_the_outcome_are_counted_and_start_nothing(
    client: Client, task_queue: str
) -> None:
    door, fault, scenario = storm_world(client, task_queue)
    async with running(client, task_queue, scenario):
        first = await door.report(fault)
        await healed(door, first.workflow_id)
        handle = client.get_workflow_handle(first.workflow_id, result_type=HealingStatus)
        await status_when(handle, lambda s: s.suppressed_until is not None)
        reports = await asyncio.gather(*(door.report(fault) for _ in range(25)))
        assert {(r.workflow_id, r.run_id) for r in reports} == {(first.workflow_id, first.run_id)}
        assert {r.kind for r in reports} == {"attached"}
        assert "has its outcome" in reports[-1].reason  # and its repeats now fold over 2 intervals
        assert door._coalescer._slow  # the door spaces that fingerprint's calls further
        after = await status_when(handle, lambda s: s.reports_after_outcome == 25)
        assert after.occurrences == 26 and after.outcome == HealingOutcome.HEALED
        assert scenario.journal.count("run:restart") == 1  # acted once for the whole storm

        # the window passes: the healing ends with its count, and a new report starts anew
        final = await asyncio.wait_for(handle.result(), WINDOW_S + 10)
        assert final.reports_after_outcome == 25
        again = await door.report(fault)
        assert again.kind == "started" and again.run_id != first.run_id
        await healed(door, again.workflow_id)


async def test_a_resolved_fault_ends_the_suppression_for_a_new_episode(
    client: Client, task_queue: str
) -> None:
    door, fault, scenario = storm_world(client, task_queue)
    async with running(client, task_queue, scenario):
        first = await door.report(fault)
        await healed(door, first.workflow_id)
        handle = client.get_workflow_handle(first.workflow_id, run_id=first.run_id)
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
        assert await door.resolved(fault, note="alert resolved")
        await asyncio.wait_for(handle.result(), 10)  # ends at once, not after the window
        second = await door.report(fault)  # fired again: a new episode, a new healing
        assert second.kind == "started" and second.run_id != first.run_id
        await healed(door, second.workflow_id)


async def test_a_fault_resolved_before_the_outcome_is_not_suppressed(
    client: Client, task_queue: str
) -> None:
    door, fault, scenario = storm_world(client, task_queue)
    scenario.step_delay_s = 1.0
    async with running(client, task_queue, scenario):
        first = await door.report(fault)
        handle = client.get_workflow_handle(first.workflow_id, result_type=HealingStatus)
        await status_when(handle, lambda s: bool(s.steps) or s.phase.value == "executing")
        assert await door.resolved(fault)
        result = await asyncio.wait_for(handle.result(), 15)  # no window to wait out
        assert result.outcome == HealingOutcome.HEALED and result.suppressed_until is None
