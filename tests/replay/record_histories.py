"""Record HealingWorkflow histories for the replay test.

Histories of older versions stay, because replaying them is what catches non-determinism;
after a workflow change, record a new generation beside them:

    .venv/bin/python -m tests.replay.record_histories --suffix v7 [--only CASE ...]
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from selfheal.domain import (
    ApprovalDecision,
    Diagnosis,
    Fault,
    HealingPolicy,
    HealingStatus,
    Hypothesis,
    RecoveryPlan,
)
from selfheal.domain.criteria import ApprovalSpec, BreakerSpec, GuardBreach
from selfheal.domain.forecast import RULE_LABEL, RunForecastInput
from selfheal.domain.payloads import GuardrailDecision
from selfheal.healings.start import report_resolved, start_healing
from selfheal.worker import workflow_runner
from selfheal.workflows.forecast import ForecastWorkflow
from selfheal.workflows.healing import HealingWorkflow
from tests.integration.standins import Scenario, degrade_plan, plan
from tests.support import start_dev_server

HERE = Path(__file__).parent / "histories"

Driver = Callable[[Client, WorkflowHandle[HealingWorkflow, HealingStatus], Fault], Awaitable[None]]


async def wait_for_approval(handle: WorkflowHandle[HealingWorkflow, HealingStatus]) -> None:
    while not (await handle.query(HealingWorkflow.status)).awaiting_approval:
        await asyncio.sleep(0.1)


async def approve(
    client: Client, handle: WorkflowHandle[HealingWorkflow, HealingStatus], f: Fault
) -> None:
    await wait_for_approval(handle)
    await handle.execute_update(
        HealingWorkflow.approve, ApprovalDecision(by="alice", reason="replay")
    )


async def reject(
    client: Client, handle: WorkflowHandle[HealingWorkflow, HealingStatus], f: Fault
) -> None:
    await wait_for_approval(handle)
    await handle.execute_update(HealingWorkflow.reject, ApprovalDecision(by="bob", reason="replay"))


async def resolve(
    client: Client, handle: WorkflowHandle[HealingWorkflow, HealingStatus], f: Fault
) -> None:
    await wait_for_approval(handle)
    await report_resolved(client, f)


async def nothing(
    client: Client, handle: WorkflowHandle[HealingWorkflow, HealingStatus], f: Fault
) -> None:
    return None


async def storm_after_outcome(
    client: Client, handle: WorkflowHandle[HealingWorkflow, HealingStatus], f: Fault
) -> None:
    """Repeats after the outcome (counted, nothing started), then the fault resolves."""
    while (await handle.query(HealingWorkflow.status)).suppressed_until is None:
        await asyncio.sleep(0.1)
    for _ in range(2):
        await start_healing(client, f, task_queue=(await handle.describe()).task_queue)
    await report_resolved(client, f)


async def repeat_after_outcome(
    client: Client, handle: WorkflowHandle[HealingWorkflow, HealingStatus], f: Fault
) -> None:
    """One repeat after the outcome, then the suppression window runs out."""
    while (await handle.query(HealingWorkflow.status)).suppressed_until is None:
        await asyncio.sleep(0.1)
    await start_healing(client, f, task_queue=(await handle.describe()).task_queue)


def suppressing(seconds: float) -> Scenario:
    return Scenario(
        policy=HealingPolicy(stabilization_window_s=0, probe_interval_s=1, suppression_s=seconds)
    )


def refuse(rule: str, retry_after_s: float | None = None) -> GuardrailDecision:
    return GuardrailDecision(
        allowed=False, rule=rule, reason=f"{rule} says no", retry_after_s=retry_after_s
    )


CASES: dict[str, tuple[Scenario, Driver, dict[str, bool]]] = {
    "healed": (Scenario(plans=[plan("restart", "stop", "start")]), nothing, {}),
    "fallthrough": (
        Scenario(plans=[plan("first", "a1", "a2"), plan("second", "b1")], fail_steps={"a2"}),
        nothing,
        {},
    ),
    "validation_failed": (
        Scenario(plans=[plan("only", "x1")], unhealthy_after={"only"}),
        nothing,
        {},
    ),
    "approved": (Scenario(confidence=0.4), approve, {}),
    "rejected": (Scenario(confidence=0.4), reject, {}),
    "resolved_before_action": (Scenario(confidence=0.4), resolve, {}),
    "dry_run": (Scenario(), nothing, {"dry_run": True}),
    "guardrail_start_refused": (
        Scenario(guardrails={"start": [refuse("cooldown")]}),
        nothing,
        {},
    ),
    "guardrail_allowlist_next_candidate": (
        Scenario(
            plans=[plan("first", "a1", "a2"), plan("second", "b1")],
            guardrails={"a2": [refuse("allowlist")]},
        ),
        nothing,
        {},
    ),
    "suppressed_then_resolved": (suppressing(600), storm_after_outcome, {}),
    "suppression_window_ends": (suppressing(1), repeat_after_outcome, {}),
    "guardrail_kill_switch_wait": (
        Scenario(
            guardrails={
                "restart": [refuse("kill_switch", retry_after_s=1), GuardrailDecision(allowed=True)]
            }
        ),
        nothing,
        {},
    ),
}


def moved(confidences: tuple[float, float]) -> Scenario:
    """An alert on ``demo`` whose origin is ``inventory``: the plan acts on inventory."""
    acting = Fault(service="inventory", type="health_check_failed", target="inventory")
    hypotheses = [
        Hypothesis(root_cause="dependency_failing", component="inventory",
                   confidence=confidences[0], rule="dependency-origin"),
        Hypothesis(root_cause="dependency_degraded", component="demo",
                   confidence=confidences[1], rule="dependency-slow"),
    ]  # fmt: skip
    diagnosis = Diagnosis(
        root_cause="dependency_failing",
        confidence=confidences[0],
        rule="dependency-origin",
        component="inventory",
        acting_on=acting,
        hypotheses=hypotheses,
    )
    return Scenario(diagnosis=diagnosis)


CASES.update(
    {
        "acting_on_component": (moved((0.8, 0.1)), nothing, {}),
        "close_hypotheses_approved": (moved((0.75, 0.7)), approve, {}),
    }
)


def breaker_plan(max_cycles: int) -> RecoveryPlan:
    return degrade_plan(BreakerSpec(open_s=1, max_cycles=max_cycles))


async def dispute_then_approve(
    client: Client, handle: WorkflowHandle[HealingWorkflow, HealingStatus], f: Fault
) -> None:
    """A 'resolved' report the probe denies (recorded, the healing goes on), then approval."""
    await wait_for_approval(handle)
    await report_resolved(client, f)
    while not (await handle.query(HealingWorkflow.status)).resolution_disputed:
        await asyncio.sleep(0.1)
    await approve(client, handle, f)


async def resolve_after_outcome(
    client: Client, handle: WorkflowHandle[HealingWorkflow, HealingStatus], f: Fault
) -> None:
    while (await handle.query(HealingWorkflow.status)).suppressed_until is None:
        await asyncio.sleep(0.1)
    await report_resolved(client, f)


QUICK = {"stabilization_window_s": 0, "probe_interval_s": 1}
CASES.update(
    {
        "guard_breach_next_candidate": (
            Scenario(
                plans=[plan("first", "a1", "a2"), plan("second", "b1")],
                breach_after={
                    "a1": GuardBreach(
                        guard="server_errors", service="demo", expr="error_ratio > 0.15", value=0.4
                    )
                },
                step_delay_s=0.3,
            ),
            nothing,
            {},
        ),
        "breaker_closed": (
            Scenario(plans=[breaker_plan(3)], dependency_healthy=[False, True]),
            nothing,
            {},
        ),
        "breaker_left_open": (
            Scenario(plans=[breaker_plan(2)], dependency_healthy=[False]),
            nothing,
            {},
        ),
        "resolution_disputed": (
            Scenario(confidence=0.4, resolved_check_healthy=False),
            dispute_then_approve,
            {},
        ),
        "policy_approvers": (
            Scenario(
                policy=HealingPolicy(
                    **QUICK, approval=ApprovalSpec(always=["test.*"], approvers=["alice"])
                )
            ),
            approve,
            {},
        ),
        "unexpected_error_escalated": (
            Scenario(
                policy=HealingPolicy(**QUICK, notify=True, read_retry_max_s=2),
                fail_planning=True,
            ),
            nothing,
            {},
        ),
        "escalated_then_resolved": (
            Scenario(
                policy=HealingPolicy(**QUICK, notify=True, suppression_s=600),
                plans=[plan("only", "x1")],
                unhealthy_after={"only"},
            ),
            resolve_after_outcome,
            {},
        ),
    }
)


def predicted(name: str) -> Fault:
    """A forecast's fault (issue 12 §2): waits for its window, forecasts again, then acts."""
    return Fault(
        service="demo",
        type="predicted_memory_leak",
        target=f"replay-{name}",
        labels={RULE_LABEL: "replay-rule", "source": "forecast"},
        values={"probability": 0.9, "crossing_at": 4_102_444_800.0, "threshold": 90.0},
    )


NO_PREDICTED_APPROVAL = HealingPolicy(**QUICK, predicted_approval=False)
PREDICTED_CASES: dict[str, tuple[Scenario, Driver]] = {
    "predicted_window_acted": (Scenario(policy=NO_PREDICTED_APPROVAL, window_in_s=1.5), nothing),
    "predicted_faded": (
        Scenario(policy=NO_PREDICTED_APPROVAL, window_in_s=1.0, forecasts=[0.2]),
        nothing,
    ),
    "predicted_approved": (Scenario(window_in_s=1.0), approve),
}
FORECAST_CASES: dict[str, float] = {"forecast_reported": 0.9, "forecast_nothing": 0.3}


async def record_forecast(client: Client, name: str, probability: float, suffix: str) -> None:
    queue = f"record-{uuid.uuid4()}"
    scenario = Scenario(forecasts=[probability])
    async with Worker(
        client,
        task_queue=queue,
        workflows=[ForecastWorkflow],
        activities=scenario.activities(),
        workflow_runner=workflow_runner(),
    ):
        handle = await client.start_workflow(
            ForecastWorkflow.run,
            RunForecastInput(rule="replay-rule"),
            id=f"forecast-replay-{uuid.uuid4().hex[:8]}",
            task_queue=queue,
        )
        await handle.result()
        history = await handle.fetch_history()
    (HERE / f"{name}{'.' + suffix if suffix else ''}.json").write_text(history.to_json())
    print(f"recorded {name}")


async def record(
    client: Client,
    name: str,
    scenario: Scenario,
    drive: Driver,
    suffix: str,
    fault: Fault | None = None,
    **kw: bool,
) -> None:
    queue = f"record-{uuid.uuid4()}"
    fault = fault or Fault(service="demo", type="health_check_failed", target=f"replay-{name}")
    async with Worker(
        client,
        task_queue=queue,
        workflows=[HealingWorkflow],
        activities=scenario.activities(),
        workflow_runner=workflow_runner(),
    ):
        started = await start_healing(client, fault, task_queue=queue, **kw)
        handle = client.get_workflow_handle_for(HealingWorkflow.run, started.workflow_id)
        await drive(client, handle, fault)
        await handle.result()
        history = await handle.fetch_history()
    (HERE / f"{name}{'.' + suffix if suffix else ''}.json").write_text(history.to_json())
    print(f"recorded {name}")


async def main(suffix: str, only: list[str]) -> None:
    HERE.mkdir(parents=True, exist_ok=True)
    env = await start_dev_server()
    try:
        client = await env.connect_client(data_converter=pydantic_data_converter)
        for name, (scenario, drive, kwargs) in CASES.items():
            if not only or name in only:
                await record(client, name, scenario, drive, suffix, **kwargs)
        for name, (scenario, drive) in PREDICTED_CASES.items():
            if not only or name in only:
                await record(client, name, scenario, drive, suffix, fault=predicted(name))
        for name, probability in FORECAST_CASES.items():
            if not only or name in only:
                await record_forecast(client, name, probability, suffix)
        if not only or "approval_timeout" in only:
            await record(env.client, "approval_timeout", Scenario(confidence=0.3), nothing, suffix)
    finally:
        await env.shutdown()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="record HealingWorkflow histories")
    parser.add_argument("--suffix", required=True, help="generation, e.g. v3")
    parser.add_argument("--only", nargs="*", default=[], help="record these cases only")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.suffix, arguments.only))
    sys.stdout.flush()
    os._exit(0)  # temporalio may abort at interpreter exit (sdk-python#300)
