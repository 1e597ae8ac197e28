"""``run_step`` and ``compensate_step``: one recovery step, or its undoing, as an activity.

A failure leaves as an ``ApplicationError`` whose ``type`` is the error class, so the workflow's
retry policy applies; bad params and unknown actions are non-retryable.

Dry run: no action runs at all, mutating or not; the result has status ``dry_run`` and
``output.would_run`` = {"action", "params"} with the rendered, validated params.

Compensation of a step, in order of precedence:
1. the step's explicit ``compensate`` call (its params rendered against the fault, like the
   step's own), run forward;
2. else, for a mutating and compensable step whose action has its own ``compensate``, that
   function, given the forward run's output (``input.result.output``);
3. else nothing is done and the result says why: status ``compensated`` with
   ``output.skipped`` = ``"not compensable"`` (the step or its action declares it cannot be
   undone) or ``"nothing to undo"`` (a read-only action such as ``wait``).
A compensating result always has ``compensation=True``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from temporalio import activity

from selfheal.activities.actions.registry import Action, ActionContext, ActionRegistry, Output
from selfheal.activities.errors import as_application_error
from selfheal.domain import (
    Fault,
    InvalidParams,
    SelfhealError,
    StepResult,
    StepStatus,
    render_params,
)
from selfheal.domain.payloads import CompensateStepInput, RunStepInput
from selfheal.workflows.contract import COMPENSATE_STEP, RUN_STEP, implements

SKIPPED_NOT_COMPENSABLE = "not compensable"
SKIPPED_NOTHING_TO_UNDO = "nothing to undo"

Undo = Callable[[ActionContext], Awaitable[Output]]


class StepActivities:
    def __init__(self, registry: ActionRegistry, services: dict[str, Any]) -> None:
        self.registry = registry
        self.services = services

    @implements(RUN_STEP)
    async def run_step(self, input: RunStepInput) -> StepResult:
        started = datetime.now(UTC)
        step = input.step
        output: Output
        try:
            action = self.registry.get(step.action)
            params = _parse(action, step.params, input.fault, step.label)
            rendered = _dump(params)
            if input.dry_run:
                output = {"would_run": {"action": action.name, "params": rendered}}
                status = StepStatus.DRY_RUN
            else:
                output = await action.run(self._context(input.idempotency_key, input), params)
                status = StepStatus.SUCCEEDED
        except SelfhealError as exc:
            raise as_application_error(exc) from None
        return StepResult.for_step(
            step,
            candidate=input.candidate,
            order=input.order,
            action=action.name,
            params=rendered,
            status=status,
            mutating=action.mutating,
            output=output,
            started_at=started,
            ended_at=datetime.now(UTC),
        )

    @implements(COMPENSATE_STEP)
    async def compensate_step(self, input: CompensateStepInput) -> StepResult:
        started = datetime.now(UTC)
        output: Output
        try:
            action, params, undo = self._undo_of(input)
            rendered = _dump(params)
            if isinstance(undo, str):
                output, status = {"skipped": undo}, StepStatus.COMPENSATED
            elif input.dry_run:
                output = {"would_run": {"action": action.name, "params": rendered}}
                status = StepStatus.DRY_RUN
            else:
                output = await undo(self._context(input.idempotency_key, input))
                status = StepStatus.COMPENSATED
        except SelfhealError as exc:
            raise as_application_error(exc) from None
        return StepResult.for_step(
            input.step,
            candidate=input.candidate,
            order=input.order,
            action=action.name,
            params=rendered,
            status=status,
            compensation=True,
            mutating=action.mutating,
            output=output,
            started_at=started,
            ended_at=datetime.now(UTC),
        )

    def _undo_of(self, input: CompensateStepInput) -> tuple[Action[Any], BaseModel, Undo | str]:
        """The action and params that undo the step, and how to run it (or why nothing runs)."""
        step = input.step
        forward = self.registry.get(step.action)
        if step.compensate is not None:
            action = self.registry.get(step.compensate.action)
            params = _parse(action, step.compensate.params, input.fault, step.label)
            return action, params, lambda ctx: action.run(ctx, params)
        params = _parse(forward, step.params, input.fault, step.label)
        if not forward.mutating:
            return forward, params, SKIPPED_NOTHING_TO_UNDO
        if not step.compensable or not forward.compensable:
            return forward, params, SKIPPED_NOT_COMPENSABLE
        compensate = forward.compensate
        if compensate is None:
            raise InvalidParams(
                f"step {step.label!r}: action {forward.name!r} needs a 'compensate' call "
                "on the step to be undone"
            )
        return forward, params, lambda ctx: compensate(ctx, params, input.result.output)

    def _context(self, key: str, input: RunStepInput | CompensateStepInput) -> ActionContext:
        return ActionContext(
            idempotency_key=key,
            workflow_id=input.workflow_id,
            heartbeat=activity.heartbeat,
            dry_run=input.dry_run,
            services=self.services,
        )


def _parse(action: Action[Any], params: dict[str, Any], fault: Fault, label: str) -> BaseModel:
    try:
        rendered = render_params(params, fault)
    except KeyError as exc:
        raise InvalidParams(
            f"step {label!r}: unknown placeholder {exc.args[0]} in {action.name} params"
        ) from None
    parsed: BaseModel = action.parse(rendered)
    return parsed


def _dump(params: BaseModel) -> dict[str, Any]:
    return params.model_dump(mode="json", by_alias=True)
