"""What "recovered" and "made worse" mean: validation criteria, side-effect guards, the breaker
kept over a degradation, and the approval policy of a service. Data only, no I/O.

An *expression* compares one series with a number: ``error_ratio < 0.01``,
``latency_p99 <= 0.3``, ``sum(rate(http_errors_total[1m])) == 0``. Its left-hand side is the name
of one of the service's evidence queries (``services.yaml``: ``evidence.metrics.queries``) or,
when it is no such name, PromQL as written. The last comparison operator in the text splits it.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from selfheal.domain.risk import RiskLevel

Comparison = Literal["<", "<=", ">", ">=", "==", "!="]
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_EXPRESSION = re.compile(
    r"^(?P<lhs>.+?)\s*(?P<op><=|>=|==|!=|<|>)\s*(?P<rhs>[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?)$"
)
EXPRESSION_RULE = "'<query name or PromQL> <op> <number>' with op one of < <= > >= == !="


class Expression(BaseModel):
    """``lhs op threshold``, parsed from its text."""

    lhs: str
    op: Comparison
    threshold: float

    @classmethod
    def parse(cls, text: str) -> Expression:
        """Raises ``ValueError`` naming the expected form."""
        match = _EXPRESSION.match(text.strip())
        if match is None or not match["lhs"].strip():
            raise ValueError(f"expected {EXPRESSION_RULE}; got {text!r}")
        return cls(lhs=match["lhs"].strip(), op=match["op"], threshold=float(match["rhs"]))

    def holds(self, value: float) -> bool:
        return _COMPARE[self.op](value, self.threshold)

    def __str__(self) -> str:
        return f"{self.lhs} {self.op} {self.threshold:g}"


def _check_expression(value: str | None) -> str | None:
    if value is not None:
        Expression.parse(value)
    return value


class ValidationCriterion(BaseModel):
    """One thing that must hold over the whole stabilization window.

    - ``metric``: ``expr`` (see the module) holds at every evaluation in the window, against
      Prometheus (``evidence.prometheus_url``) or the intake's recent-series buffer;
    - ``alert_resolved``: the originating alert is no longer active in Alertmanager, or its
      ``resolved`` notification was received;
    - ``rollout``: the Kubernetes workload's rollout is complete, its ready replicas equal the
      desired count, and no container restarted during the window;
    - ``probe``: the target's health probe (and its catalog metric) as before.

    A criterion that cannot be evaluated (its source down, nothing to read) fails the
    validation unless it is ``optional``.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["metric", "alert_resolved", "rollout", "probe"]
    expr: str | None = Field(default=None, description="kind metric: " + EXPRESSION_RULE)
    name: str = Field(default="", description="shown in `selfheal show`; default from the kind")
    optional: bool = False

    _expr = field_validator("expr")(_check_expression)

    @model_validator(mode="after")
    def _expr_for_metric(self) -> ValidationCriterion:
        if self.kind == "metric" and not self.expr:
            raise ValueError("a criterion of kind 'metric' needs 'expr'")
        if self.kind != "metric" and self.expr:
            raise ValueError(f"'expr' applies to kind 'metric' only, not {self.kind!r}")
        return self

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        return self.expr if self.kind == "metric" and self.expr else self.kind

    @property
    def expression(self) -> Expression | None:
        return Expression.parse(self.expr) if self.expr else None


class CriterionResult(BaseModel):
    """One criterion's verdict over a validation window, with the values it saw."""

    criterion: str = Field(description="the criterion's label")
    kind: str
    ok: bool | None = Field(description="None: it could not be evaluated")
    optional: bool = False
    values: list[float] = Field(
        default_factory=list, description="values read during the window (the last 20)"
    )
    detail: str = ""

    @property
    def passed(self) -> bool:
        return bool(self.ok) or (self.ok is None and self.optional)


class GuardSpec(BaseModel):
    """A side effect watched while a plan runs and through its validation.

    ``expr`` says when the guard trips (``error_ratio > 0.15``). With ``relative``, the value
    compared is the change since the plan started (``latency_p99 > 0.3`` means "up by more than
    0.3"). With ``for_s``, the condition must hold that long. An absolute guard already tripped
    when the plan started is not a side effect of the plan and is not watched (the fault itself
    may be what trips it); the result says so.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    expr: str
    relative: bool = False
    for_s: float = Field(default=0.0, ge=0)

    _expr = field_validator("expr")(_check_expression)

    @property
    def expression(self) -> Expression:
        return Expression.parse(self.expr)


DEFAULT_GUARDS: tuple[GuardSpec, ...] = (
    # success rate falls by more than 5 points: the error ratio rises by more than 0.05
    GuardSpec(name="success_rate_drop", expr="error_ratio > 0.05", relative=True),
    GuardSpec(name="connection_pool", expr="pool_usage >= 0.9"),
    GuardSpec(name="latency_p99_rise", expr="latency_p99 > 0.3", relative=True),
    GuardSpec(name="server_errors", expr="error_ratio > 0.15", for_s=60.0),
)
"""The guards of a service that declares none (seed 004). A guard whose query the service does
not define is not watched (the watch's result lists it)."""


class GuardBreach(BaseModel):
    """A guard that tripped: which, on which service, with the values seen."""

    guard: str
    service: str
    expr: str
    value: float
    baseline: float | None = None
    detail: str = ""
    at: datetime | None = None


class BreakerSpec(BaseModel):
    """A degradation kept as a circuit breaker (``http.degrade`` in ``circuit_break`` or
    ``fallback`` mode). Unset fields take the worker's defaults
    (``SELFHEAL_HEALING__BREAKER_*``)."""

    model_config = ConfigDict(extra="forbid")

    open_s: float | None = Field(default=None, gt=0, description="first open period")
    backoff: float | None = Field(default=None, ge=1, description="open period multiplier")
    max_open_s: float | None = Field(default=None, gt=0, description="longest open period")
    max_cycles: int | None = Field(
        default=None, ge=1, description="half-open probes before escalating"
    )
    dependency: str | None = Field(
        default=None,
        description="the service whose health closes the breaker; unset: the diagnosed "
        "component when it is another service, else the degraded service's dependencies",
    )
    trials: int = Field(default=3, ge=1, le=20, description="probes that must all pass")
    enabled: bool = True


BreakerState = Literal["closed", "open", "half_open"]


class BreakerEvent(BaseModel):
    state: BreakerState
    at: datetime
    detail: str = ""


class BreakerStatus(BaseModel):
    """The breaker a healing keeps over its degradation step."""

    state: BreakerState
    step: str = Field(description="the degradation step's label")
    dependency: str | None = None
    cycles: int = 0
    open_until: datetime | None = None
    history: list[BreakerEvent] = Field(default_factory=list)


class ActionApproval(BaseModel):
    """Approval rules for the actions matching a pattern."""

    model_config = ConfigDict(extra="forbid")

    always: bool = Field(default=False, description="a plan with this action always needs approval")
    min_confidence: float | None = Field(
        default=None, ge=0, le=1, description="below this diagnosis confidence, ask"
    )
    approvers: list[str] | None = Field(
        default=None, description="who may decide on plans with this action; unset: the service's"
    )


class ApprovalSpec(BaseModel):
    """A service's approval policy (``services.yaml``: ``approval``). Unset fields keep the
    worker's defaults (``SELFHEAL_HEALING__APPROVAL_*``); a service can only ask for more."""

    model_config = ConfigDict(extra="forbid")

    min_risk: RiskLevel | None = Field(default=None, description="plans this risky or more: ask")
    min_confidence: float | None = Field(default=None, ge=0, le=1)
    always: list[str] = Field(
        default_factory=list, description="fnmatch patterns of actions that always need approval"
    )
    approvers: list[str] = Field(
        default_factory=list,
        description="identities that may approve or reject (intake token names 'name:alice', "
        "or the 'by' of the temporal CLI); empty: anyone who may send the update",
    )
    actions: dict[str, ActionApproval] = Field(
        default_factory=dict, description="per action pattern (fnmatch)"
    )

    def action_rules(self, action: str) -> list[ActionApproval]:
        return [rule for pattern, rule in self.actions.items() if fnmatchcase(action, pattern)]
