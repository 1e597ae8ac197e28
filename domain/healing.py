from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from selfheal.domain.criteria import (
    ApprovalSpec,
    BreakerSpec,
    BreakerStatus,
    CriterionResult,
    GuardBreach,
    ValidationCriterion,
)
from selfheal.domain.evidence import Finding, Hypothesis, MissingEvidence
from selfheal.domain.fault import Fault
from selfheal.domain.forecast import ChosenWindow, Prediction
from selfheal.domain.risk import RiskLevel


class HealingPhase(StrEnum):
    DIAGNOSING = "diagnosing"
    PLANNING = "planning"
    AWAITING_APPROVAL = "awaiting_approval"
    EXECUTING = "executing"
    VALIDATING = "validating"
    COMPENSATING = "compensating"
    BREAKER_OPEN = "breaker_open"
    AWAITING_WINDOW = "awaiting_window"
    RECORDING = "recording"
    # final phases carry the outcome's value
    HEALED = "healed"
    FAILED = "failed"
    ESCALATED = "escalated"
    REJECTED = "rejected"
    APPROVAL_TIMEOUT = "approval_timeout"
    RESOLVED_BEFORE_ACTION = "resolved_before_action"
    DRY_RUN = "dry_run"


class HealingOutcome(StrEnum):
    HEALED = "healed"
    FAILED = "failed"
    ESCALATED = "escalated"
    REJECTED = "rejected"
    APPROVAL_TIMEOUT = "approval_timeout"
    RESOLVED_BEFORE_ACTION = "resolved_before_action"
    DRY_RUN = "dry_run"

    @property
    def phase(self) -> HealingPhase:
        return HealingPhase(self.value)

    @property
    def pages(self) -> bool:
        """An outcome a human must take over (PagerDuty trigger); the fault's later resolution
        resolves that incident."""
        return self in (
            HealingOutcome.ESCALATED,
            HealingOutcome.FAILED,
            HealingOutcome.APPROVAL_TIMEOUT,
        )


class StepCall(BaseModel):
    """An action invocation: used for a step's explicit compensation."""

    model_config = ConfigDict(extra="forbid")

    action: str
    params: dict[str, Any] = Field(default_factory=dict)


class RecoveryStep(BaseModel):
    """One ordered step of a plan. ``params`` may hold ``${fault.*}`` placeholders."""

    model_config = ConfigDict(extra="forbid")

    name: str = ""
    action: str
    params: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float = Field(default=60.0, gt=0, le=3600)
    max_attempts: int = Field(default=3, ge=1, le=20)
    compensate: StepCall | None = Field(
        default=None, description="explicit inverse; else the action's own compensation, if any"
    )
    compensable: bool = Field(
        default=True,
        description="False declares that this step cannot be undone (e.g. a cache flush)",
    )
    breaker: BreakerSpec | None = Field(
        default=None,
        description="http.degrade in circuit_break or fallback mode: how the healing keeps the "
        "degradation as a breaker (unset: the worker's defaults; enabled: false keeps it on)",
    )

    @property
    def label(self) -> str:
        return self.name or self.action


class SolutionSpec(BaseModel):
    """A solution as written in a runbook YAML file (``runbooks/solutions/*.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    pattern: str = Field(min_length=1, description="the root-cause pattern it heals")
    service: str | None = Field(default=None, description="service selector (fnmatch); None = any")
    description: str = ""
    risk: RiskLevel = RiskLevel.MEDIUM
    prior_successes: int = Field(default=0, ge=0)
    prior_attempts: int = Field(default=0, ge=0)
    enabled: bool = True
    steps: list[RecoveryStep] = Field(min_length=1)
    validation: list[ValidationCriterion] = Field(
        default_factory=list,
        description="what 'recovered' means for this solution; empty: the service's criteria, "
        "else the health probe",
    )


def smoothed_success_rate(successes: int, attempts: int) -> float:
    """Laplace-smoothed success rate: an untried solution scores 0.5."""
    return (successes + 1) / (attempts + 2)


class Solution(BaseModel):
    """A solution as stored in the knowledge base, with what it has learned."""

    id: int
    name: str
    version: int
    pattern: str
    service: str | None
    description: str = ""
    risk: RiskLevel
    steps: list[RecoveryStep]
    prior_successes: int = 0
    prior_attempts: int = 0
    attempts: int = 0
    successes: int = 0
    mean_time_to_recover_s: float | None = None
    last_used_at: datetime | None = None
    enabled: bool = True
    validation: list[ValidationCriterion] = Field(default_factory=list)

    @property
    def success_rate(self) -> float:
        return smoothed_success_rate(
            self.successes + self.prior_successes, self.attempts + self.prior_attempts
        )


class RecoveryPlan(BaseModel):
    """A candidate plan for one healing: from the knowledge base or a rule's default."""

    source: Literal["knowledge_base", "rule_default"]
    solution_id: int | None = None
    solution_name: str
    solution_version: int | None = None
    steps: list[RecoveryStep]
    risk: RiskLevel = Field(description="the highest of the solution's and its actions' risks")
    success_rate: float = 0.5
    validation: list[ValidationCriterion] = Field(
        default_factory=list, description="the solution's criteria; empty: the service's"
    )
    sampled: float | None = Field(
        default=None, description="the Thompson sample that ranked this plan (None: not sampled)"
    )


class Evidence(BaseModel):
    """What ``collect_evidence`` saw. ``facts`` is flat so that rules can match on it."""

    collected_at: datetime
    probe_url: str | None = None
    probe_ok: bool | None = None
    probe_status: int | None = None
    probe_error: Literal["connection_refused", "timeout", "http_error", "other"] | None = None
    probe_latency_ms: float | None = None
    probe_body: dict[str, Any] = Field(default_factory=dict)
    metric_value: float | None = None
    facts: dict[str, Any] = Field(default_factory=dict)
    findings: list[Finding] = Field(default_factory=list)
    missing: list[MissingEvidence] = Field(
        default_factory=list, description="sources asked that did not answer, with the reason"
    )
    sources: list[str] = Field(default_factory=list, description="the providers that answered")


class Diagnosis(BaseModel):
    root_cause: str
    confidence: float = Field(ge=0.0, le=1.0)
    rule: str
    summary: str = ""
    evidence_used: dict[str, Any] = Field(default_factory=dict)
    default_plan: list[RecoveryStep] = Field(default_factory=list)
    default_risk: RiskLevel = RiskLevel.MEDIUM
    component: str | None = Field(
        default=None, description="the service to act on; None: the fault's own service"
    )
    hypotheses: list[Hypothesis] = Field(
        default_factory=list, description="every hypothesis considered, best first"
    )
    missing: list[MissingEvidence] = Field(default_factory=list)
    evidence_kinds: list[str] = Field(
        default_factory=list, description="the kinds of finding seen (learned from, per rule)"
    )
    acting_on: Fault | None = Field(
        default=None,
        description="the fault moved onto the diagnosed component when that is another service "
        "(its target from the catalog): planning, guardrails and steps act on it; validation "
        "still checks the reported fault",
    )


class StepStatus(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"
    DRY_RUN = "dry_run"
    REFUSED = "refused"


class StepResult(BaseModel):
    candidate: int = Field(description="index of the plan among the healing's candidates")
    order: int = Field(description="index of the step in its plan")
    name: str
    action: str
    params: dict[str, Any] = Field(default_factory=dict)
    status: StepStatus
    compensation: bool = Field(default=False, description="True for a compensating run")
    mutating: bool = Field(default=True, description="False for read-only actions such as wait")
    output: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    started_at: datetime
    ended_at: datetime

    @classmethod
    def for_step(
        cls,
        step: RecoveryStep,
        *,
        candidate: int,
        order: int,
        status: StepStatus,
        started_at: datetime,
        ended_at: datetime,
        action: str | None = None,
        params: dict[str, Any] | None = None,
        compensation: bool = False,
        mutating: bool = True,
        output: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> StepResult:
        """The result of running ``step`` (or, with ``compensation``, its undoing), named by its
        label. ``action`` and ``params`` are what ran (the registered action, the rendered
        params); by default the step's own, as written in the plan."""
        return cls(
            candidate=candidate,
            order=order,
            name=step.label,
            action=step.action if action is None else action,
            params=step.params if params is None else params,
            status=status,
            compensation=compensation,
            mutating=mutating,
            output={} if output is None else output,
            error=error,
            started_at=started_at,
            ended_at=ended_at,
        )


class ValidationResult(BaseModel):
    healthy: bool
    checks: int
    failures: int
    window_s: float
    detail: str = ""
    criteria: list[CriterionResult] = Field(
        default_factory=list, description="each criterion's verdict with the values seen"
    )
    breach: GuardBreach | None = Field(
        default=None, description="a side-effect guard that tripped during the window"
    )
    started_at: datetime | None = Field(default=None, description="set by the workflow")
    ended_at: datetime | None = Field(default=None, description="set by the workflow")

    @classmethod
    def unchecked(cls, window_s: float, detail: str) -> ValidationResult:
        """Not healthy, because no check could run (nothing to probe, validation failed)."""
        return cls(healthy=False, checks=0, failures=0, window_s=window_s, detail=detail)


class Approval(BaseModel):
    approved: bool
    by: str
    reason: str = ""
    at: datetime


class ApprovalDecision(BaseModel):
    """The argument of the ``approve`` and ``reject`` updates and signals."""

    by: str = ""
    reason: str = ""


class HealingPolicy(BaseModel):
    """Worker-side policy, loaded by an activity: no start path can weaken the approval gate."""

    approval_min_confidence: float = Field(default=0.7, ge=0.0, le=1.0)
    approval_min_risk: RiskLevel = RiskLevel.HIGH
    approval_margin: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description="ask a human when the top two hypotheses are closer than this",
    )
    approval_timeout_s: float = Field(default=1800.0, gt=0)
    max_candidates: int = Field(default=3, ge=1, le=10)
    stabilization_window_s: float = Field(default=30.0, ge=0)
    validation_grace_s: float = Field(
        default=10.0,
        ge=0,
        description="after its steps, the target has this long to recover (a restarted process "
        "starting, an error window draining); the stabilization window counts from then",
    )
    probe_interval_s: float = Field(default=5.0, gt=0)
    default_plan_max_confidence: float = Field(default=0.7, ge=0.0, le=1.0)
    step_heartbeat_timeout_s: float = Field(
        default=15.0, gt=0, description="how soon a step on a dead worker is retried elsewhere"
    )
    guardrail_wait_max_s: float = Field(
        default=3600.0, ge=0, description="how long to wait on a paused kill switch or busy target"
    )
    dry_run: bool = False
    notify: bool = False
    approval: ApprovalSpec = Field(
        default_factory=ApprovalSpec,
        description="the service's approval policy (always-actions, approvers, per action)",
    )
    approval_reminder_s: float = Field(
        default=900.0, ge=0, description="remind (notify) after a pending approval waited this long"
    )
    read_retry_max_s: float = Field(
        default=600.0,
        gt=0,
        description="reads that depend on Postgres and evidence retry through outages this long",
    )
    guard_interval_s: float = Field(
        default=5.0, gt=0, description="how often side-effect guards are evaluated"
    )
    breaker_open_s: float = Field(default=30.0, gt=0)
    breaker_backoff: float = Field(default=2.0, ge=1)
    breaker_max_open_s: float = Field(default=600.0, gt=0)
    breaker_max_cycles: int = Field(default=5, ge=1)
    suppression_s: float = Field(
        default=0.0,
        ge=0,
        description="after its outcome, how long a healing keeps answering for its fingerprint: "
        "repeated reports are counted on it and start nothing (0: it ends at once)",
    )
    predicted_approval: bool = Field(
        default=True,
        description="a predicted fault (forecast) asks a human before its plan runs",
    )
    predicted_approval_timeout_s: float = Field(
        default=43_200.0,
        gt=0,
        description="a predicted fault's approval waits this long (if longer than "
        "approval_timeout_s): it is asked hours before its maintenance window",
    )


class HealingInput(BaseModel):
    fault: Fault
    dry_run: bool = Field(default=False, description="may only make the healing safer")
    require_approval: bool = Field(default=False, description="may only make the healing safer")


class HealingStatus(BaseModel):
    """Answer of the ``status`` query, and the healing's final result."""

    workflow_id: str
    run_id: str
    phase: HealingPhase
    fault: Fault
    secondary_faults: list[Fault] = Field(default_factory=list)
    occurrences: int = 1
    resolved_at: datetime | None = None
    reports_after_outcome: int = Field(
        default=0, description="reports of the fault counted after the outcome (suppressed)"
    )
    suppressed_until: datetime | None = Field(
        default=None,
        description="after its outcome the healing answers for its fingerprint until then",
    )
    diagnosis: Diagnosis | None = None
    candidates: list[RecoveryPlan] = Field(default_factory=list)
    current_candidate: int | None = None
    approval_required: bool = False
    approval_reasons: list[str] = Field(default_factory=list)
    awaiting_approval: bool = False
    approval: Approval | None = None
    waiting_on: str | None = Field(
        default=None, description="the guardrail the healing is waiting on, e.g. the kill switch"
    )
    steps: list[StepResult] = Field(default_factory=list)
    validations: list[ValidationResult] = Field(default_factory=list)
    breaches: list[GuardBreach] = Field(
        default_factory=list, description="side-effect guards that tripped, with their values"
    )
    breaker: BreakerStatus | None = Field(
        default=None, description="the breaker kept over a degradation step, with its history"
    )
    approvers: list[str] = Field(
        default_factory=list, description="who may decide the pending approval (empty: anyone)"
    )
    awaiting_since: datetime | None = Field(
        default=None, description="when the pending approval was asked for"
    )
    resolution_disputed: list[str] = Field(
        default_factory=list,
        description="'resolved' reports the evidence did not confirm (the healing went on)",
    )
    window: ChosenWindow | None = Field(
        default=None, description="a predicted fault's: when its plan runs (a maintenance window)"
    )
    recheck: Prediction | None = Field(
        default=None, description="a predicted fault's forecast, made again before acting"
    )
    outcome: HealingOutcome | None = None
    outcome_detail: str = ""
    solution_name: str | None = None
    dry_run: bool = False
    started_at: datetime
    ended_at: datetime | None = None
    time_to_recover_s: float | None = None
