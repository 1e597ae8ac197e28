"""After acting (issue 10), the workflow's side, on the real Temporal dev server with stand-in
activities (standins.py): side-effect guards that compensate and move on, the breaker kept over a
degradation (durable across a worker restart), the service's approval policy, reminders,
resolutions checked against the evidence, escalation on an unexpected error, and the PagerDuty
resolve after an escalation."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from selfheal.domain import (
    Approval,
    ApprovalDecision,
    HealingOutcome,
    HealingPhase,
    HealingPolicy,
    HealingStatus,
    RiskLevel,
    StepStatus,
)
from selfheal.domain.criteria import ActionApproval, ApprovalSpec, BreakerSpec, GuardBreach
from selfheal.healings.start import report_resolved, start_healing
from tests.integration.standins import Scenario, degrade_plan, plan
from tests.integration.test_workflow_logic import heal, new_fault, running, status_when

pytestmark = pytest.mark.integration


def quick_policy(**overrides: object) -> HealingPolicy:
    fields: dict[str, object] = {"stabilization_window_s": 0, "probe_interval_s": 1}
    fields.update(overrides)
    return HealingPolicy.model_validate(fields)


def breach(guard: str = "latency_p99_rise") -> GuardBreach:
    return GuardBreach(
        guard=guard,
        service="checkout",
        expr="latency_p99 > 0.3",
        value=0.9,
        baseline=0.1,
        detail="p99 up 0.8 s",
        at=datetime.now(UTC),
    )


# --------------------------------------------------------------------------- side effects


async def test_a_tripped_guard_compensates_and_the_next_candidate_heals(
    client: Client, task_queue: str
) -> None:
    scenario = Scenario(
        plans=[plan("scale-up", "s1", "s2"), plan("restart", "r1")],
        breach_after={"s1": breach()},
        step_delay_s=0.3,
    )
    async with running(client, task_queue, scenario):
        result = await heal(client, task_queue, new_fault())
    assert result.outcome == HealingOutcome.HEALED
    assert result.solution_name == "restart"
    # s1 ran, the guard tripped: s2 never ran, s1 was undone, then the next candidate
    assert "run:s2" not in scenario.journal
    assert scenario.journal.index("undo:s1") < scenario.journal.index("run:r1")
    assert [b.guard for b in result.breaches] == ["latency_p99_rise"]
    assert result.breaches[0].value == 0.9 and result.breaches[0].baseline == 0.1
    [recorded] = scenario.recorded
    assert [(a.solution_name, a.succeeded) for a in recorded.attempts] == [
        ("scale-up", False),  # a breach counts as a failure of the solution
        ("restart", True),
    ]


async def test_a_guard_tripped_on_the_last_candidate_escalates(
    client: Client, task_queue: str
) -> None:
    scenario = Scenario(
        plans=[plan("scale-up", "s1")], breach_after={"s1": breach("server_errors")}
    )
    async with running(client, task_queue, scenario):
        result = await heal(client, task_queue, new_fault())
    assert result.outcome == HealingOutcome.ESCALATED
    assert "side-effect guard server_errors tripped on checkout" in result.outcome_detail
    assert "undo:s1" in scenario.journal
    undone = [s for s in result.steps if s.compensation]
    assert [s.status for s in undone] == [StepStatus.COMPENSATED]


# ------------------------------------------------------------------------------- breaker


@pytest.mark.parametrize("failing_probes", [0, 2])
async def test_breaker_closes_once_the_dependency_answers(
    temporal_env: WorkflowEnvironment, task_queue: str, failing_probes: int
) -> None:
    """Open 30 s, half-open probe; closed after one cycle, or after three with backoff
    (durable timers, skipped by the time-skipping server)."""
    scenario = Scenario(
        policy=quick_policy(),
        plans=[degrade_plan()],
        dependency_healthy=[False] * failing_probes + [True],
    )
    async with running(temporal_env.client, task_queue, scenario):
        result = await heal(temporal_env.client, task_queue, new_fault(service="checkout"))
    assert result.outcome == HealingOutcome.HEALED, result.outcome_detail
    breaker = result.breaker
    assert breaker is not None and breaker.state == "closed"
    assert breaker.cycles == failing_probes + 1
    assert f"breaker closed after {failing_probes + 1} cycle(s)" in result.outcome_detail
    states = [e.state for e in breaker.history]
    assert states[0] == "open" and states[-1] == "closed"
    assert states.count("half_open") == failing_probes + 1
    # the switch was restored by the step's compensation, once, and the symptom checked again
    assert scenario.journal[-3:] == ["probe:ok", "undo:fallback", "validate:ok"]
    assert scenario.journal.count("undo:fallback") == 1
    # exponential backoff: each open period after a failed probe doubles (30, 60, ...)
    reopened = [e.detail for e in breaker.history if "open again" in e.detail]
    assert reopened == [
        f"connection refused; open again for {30 * 2 ** (i + 1):g}s" for i in range(failing_probes)
    ]
    # time to recover is when validation passed, not when the breaker closed
    assert result.time_to_recover_s is not None and result.time_to_recover_s < 30


async def test_a_half_open_trial_that_fails_opens_the_breaker_again(
    temporal_env: WorkflowEnvironment, task_queue: str
) -> None:
    """The dependency answers its probe, but with the switch restored the reported fault comes
    back: the degradation is applied again, and the breaker closes on a later cycle."""
    scenario = Scenario(
        policy=quick_policy(),
        plans=[degrade_plan()],
        dependency_healthy=[True],
        validation_answers=[True, False, True],  # healed; first trial fails; second holds
    )
    async with running(temporal_env.client, task_queue, scenario):
        result = await heal(temporal_env.client, task_queue, new_fault(service="checkout"))
    assert result.outcome == HealingOutcome.HEALED, result.outcome_detail
    assert result.breaker is not None and result.breaker.state == "closed"
    assert result.breaker.cycles == 2
    assert scenario.journal == [
        "run:fallback", "validate:ok",
        "probe:ok", "undo:fallback", "validate:bad", "run:fallback",
        "probe:ok", "undo:fallback", "validate:ok",
    ]  # fmt: skip
    reopened = [e.detail for e in result.breaker.history if "open again" in e.detail]
    assert len(reopened) == 1 and "with the switch restored" in reopened[0]


async def test_breaker_left_open_escalates_after_max_cycles(
    temporal_env: WorkflowEnvironment, task_queue: str
) -> None:
    scenario = Scenario(
        policy=quick_policy(breaker_max_cycles=3),
        plans=[degrade_plan(BreakerSpec(open_s=10, dependency="inventory"))],
        dependency_healthy=[False],
    )
    async with running(temporal_env.client, task_queue, scenario):
        result = await heal(temporal_env.client, task_queue, new_fault(service="checkout"))
    assert result.outcome == HealingOutcome.ESCALATED
    assert "inventory is still unhealthy after 3 half-open probe(s)" in result.outcome_detail
    assert "left open" in result.outcome_detail
    assert result.breaker is not None and result.breaker.state == "open"
    assert scenario.probes == 3
    assert "undo:fallback" not in scenario.journal  # the degradation stays on
    # the solution did heal the symptom: it counts as a success
    assert [a.succeeded for a in scenario.recorded[0].attempts] == [True]


async def test_no_breaker_for_rate_limit_or_when_disabled(client: Client, task_queue: str) -> None:
    for candidate in (degrade_plan(mode="rate_limit"), degrade_plan(BreakerSpec(enabled=False))):
        scenario = Scenario(plans=[candidate])
        async with running(client, task_queue, scenario):
            result = await heal(client, task_queue, new_fault(service="checkout"))
        assert result.outcome == HealingOutcome.HEALED
        assert result.breaker is None and scenario.probes == 0


async def test_breaker_survives_a_worker_restart_while_open(
    client: Client, task_queue: str
) -> None:
    scenario = Scenario(
        plans=[degrade_plan(BreakerSpec(open_s=2))], dependency_healthy=[False, True]
    )
    fault = new_fault(service="checkout")
    async with running(client, task_queue, scenario):
        started = await start_healing(client, fault, task_queue=task_queue)
        handle = client.get_workflow_handle(started.workflow_id, result_type=HealingStatus)
        status = await status_when(
            handle, lambda s: s.breaker is not None and s.breaker.state == "open"
        )
        assert status.phase == HealingPhase.BREAKER_OPEN
        assert status.breaker is not None and status.breaker.open_until is not None
    # no worker at all while the breaker is open: its timer fires on the server
    await asyncio.sleep(3)
    async with running(client, task_queue, scenario):
        result = await asyncio.wait_for(handle.result(), timeout=60)
    assert result.outcome == HealingOutcome.HEALED
    assert result.breaker is not None and result.breaker.cycles == 2
    assert scenario.journal.count("run:fallback") == 1  # the step was not run again


# ------------------------------------------------------------------------------ approval


async def test_always_action_needs_approval_from_a_listed_approver(
    client: Client, task_queue: str
) -> None:
    scenario = Scenario(
        policy=quick_policy(
            approval=ApprovalSpec(always=["test.*"], approvers=["name:alice", "name:bob"])
        ),
        confidence=0.99,
        plans=[plan("restart", "r1", risk=RiskLevel.LOW)],
    )
    async with running(client, task_queue, scenario):
        started = await start_healing(client, new_fault(), task_queue=task_queue)
        handle = client.get_workflow_handle(started.workflow_id, result_type=HealingStatus)
        waiting = await status_when(handle, lambda s: s.awaiting_approval)
        assert waiting.approval_reasons == [
            "action test.act always needs approval (service policy)"
        ]
        assert waiting.approvers == ["name:alice", "name:bob"]
        assert waiting.awaiting_since is not None
        # an approver not on the list: the update is refused, the signal dropped
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update("approve", ApprovalDecision(by="name:mallory"))
        await handle.signal("approve", ApprovalDecision(by="name:mallory"))
        await asyncio.sleep(1)
        still = await handle.query("status", result_type=HealingStatus)
        assert still.awaiting_approval and still.approval is None
        assert scenario.journal == []
        approval = await handle.execute_update(
            "approve", ApprovalDecision(by="name:bob", reason="ok"), result_type=Approval
        )
        assert approval.by == "name:bob"
        result = await handle.result()
    assert result.outcome == HealingOutcome.HEALED
    assert result.approval is not None and result.approval.by == "name:bob"


async def test_per_action_confidence_and_approvers(client: Client, task_queue: str) -> None:
    scenario = Scenario(
        policy=quick_policy(
            approval_min_confidence=0.5,
            approval=ApprovalSpec(
                approvers=["name:alice", "name:bob"],
                actions={"test.*": ActionApproval(min_confidence=0.95, approvers=["name:bob"])},
            ),
        ),
        confidence=0.9,
    )
    async with running(client, task_queue, scenario):
        started = await start_healing(client, new_fault(), task_queue=task_queue)
        handle = client.get_workflow_handle(started.workflow_id, result_type=HealingStatus)
        waiting = await status_when(handle, lambda s: s.awaiting_approval)
        assert waiting.approval_reasons == [
            "diagnosis confidence 0.90 is below 0.95 for action test.act"
        ]
        assert waiting.approvers == ["name:bob"]  # the intersection of both lists
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update("reject", ApprovalDecision(by="name:alice"))
        await handle.execute_update("reject", ApprovalDecision(by="name:bob", reason="no"))
        result = await handle.result()
    assert result.outcome == HealingOutcome.REJECTED


async def test_a_waiting_approval_is_reminded(
    temporal_env: WorkflowEnvironment, task_queue: str
) -> None:
    scenario = Scenario(
        policy=quick_policy(
            notify=True, approval_reminder_s=600, approval_timeout_s=1900, suppression_s=0
        ),
        confidence=0.5,
    )
    async with running(temporal_env.client, task_queue, scenario):
        result = await heal(temporal_env.client, task_queue, new_fault())
    assert result.outcome == HealingOutcome.APPROVAL_TIMEOUT
    # reminders at 600 s and 1200 s and 1800 s, then the timeout at 1900 s and its notification
    assert scenario.notified == ["reminder", "reminder", "reminder", "outcome"]


# ------------------------------------------------------------------- resolved, escalation


async def test_a_resolved_report_the_evidence_denies_is_recorded_and_the_healing_goes_on(
    client: Client, task_queue: str
) -> None:
    scenario = Scenario(confidence=0.5, resolved_check_healthy=False)
    fault = new_fault()
    async with running(client, task_queue, scenario):
        started = await start_healing(client, fault, task_queue=task_queue)
        handle = client.get_workflow_handle(started.workflow_id, result_type=HealingStatus)
        await status_when(handle, lambda s: s.awaiting_approval)
        await report_resolved(client, fault, note="alert resolved")
        disputed = await status_when(handle, lambda s: bool(s.resolution_disputed))
        assert disputed.awaiting_approval and disputed.outcome is None
        assert "connection refused" in disputed.resolution_disputed[0]
        assert disputed.resolved_at is None
        await handle.execute_update("approve", ApprovalDecision(by="alice"))
        result = await handle.result()
    assert result.outcome == HealingOutcome.HEALED
    assert scenario.journal[0] == "resolved-check:bad"


async def test_an_unexpected_error_escalates_recorded_and_notified(
    client: Client, task_queue: str
) -> None:
    scenario = Scenario(policy=quick_policy(notify=True, read_retry_max_s=3), fail_planning=True)
    async with running(client, task_queue, scenario):
        result = await heal(client, task_queue, new_fault())
    assert result.outcome == HealingOutcome.ESCALATED
    assert result.outcome_detail.startswith("planning failed: ")
    assert "knowledge base unreachable" in result.outcome_detail
    assert len(scenario.recorded) == 1
    assert scenario.notified == ["outcome"]


async def test_escalated_then_resolved_sends_the_resolve(client: Client, task_queue: str) -> None:
    scenario = Scenario(
        policy=quick_policy(notify=True, suppression_s=60),
        plans=[plan("restart", "r1")],
        unhealthy_after={"restart"},
    )
    fault = new_fault()
    async with running(client, task_queue, scenario):
        started = await start_healing(client, fault, task_queue=task_queue)
        handle = client.get_workflow_handle(started.workflow_id, result_type=HealingStatus)
        # the suppression window begins once the outcome is recorded and notified
        await status_when(handle, lambda s: s.suppressed_until is not None)
        assert scenario.notified == ["outcome"]
        await report_resolved(client, fault)
        result = await asyncio.wait_for(handle.result(), timeout=30)
    assert result.outcome == HealingOutcome.ESCALATED
    assert scenario.notified == ["outcome", "resolved"]
