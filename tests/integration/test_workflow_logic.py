"""HealingWorkflow's orchestration on the real Temporal dev server, with stand-in activities
that journal their calls (see standins.py). End-to-end healings with the real activities are in
test_healing_e2e.py."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from selfheal.core.log_context import HealingLogInterceptor
from selfheal.domain import (
    Approval,
    ApprovalDecision,
    Diagnosis,
    Fault,
    HealingOutcome,
    HealingPhase,
    HealingPolicy,
    HealingStatus,
    Hypothesis,
    RiskLevel,
    StepStatus,
)
from selfheal.domain.payloads import GuardrailDecision
from selfheal.healings.start import report_resolved, start_healing
from selfheal.worker import workflow_runner
from selfheal.workflows.healing import HealingWorkflow
from tests.integration.standins import Scenario, plan

pytestmark = pytest.mark.integration


def new_fault(**overrides: object) -> Fault:
    fields: dict[str, object] = {
        "service": "demo",
        "type": "health_check_failed",
        "target": f"t-{uuid.uuid4().hex[:8]}",
    }
    fields.update(overrides)
    return Fault.model_validate(fields)


@asynccontextmanager
async def running(client: Client, task_queue: str, scenario: Scenario) -> AsyncIterator[None]:
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[HealingWorkflow],
        activities=scenario.activities(),
        workflow_runner=workflow_runner(),
        # A cancelled activity (the side-effect watch) learns of it at its next heartbeat sent
        # to the server: throttled to 0.8 x its heartbeat timeout by default, during which the
        # running activity keeps the time-skipping server from skipping.
        max_heartbeat_throttle_interval=timedelta(seconds=0.5),
        default_heartbeat_throttle_interval=timedelta(seconds=0.5),
        # as build_worker's: a watch that outlives its healing is no warning on stderr
        interceptors=[HealingLogInterceptor()],
    ):
        yield


async def heal(client: Client, task_queue: str, fault: Fault, **kwargs: bool) -> HealingStatus:
    started = await start_healing(client, fault, task_queue=task_queue, **kwargs)
    handle = client.get_workflow_handle(started.workflow_id, result_type=HealingStatus)
    return await asyncio.wait_for(handle.result(), timeout=60)


async def status_when(
    handle: WorkflowHandle[object, object],
    predicate: Callable[[HealingStatus], bool],
    within_s: float = 30,
) -> HealingStatus:
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        status = await handle.query("status", result_type=HealingStatus)
        if predicate(status):
            return status
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"status never matched; last phase {status.phase}")
        await asyncio.sleep(0.1)


async def test_healing_heals_and_records_once(client: Client, task_queue: str) -> None:
    scenario = Scenario(plans=[plan("restart", "stop", "start")])
    async with running(client, task_queue, scenario):
        result = await heal(client, task_queue, new_fault())
    assert result.outcome == HealingOutcome.HEALED
    assert result.phase == HealingPhase.HEALED
    assert scenario.journal == ["run:stop", "run:start", "validate:ok"]
    assert [s.status for s in result.steps] == [StepStatus.SUCCEEDED, StepStatus.SUCCEEDED]
    assert result.time_to_recover_s is not None and result.time_to_recover_s > 0
    assert len(scenario.recorded) == 1
    attempts = scenario.recorded[0].attempts
    assert [(a.solution_name, a.succeeded) for a in attempts] == [("restart", True)]
    assert not result.approval_required


async def test_failed_step_compensates_in_reverse_then_next_candidate(
    client: Client, task_queue: str
) -> None:
    scenario = Scenario(
        plans=[plan("first", "a1", "a2", "a3"), plan("second", "b1")], fail_steps={"a3"}
    )
    async with running(client, task_queue, scenario):
        result = await heal(client, task_queue, new_fault())
    assert scenario.journal == [
        "run:a1",
        "run:a2",
        "run:a3",
        "undo:a3",  # registered before it ran: a step that failed may have half-applied
        "undo:a2",
        "undo:a1",
        "run:b1",
        "validate:ok",
    ]
    assert result.outcome == HealingOutcome.HEALED
    assert result.solution_name == "second"
    failed = [s for s in result.steps if s.status == StepStatus.FAILED]
    assert [s.name for s in failed] == ["a3"] and "a3 broke" in (failed[0].error or "")
    attempts = scenario.recorded[0].attempts
    assert [(a.solution_name, a.succeeded) for a in attempts] == [
        ("first", False),
        ("second", True),
    ]


async def test_validation_failure_compensates_and_escalates_when_none_left(
    client: Client, task_queue: str
) -> None:
    scenario = Scenario(
        plans=[plan("only", "x1", "x2")],
        unhealthy_after={"only"},
    )
    async with running(client, task_queue, scenario):
        result = await heal(client, task_queue, new_fault())
    assert scenario.journal == ["run:x1", "run:x2", "validate:bad", "undo:x2", "undo:x1"]
    assert result.outcome == HealingOutcome.ESCALATED
    assert "validation failed" in result.outcome_detail
    assert [(a.solution_name, a.succeeded) for a in scenario.recorded[0].attempts] == [
        ("only", False)
    ]


async def test_candidates_are_capped_by_policy(client: Client, task_queue: str) -> None:
    scenario = Scenario(
        policy=HealingPolicy(max_candidates=2, stabilization_window_s=0),
        plans=[plan("p1", "s1"), plan("p2", "s2"), plan("p3", "s3")],
        fail_steps={"s1", "s2", "s3"},
    )
    async with running(client, task_queue, scenario):
        result = await heal(client, task_queue, new_fault())
    assert [e for e in scenario.journal if e.startswith("run:")] == ["run:s1", "run:s2"]
    assert result.outcome == HealingOutcome.ESCALATED


async def test_low_confidence_waits_for_approval_then_heals(
    client: Client, task_queue: str
) -> None:
    scenario = Scenario(confidence=0.5)
    async with running(client, task_queue, scenario):
        started = await start_healing(client, new_fault(), task_queue=task_queue)
        handle = client.get_workflow_handle(started.workflow_id, result_type=HealingStatus)
        waiting = await status_when(handle, lambda s: s.awaiting_approval)
        assert waiting.phase == HealingPhase.AWAITING_APPROVAL
        assert any("confidence 0.50" in r for r in waiting.approval_reasons)
        assert scenario.journal == []  # nothing runs before the decision

        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update("approve", ApprovalDecision(by="  ", reason="x"))
        approval = await handle.execute_update(
            "approve", ApprovalDecision(by="alice", reason="looks right"), result_type=Approval
        )
        assert approval.approved and approval.by == "alice"
        result = await handle.result()
        with pytest.raises(RPCError, match="already completed"):  # nothing to approve any more
            await handle.execute_update("approve", ApprovalDecision(by="bob"))
    assert result.outcome == HealingOutcome.HEALED
    assert result.approval is not None and result.approval.by == "alice"
    assert result.approval.reason == "looks right"


async def test_high_risk_plan_rejected(client: Client, task_queue: str) -> None:
    scenario = Scenario(plans=[plan("drain", "cordon", risk=RiskLevel.HIGH)])
    async with running(client, task_queue, scenario):
        started = await start_healing(client, new_fault(), task_queue=task_queue)
        handle = client.get_workflow_handle(started.workflow_id, result_type=HealingStatus)
        waiting = await status_when(handle, lambda s: s.awaiting_approval)
        assert any("risk high" in r for r in waiting.approval_reasons)
        await handle.execute_update("reject", ApprovalDecision(by="carol", reason="peak hour"))
        result = await handle.result()
    assert result.outcome == HealingOutcome.REJECTED
    assert "carol" in result.outcome_detail and "peak hour" in result.outcome_detail
    assert scenario.journal == []
    assert scenario.recorded[0].status.approval is not None
    assert scenario.recorded[0].status.approval.approved is False


async def test_approval_by_signal_for_clients_without_updates(
    client: Client, task_queue: str
) -> None:
    scenario = Scenario()
    async with running(client, task_queue, scenario):
        started = await start_healing(
            client, new_fault(), task_queue=task_queue, require_approval=True
        )
        handle = client.get_workflow_handle(started.workflow_id, result_type=HealingStatus)
        await status_when(handle, lambda s: s.awaiting_approval)
        await handle.signal("approve", ApprovalDecision(by=""))  # ignored: no approver
        await asyncio.sleep(0.3)
        assert (await handle.query("status", result_type=HealingStatus)).awaiting_approval
        await handle.signal("approve", ApprovalDecision(by="dave", reason="ok"))
        result = await handle.result()
    assert result.outcome == HealingOutcome.HEALED
    assert result.approval is not None and result.approval.by == "dave"


async def test_approval_times_out_with_nothing_executed(
    temporal_env: WorkflowEnvironment, task_queue: str
) -> None:
    # temporal_env.client skips time while the workflow is idle: 30 minutes pass at once.
    scenario = Scenario(confidence=0.3)
    async with running(temporal_env.client, task_queue, scenario):
        result = await heal(temporal_env.client, task_queue, new_fault())
    assert result.outcome == HealingOutcome.APPROVAL_TIMEOUT
    assert scenario.journal == []
    assert result.steps == []
    assert len(scenario.recorded) == 1


async def test_second_start_attaches_to_running_healing(client: Client, task_queue: str) -> None:
    scenario = Scenario(confidence=0.5)
    fault = new_fault()
    async with running(client, task_queue, scenario):
        first = await start_healing(client, fault, task_queue=task_queue)
        second = await start_healing(client, fault, task_queue=task_queue)
        third = await start_healing(client, fault, task_queue=task_queue)
        assert first.workflow_id == second.workflow_id == third.workflow_id
        handle = client.get_workflow_handle(first.workflow_id, result_type=HealingStatus)
        status = await status_when(handle, lambda s: s.occurrences == 3 and s.awaiting_approval)
        assert status.run_id == first.run_id
        await handle.execute_update("reject", ApprovalDecision(by="erin"))
        await handle.result()


async def test_fault_resolved_before_action(client: Client, task_queue: str) -> None:
    scenario = Scenario(confidence=0.5)
    fault = new_fault()
    async with running(client, task_queue, scenario):
        started = await start_healing(client, fault, task_queue=task_queue)
        handle = client.get_workflow_handle(started.workflow_id, result_type=HealingStatus)
        await status_when(handle, lambda s: s.awaiting_approval)
        await report_resolved(client, fault, note="alert resolved")
        result = await handle.result()
    assert result.outcome == HealingOutcome.RESOLVED_BEFORE_ACTION
    # the evidence was asked before the report was believed
    assert scenario.journal == ["resolved-check:ok"]
    assert result.resolved_at is not None


async def test_resolved_after_a_mutating_step_only_counts(client: Client, task_queue: str) -> None:
    scenario = Scenario(plans=[plan("slow", "s1", "s2")], step_delay_s=1.0)
    fault = new_fault()
    async with running(client, task_queue, scenario):
        started = await start_healing(client, fault, task_queue=task_queue)
        handle = client.get_workflow_handle(started.workflow_id, result_type=HealingStatus)
        await status_when(handle, lambda s: len(s.steps) >= 1)
        await report_resolved(client, fault)
        result = await handle.result()
    assert result.outcome == HealingOutcome.HEALED
    assert result.resolved_at is not None
    assert scenario.journal[:2] == ["run:s1", "run:s2"]


async def test_dry_run_runs_nothing_and_ends_dry_run(client: Client, task_queue: str) -> None:
    scenario = Scenario(plans=[plan("restart", "r1")])
    async with running(client, task_queue, scenario):
        result = await heal(client, task_queue, new_fault(), dry_run=True)
    assert result.outcome == HealingOutcome.DRY_RUN
    assert [s.status for s in result.steps] == [StepStatus.DRY_RUN]
    assert "validate:ok" not in scenario.journal


async def test_search_attributes_follow_the_healing(client: Client, task_queue: str) -> None:
    scenario = Scenario()
    fault = new_fault(service="checkout")
    async with running(client, task_queue, scenario):
        await heal(client, task_queue, fault)
    described = await client.get_workflow_handle(fault.workflow_id).describe()
    attrs = {p.key.name: p.value for p in described.typed_search_attributes.search_attributes}
    assert attrs["HealingPhase"] == "healed"
    assert attrs["HealingOutcome"] == "healed"
    assert attrs["FaultService"] == "checkout"
    assert attrs["RootCause"] == "process_crashed"
    assert attrs["RiskLevel"] == "medium"


# ------------------------------------------------------------------------------- guardrails


def refuse(rule: str, *, retry_after_s: float | None = None, resolved: bool = False) -> Any:
    return GuardrailDecision(
        allowed=False,
        rule=rule,
        reason=f"{rule} says no",
        retry_after_s=retry_after_s,
        fault_resolved=resolved,
    )


async def test_guardrail_at_start_escalates_with_nothing_run(
    client: Client, task_queue: str
) -> None:
    scenario = Scenario(guardrails={"start": [refuse("cooldown")]})
    async with running(client, task_queue, scenario):
        result = await heal(client, task_queue, new_fault())
    assert result.outcome == HealingOutcome.ESCALATED
    assert result.outcome_detail == "guardrail cooldown: cooldown says no"
    assert [e for e in scenario.journal if not e.startswith("guard")] == []
    assert scenario.released == [result.workflow_id]


async def test_allowlist_refusal_moves_to_next_candidate_without_blame(
    client: Client, task_queue: str
) -> None:
    scenario = Scenario(
        plans=[plan("first", "a1", "a2"), plan("second", "b1")],
        guardrails={"a2": [refuse("allowlist")]},
    )
    async with running(client, task_queue, scenario):
        result = await heal(client, task_queue, new_fault())
    assert scenario.journal == ["run:a1", "guard:a2", "undo:a1", "run:b1", "validate:ok"]
    assert result.outcome == HealingOutcome.HEALED
    refused = [s for s in result.steps if s.status == StepStatus.REFUSED]
    assert [(s.name, s.error) for s in refused] == [("a2", "allowlist: allowlist says no")]
    # A refusal is not a failure of the solution: only the healing candidate is counted.
    assert [(a.solution_name, a.succeeded) for a in scenario.recorded[0].attempts] == [
        ("second", True)
    ]


async def test_budget_refusal_mid_plan_compensates_and_escalates(
    client: Client, task_queue: str
) -> None:
    scenario = Scenario(
        plans=[plan("first", "a1", "a2"), plan("second", "b1")],
        guardrails={"a2": [refuse("budget")]},
    )
    async with running(client, task_queue, scenario):
        result = await heal(client, task_queue, new_fault())
    assert scenario.journal == ["run:a1", "guard:a2", "undo:a1"]
    assert result.outcome == HealingOutcome.ESCALATED
    assert "refused by budget" in result.outcome_detail


async def test_kill_switch_waits_then_proceeds(client: Client, task_queue: str) -> None:
    scenario = Scenario(
        guardrails={
            "restart": [
                refuse("kill_switch", retry_after_s=1),
                GuardrailDecision(allowed=True),
            ]
        }
    )
    async with running(client, task_queue, scenario):
        started = await start_healing(client, new_fault(), task_queue=task_queue)
        handle = client.get_workflow_handle(started.workflow_id, result_type=HealingStatus)
        waiting = await status_when(handle, lambda s: s.waiting_on is not None)
        assert waiting.waiting_on == "kill_switch: kill_switch says no"
        result = await handle.result()
    assert result.outcome == HealingOutcome.HEALED
    assert result.waiting_on is None
    assert scenario.journal == ["guard:restart", "guard:restart", "run:restart", "validate:ok"]


async def test_kill_switch_wait_is_bounded(
    temporal_env: WorkflowEnvironment, task_queue: str
) -> None:
    scenario = Scenario(
        policy=HealingPolicy(stabilization_window_s=0, guardrail_wait_max_s=600),
        guardrails={"restart": [refuse("kill_switch", retry_after_s=60)]},
    )
    async with running(temporal_env.client, task_queue, scenario):
        result = await heal(temporal_env.client, task_queue, new_fault())
    assert result.outcome == HealingOutcome.ESCALATED
    assert "kill_switch" in result.outcome_detail
    assert scenario.journal.count("guard:restart") == 11  # at 0, 60, ..., 600 s
    assert "run:restart" not in scenario.journal


async def test_fault_resolved_before_first_step(client: Client, task_queue: str) -> None:
    scenario = Scenario(guardrails={"restart": [refuse("fault_resolved", resolved=True)]})
    async with running(client, task_queue, scenario):
        result = await heal(client, task_queue, new_fault())
    assert result.outcome == HealingOutcome.RESOLVED_BEFORE_ACTION
    assert "run:restart" not in scenario.journal


async def test_fault_resolved_mid_plan_skips_to_validation(client: Client, task_queue: str) -> None:
    scenario = Scenario(
        plans=[plan("p", "s1", "s2", "s3")],
        guardrails={"s2": [refuse("fault_resolved", resolved=True)]},
    )
    async with running(client, task_queue, scenario):
        result = await heal(client, task_queue, new_fault())
    assert scenario.journal == ["run:s1", "guard:s2", "validate:ok"]
    assert result.outcome == HealingOutcome.HEALED
    assert result.resolved_at is not None


async def test_dry_run_lists_refusals_and_runs_nothing(client: Client, task_queue: str) -> None:
    scenario = Scenario(plans=[plan("p", "s1", "s2")], guardrails={"s1": [refuse("allowlist")]})
    async with running(client, task_queue, scenario):
        result = await heal(client, task_queue, new_fault(), dry_run=True)
    assert result.outcome == HealingOutcome.DRY_RUN
    assert [(s.name, s.status) for s in result.steps] == [
        ("s1", StepStatus.REFUSED),
        ("s2", StepStatus.DRY_RUN),
    ]
    assert scenario.released == []  # a dry run takes no target lock


def moved_diagnosis(fault: Fault, confidences: tuple[float, float] = (0.8, 0.1)) -> Diagnosis:
    """An alert on ``fault.service`` whose origin is ``inventory``: act on inventory."""
    acting = fault.model_copy(update={"service": "inventory", "target": "inventory"})
    return Diagnosis(
        root_cause="dependency_failing",
        confidence=confidences[0],
        rule="dependency-origin",
        component="inventory",
        acting_on=acting,
        hypotheses=[
            Hypothesis(root_cause="dependency_failing", component="inventory",
                       confidence=confidences[0], rule="dependency-origin"),
            Hypothesis(root_cause="dependency_degraded", component=fault.service,
                       confidence=confidences[1], rule="dependency-slow"),
        ],
    )  # fmt: skip


async def test_the_plan_acts_on_the_diagnosed_component_and_validates_the_symptom(
    client: Client, task_queue: str
) -> None:
    fault = new_fault(service="checkout")
    scenario = Scenario(diagnosis=moved_diagnosis(fault), plans=[plan("restart", "restart")])
    async with running(client, task_queue, scenario):
        result = await heal(client, task_queue, fault)
    assert result.outcome == HealingOutcome.HEALED
    assert not result.approval_required
    # planned, guarded and run on inventory; the recheck and the validation ask about checkout
    assert scenario.seen == [
        "plan:inventory",
        "guard:start:inventory:checkout",
        "guard:restart:inventory:checkout",
        "step:restart:inventory",
        "validate:checkout",
    ]
    assert result.diagnosis is not None and result.diagnosis.acting_on is not None
    assert [h.component for h in result.diagnosis.hypotheses] == ["inventory", "checkout"]


async def test_close_hypotheses_ask_a_human(client: Client, task_queue: str) -> None:
    fault = new_fault(service="checkout")
    scenario = Scenario(diagnosis=moved_diagnosis(fault, (0.75, 0.7)))
    async with running(client, task_queue, scenario):
        started = await start_healing(client, fault, task_queue=task_queue)
        handle = client.get_workflow_handle(started.workflow_id, result_type=HealingStatus)
        waiting = await status_when(handle, lambda s: s.awaiting_approval)
        assert scenario.journal == []
        [reason] = waiting.approval_reasons
        assert reason == (
            "the top two hypotheses are close: dependency_failing on inventory 0.75, "
            "dependency_degraded on checkout 0.70"
        )
        await handle.execute_update("reject", ApprovalDecision(by="alice", reason="look first"))
        result = await handle.result()
    assert result.outcome == HealingOutcome.REJECTED
