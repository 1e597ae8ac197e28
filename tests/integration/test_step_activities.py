"""run_step and compensate_step in Temporal's ActivityEnvironment, against the real supervisor
and demo target."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from selfheal.activities.actions import SUPERVISOR_URL, default_registry
from selfheal.activities.steps import StepActivities
from selfheal.domain import Fault, RecoveryStep, StepCall, StepResult, StepStatus
from selfheal.domain.payloads import CompensateStepInput, RunStepInput
from tests.integration.demo_stack import TARGET, DemoStack, demo_stack, free_port, wait_until


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[DemoStack]:
    with demo_stack(tmp_path) as s:
        yield s


@pytest.fixture
def steps(stack: DemoStack) -> StepActivities:
    return StepActivities(default_registry(), {SUPERVISOR_URL: stack.supervisor_url})


def fault(stack: DemoStack) -> Fault:
    return Fault(
        service="demo",
        type="health_check_failed",
        target=TARGET,
        labels={"base_url": stack.target_url},
        health_url=f"{stack.target_url}/healthz",
    )


def run_input(stack: DemoStack, step: RecoveryStep, **kw: Any) -> RunStepInput:
    return RunStepInput(
        workflow_id="heal-test", candidate=0, order=kw.pop("order", 0), step=step,
        fault=fault(stack), **kw,
    )  # fmt: skip


def compensate_input(
    stack: DemoStack, forward: RunStepInput, result: StepResult
) -> CompensateStepInput:
    return CompensateStepInput(
        workflow_id=forward.workflow_id,
        candidate=forward.candidate,
        order=forward.order,
        step=forward.step,
        fault=forward.fault,
        result=result,
        dry_run=forward.dry_run,
    )


RESTART = RecoveryStep(
    name="restart target", action="process.restart", params={"process": "${fault.target}"}
)
FLAG_OFF = RecoveryStep(
    name="switch the bad flag off",
    action="http.request",
    params={
        "method": "PUT",
        "url": "${fault.labels.base_url}/flags/new_checkout",
        "json": {"enabled": False},
    },
    compensate=StepCall(
        action="http.request",
        params={
            "method": "PUT",
            "url": "${fault.labels.base_url}/flags/new_checkout",
            "json": {"enabled": True},
        },
    ),
)


def flag(stack: DemoStack) -> bool:
    enabled: bool = httpx.get(f"{stack.target_url}/flags/new_checkout").json()["enabled"]
    return enabled


async def test_run_step_restarts_a_hung_target(stack: DemoStack, steps: StepActivities) -> None:
    stack.inject("hang")
    wait_until(lambda: stack.health() is None, what="the target to hang")
    env = ActivityEnvironment()
    beats: list[Any] = []
    env.on_heartbeat = lambda *details: beats.append(details)
    forward = run_input(stack, RESTART)

    result = await env.run(steps.run_step, forward)

    assert result.status is StepStatus.SUCCEEDED and not result.compensation
    assert result.params == {"process": TARGET, "wait_healthy_s": 30.0}
    assert result.name == "restart target" and result.action == "process.restart"
    assert result.output["healthy"] is True and result.output["replayed"] is False
    assert result.started_at <= result.ended_at
    assert stack.health() == 200
    assert beats

    # A retry of the same step, as after a worker crash, does not restart a second time.
    retried = await env.run(steps.run_step, forward)
    assert retried.output["replayed"] is True and retried.output["pid"] == result.output["pid"]
    assert stack.supervisor.status(TARGET).restarts == 1

    # A restart cannot be undone: its compensation says so and changes nothing.
    undo = await env.run(steps.compensate_step, compensate_input(stack, forward, result))
    assert undo.status is StepStatus.COMPENSATED and undo.compensation
    assert undo.output == {"skipped": "not compensable"}
    assert stack.supervisor.status(TARGET).restarts == 1


async def test_flag_step_and_its_declared_compensation(
    stack: DemoStack, steps: StepActivities
) -> None:
    stack.inject("error_burst")
    env = ActivityEnvironment()
    forward = run_input(stack, FLAG_OFF, order=1)

    result = await env.run(steps.run_step, forward)
    assert result.status is StepStatus.SUCCEEDED and result.output["status_code"] == 200
    assert result.params["url"] == f"{stack.target_url}/flags/new_checkout"
    assert result.params["json"] == {"enabled": False}
    assert not flag(stack)
    # checkout's health is judged on its last seconds of checkouts
    wait_until(lambda: stack.health() == 200, what="checkout to recover")

    undo = await env.run(steps.compensate_step, compensate_input(stack, forward, result))
    assert undo.status is StepStatus.COMPENSATED and undo.compensation
    assert undo.action == "http.request" and undo.params["json"] == {"enabled": True}
    assert undo.output["status_code"] == 200
    assert flag(stack)
    wait_until(lambda: stack.health() == 503, what="checkout to fail again")


async def test_dry_run_changes_nothing(stack: DemoStack, steps: StepActivities) -> None:
    stack.inject("error_burst")
    env = ActivityEnvironment()
    pid = stack.supervisor.status(TARGET).pid

    flag_off = run_input(stack, FLAG_OFF, dry_run=True)
    result = await env.run(steps.run_step, flag_off)
    assert result.status is StepStatus.DRY_RUN
    assert result.output["would_run"]["action"] == "http.request"
    undo = await env.run(steps.compensate_step, compensate_input(stack, flag_off, result))
    assert undo.status is StepStatus.DRY_RUN and undo.compensation
    assert undo.output["would_run"]["params"]["json"] == {"enabled": True}

    result = await env.run(steps.run_step, run_input(stack, RESTART, dry_run=True))
    assert result.status is StepStatus.DRY_RUN
    assert result.output["would_run"]["params"] == {"process": TARGET, "wait_healthy_s": 30.0}
    assert flag(stack)
    wait_until(lambda: stack.health() == 503, what="the error burst")
    assert stack.supervisor.status(TARGET).pid == pid
    assert stack.supervisor.status(TARGET).restarts == 0


async def test_invalid_params_are_not_retried(stack: DemoStack, steps: StepActivities) -> None:
    step = RecoveryStep(action="process.restart", params={"process": TARGET, "wait_healthy": 5})
    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(steps.run_step, run_input(stack, step))
    assert caught.value.non_retryable and caught.value.type == "InvalidParams"
    assert "wait_healthy" in str(caught.value)

    step = RecoveryStep(action="wait", params={"seconds": 0})
    with pytest.raises(ApplicationError, match="seconds") as caught:
        await ActivityEnvironment().run(steps.run_step, run_input(stack, step))
    assert caught.value.non_retryable


async def test_unknown_action_and_placeholder(stack: DemoStack, steps: StepActivities) -> None:
    with pytest.raises(ApplicationError, match="unknown action 'reboot'") as caught:
        await ActivityEnvironment().run(
            steps.run_step, run_input(stack, RecoveryStep(action="reboot"))
        )
    assert caught.value.non_retryable and caught.value.type == "ActionNotFound"

    step = RecoveryStep(action="process.restart", params={"process": "${fault.labels.nope}"})
    with pytest.raises(ApplicationError, match=r"\$\{fault.labels.nope\}") as caught:
        await ActivityEnvironment().run(steps.run_step, run_input(stack, step))
    assert caught.value.non_retryable and caught.value.type == "InvalidParams"


async def test_target_errors_keep_their_retryability() -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    unreachable = StepActivities(default_registry(), {SUPERVISOR_URL: nowhere})
    forward = RunStepInput(
        workflow_id="heal-x", candidate=0, order=0, step=RESTART,
        fault=Fault(service="demo", type="down", target=TARGET),
    )  # fmt: skip
    with pytest.raises(ApplicationError, match="unreachable") as caught:
        await ActivityEnvironment().run(unreachable.run_step, forward)
    assert caught.value.type == "TargetError" and not caught.value.non_retryable


async def test_wait_step_heartbeats_and_has_nothing_to_undo(
    stack: DemoStack, steps: StepActivities
) -> None:
    env = ActivityEnvironment()
    beats: list[Any] = []
    env.on_heartbeat = lambda *details: beats.append(details)
    forward = run_input(stack, RecoveryStep(action="wait", params={"seconds": 0.2}))

    result = await env.run(steps.run_step, forward)
    assert result.status is StepStatus.SUCCEEDED and not result.mutating
    assert result.output == {"waited_s": 0.2}
    assert beats

    undo = await env.run(steps.compensate_step, compensate_input(stack, forward, result))
    assert undo.output == {"skipped": "nothing to undo"} and undo.compensation
