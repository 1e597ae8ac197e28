"""The action registry: name → params model, risk, idempotency rule, compensation.

An action is an async function ``run(ctx, params) -> output`` with a pydantic params model. A
mutating action declares either ``compensate(ctx, params, output) -> output`` or
``compensable=False``; the registry refuses a mutating action that does neither. Output dicts
are stored in the step's result, so a compensation can read the state the action found
("scale back to the count it found").

Risk is the action's declared level, or more for some params: an action whose harm depends on
what it is asked (``kubernetes.set_resources`` above its ``approve_above``) gives
``risk_for(params) -> RiskLevel``, read from the step's params as the plan states them, before
any placeholder is filled. A step whose params cannot be judged then (a placeholder, a bad
value) counts as high: the approval gate asks rather than guess.

Drivers register their actions in one place, ``activities.actions.default_registry()``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from selfheal.domain import (
    ActionNotFound,
    InvalidParams,
    RecoveryStep,
    RiskLevel,
    SelfhealError,
)

P = TypeVar("P", bound=BaseModel)

Output = dict[str, Any]


@dataclass
class ActionContext:
    """What an action may use besides its params.

    ``idempotency_key`` is stable across retries of the same step of the same healing
    (``<workflow id>/<run id>/<candidate>/<step order>``): an action passes it to the target, or
    checks the target's state against it, so that a retried activity never applies twice.
    """

    idempotency_key: str
    workflow_id: str
    heartbeat: Callable[..., None] = lambda *details: None
    dry_run: bool = False
    services: dict[str, Any] = field(default_factory=dict)


RunFn = Callable[[ActionContext, P], Awaitable[Output]]
CompensateFn = Callable[[ActionContext, P, Output], Awaitable[Output]]
RiskFn = Callable[[dict[str, Any]], RiskLevel]


@dataclass(frozen=True)
class Action(Generic[P]):
    name: str
    params_model: type[P]
    risk: RiskLevel
    run: RunFn[P]
    mutating: bool = True
    compensate: CompensateFn[P] | None = None
    compensable: bool = True
    # True when the inverse depends on the caller (an HTTP call's inverse request): the plan
    # step must then declare ``compensate`` or ``compensable: false``.
    compensation_in_plan: bool = False
    idempotency: str = "idempotency key"
    description: str = ""
    # The risk of one step from its (unrendered) params, when it depends on them; never below
    # ``risk``. Raising ``InvalidParams`` or a ``ValueError`` makes the step count as high.
    risk_for: RiskFn | None = None

    def __post_init__(self) -> None:
        if (
            self.mutating
            and self.compensate is None
            and self.compensable
            and not self.compensation_in_plan
        ):
            raise ValueError(
                f"action {self.name!r} mutates: give it a compensation or compensable=False"
            )

    def parse(self, params: dict[str, Any]) -> P:
        try:
            return self.params_model.model_validate(params)
        except ValidationError as exc:
            details = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
                for e in exc.errors()
            )
            raise InvalidParams(f"{self.name} params: {details}") from exc

    def step_risk(self, params: dict[str, Any]) -> RiskLevel:
        """How risky a step of this action is, with these params (see the module doc)."""
        if self.risk_for is None:
            return self.risk
        try:
            judged = self.risk_for(params)
        except (SelfhealError, ValueError):  # InvalidParams; pydantic's ValidationError
            judged = RiskLevel.HIGH
        return RiskLevel.highest([self.risk, judged])


class ActionRegistry:
    def __init__(self, actions: Iterable[Action[Any]] = ()) -> None:
        self._actions: dict[str, Action[Any]] = {}
        for action in actions:
            self.register(action)

    def register(self, action: Action[Any]) -> None:
        if action.name in self._actions:
            raise ValueError(f"action {action.name!r} registered twice")
        self._actions[action.name] = action

    def get(self, name: str) -> Action[Any]:
        try:
            return self._actions[name]
        except KeyError:
            known = ", ".join(sorted(self._actions)) or "none"
            raise ActionNotFound(f"unknown action {name!r} (known: {known})") from None

    def __contains__(self, name: object) -> bool:
        return name in self._actions

    def names(self) -> list[str]:
        return sorted(self._actions)

    def check_step(self, step: RecoveryStep) -> None:
        """Refuse a step whose action is unknown, or that mutates with no way back declared.

        A mutating step is undoable through its explicit ``compensate`` call or its action's own
        compensation; otherwise it must say so (``compensable: false`` on the step or the action).
        """
        action = self.get(step.action)
        if step.compensate is not None:
            self.get(step.compensate.action)
        if (
            action.mutating
            and step.compensate is None
            and action.compensate is None
            and (action.compensable or action.compensation_in_plan)
            and step.compensable
        ):
            raise InvalidParams(
                f"step {step.label!r}: action {step.action!r} needs a 'compensate' call "
                "or 'compensable: false'"
            )

    def plan_risk(self, steps: list[RecoveryStep], declared: RiskLevel) -> RiskLevel:
        """A plan is as risky as its riskiest part: the declared level or any step (its action's
        risk, raised by the step's params for an action that says so)."""
        risks = [self.get(step.action).step_risk(step.params) for step in steps]
        return RiskLevel.highest([declared, *risks])

    def is_mutating(self, step: RecoveryStep) -> bool:
        return self.get(step.action).mutating
