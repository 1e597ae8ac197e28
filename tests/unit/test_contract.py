"""The Temporal contract: every activity the workflow calls has exactly one implementation on the
worker, the stand-ins implement the same references, and an implementation that drifts from its
reference is refused when it is declared."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import sessionmaker

from selfheal.core.settings import Settings
from selfheal.domain import HealingPolicy, RecoveryStep, StepCall, StepResult, StepStatus
from selfheal.domain.payloads import LoadPolicyInput, RunStepInput
from selfheal.worker import build_activities
from selfheal.workflows.contract import (
    ACTIVITIES,
    LOAD_POLICY,
    NOTIFY,
    RELEASE_TARGET,
    RUN_STEP,
    check_implementations,
    implemented_by,
    implements,
)
from tests.integration.standins import Scenario

NAMES = sorted(ref.name for ref in ACTIVITIES)
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def names(activities: Sequence[Callable[..., Any]]) -> list[str]:
    refs = [implemented_by(fn) for fn in activities]
    return sorted(ref.name for ref in refs if ref is not None)


def test_contract_names_are_unique() -> None:
    assert len(set(NAMES)) == len(NAMES) == 16


async def test_the_worker_implements_every_activity_once() -> None:
    async with httpx.AsyncClient() as http:
        activities = build_activities(Settings(), session_factory=sessionmaker(), http=http)
    check_implementations(activities)
    assert names(activities) == NAMES


def test_the_standins_implement_every_activity_once() -> None:
    activities = Scenario().activities()
    check_implementations(activities)
    assert names(activities) == NAMES


def test_a_missing_duplicate_or_foreign_activity_is_refused() -> None:
    activities = Scenario().activities()
    with pytest.raises(ValueError, match="no implementation of 'notify'"):
        check_implementations([a for a in activities if implemented_by(a) is not NOTIFY])
    with pytest.raises(ValueError, match="2 implementations of 'run_step'"):
        check_implementations([*activities, *[a for a in activities if a.__name__ == "run_step"]])
    with pytest.raises(ValueError, match="print implements no activity"):
        check_implementations([*activities, print])


def test_an_implementation_must_declare_the_reference_types() -> None:
    with pytest.raises(TypeError, match=r"'run_step', \(RunStepInput\) -> StepResult"):

        @implements(RUN_STEP)  # type: ignore[arg-type]
        async def run_step(input: LoadPolicyInput) -> StepResult:
            raise NotImplementedError

    with pytest.raises(TypeError, match=r"declared \(LoadPolicyInput\) -> StepResult"):

        class Policy:
            @implements(LOAD_POLICY)  # type: ignore[arg-type]
            async def load_policy(self, input: LoadPolicyInput) -> StepResult:
                raise NotImplementedError

    class Good:
        @implements(LOAD_POLICY)
        async def load_policy(self, input: LoadPolicyInput) -> HealingPolicy:
            return HealingPolicy()

    assert implemented_by(Good().load_policy) is LOAD_POLICY
    assert RELEASE_TARGET.result_type is type(None)
    assert RUN_STEP.input_type is RunStepInput


def test_a_step_result_is_named_by_its_step() -> None:
    step = RecoveryStep(action="process.restart", params={"process": "web"})
    ran = StepResult.for_step(
        step, candidate=1, order=2, status=StepStatus.FAILED, started_at=T0, ended_at=T0
    )
    assert ran == StepResult(
        candidate=1,
        order=2,
        name="process.restart",
        action="process.restart",
        params={"process": "web"},
        status=StepStatus.FAILED,
        started_at=T0,
        ended_at=T0,
    )
    undo = RecoveryStep(name="stop", action="a", compensate=StepCall(action="b", params={"x": 1}))
    undone = StepResult.for_step(
        undo,
        candidate=0,
        order=0,
        action="b",
        params={"x": 1},
        status=StepStatus.COMPENSATED,
        compensation=True,
        started_at=T0,
        ended_at=T0,
    )
    assert (undone.name, undone.action, undone.params, undone.compensation) == (
        "stop",
        "b",
        {"x": 1},
        True,
    )
