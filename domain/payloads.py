"""Inputs and results of every activity.

Which activity takes and returns which is the contract's (``selfheal.workflows.contract``:
``RUN_STEP`` = ``run_step``, ``RunStepInput`` → ``StepResult``, ...).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from selfheal.domain.criteria import GuardBreach, ValidationCriterion
from selfheal.domain.fault import Fault
from selfheal.domain.healing import (
    Diagnosis,
    Evidence,
    HealingStatus,
    RecoveryPlan,
    RecoveryStep,
    StepResult,
)


class LoadPolicyInput(BaseModel):
    service: str


class CollectEvidenceInput(BaseModel):
    fault: Fault


class DiagnoseInput(BaseModel):
    fault: Fault
    evidence: Evidence


class FindSolutionsInput(BaseModel):
    fault: Fault
    diagnosis: Diagnosis
    limit: int = 3


class FindSolutionsResult(BaseModel):
    plans: list[RecoveryPlan] = Field(description="knowledge-base plans, best first")
    default_plan: RecoveryPlan | None = Field(
        default=None, description="the diagnosis rule's default plan, with its risk computed"
    )


class RunStepInput(BaseModel):
    workflow_id: str
    run_id: str = ""
    candidate: int
    order: int
    step: RecoveryStep
    fault: Fault
    dry_run: bool = False

    @property
    def idempotency_key(self) -> str:
        # The run id matters: the same fault healed again later reuses the workflow id.
        return f"{self.workflow_id}/{self.run_id}/{self.candidate}/{self.order}"


class CompensateStepInput(BaseModel):
    workflow_id: str
    run_id: str = ""
    candidate: int
    order: int
    step: RecoveryStep
    fault: Fault
    result: StepResult = Field(description="the forward run being undone; output holds undo state")
    dry_run: bool = False

    @property
    def idempotency_key(self) -> str:
        return f"{self.workflow_id}/{self.run_id}/{self.candidate}/{self.order}/compensate"


class ValidateRecoveryInput(BaseModel):
    fault: Fault
    window_s: float
    interval_s: float
    grace_s: float | None = Field(
        default=None,
        description="the target must recover within this long, then stay healthy for "
        "window_s; None: min(interval_s, 5 s), the window counted from the start",
    )
    criteria: list[ValidationCriterion] = Field(
        default_factory=list,
        description="the plan's criteria; empty: the service's (services.yaml), else the "
        "health probe and catalog metric as before",
    )
    resolved_at: datetime | None = Field(
        default=None,
        description="when the healing received the fault's 'resolved' report (alert_resolved "
        "holds from then on without asking Alertmanager)",
    )


class WatchSideEffectsInput(BaseModel):
    """Watch the guards of ``fault.service`` and of the services that depend on it, from the
    moment the activity starts (its baseline) until cancelled or a guard trips."""

    workflow_id: str
    fault: Fault
    interval_s: float = 5.0


class WatchSideEffectsResult(BaseModel):
    breach: GuardBreach | None = Field(default=None, description="None: cancelled, nothing tripped")
    watched: list[str] = Field(
        default_factory=list, description="'<service>:<guard>' of every guard watched"
    )
    skipped: list[str] = Field(
        default_factory=list,
        description="guards not watched, with why ('checkout:connection_pool: no query "
        "pool_usage', 'already tripped at start')",
    )


class ProbeDependencyInput(BaseModel):
    """Is the dependency behind a breaker healthy? ``trials`` probes, all must pass."""

    service: str = Field(description="the degraded service")
    dependency: str | None = Field(
        default=None, description="the service to probe; None: every dependency of ``service``"
    )
    trials: int = 3


class ProbeDependencyResult(BaseModel):
    healthy: bool
    probed: list[str] = Field(default_factory=list, description="the services probed")
    detail: str = ""


class SolutionAttempt(BaseModel):
    candidate: int
    solution_id: int | None
    solution_name: str
    succeeded: bool


class RecordOutcomeInput(BaseModel):
    status: HealingStatus
    attempts: list[SolutionAttempt] = Field(default_factory=list)


class RecordOutcomeResult(BaseModel):
    healing_id: int
    already_recorded: bool = False


NotifyEvent = Literal["outcome", "reminder", "resolved"]


class NotifyInput(BaseModel):
    status: HealingStatus
    extra: dict[str, Any] = Field(default_factory=dict)
    event: NotifyEvent = Field(
        default="outcome",
        description="outcome: the healing ended; reminder: an approval still waits; resolved: "
        "the fault of an escalated healing resolved (PagerDuty 'resolve')",
    )


class CheckGuardrailsInput(BaseModel):
    """Asked at the start of a healing (``step`` None: cooldown, kill switch, budget) and right
    before every mutating step (allowlists, blast radius, one healing per target, is the fault
    still firing?)."""

    workflow_id: str
    run_id: str
    fault: Fault
    step: RecoveryStep | None = None
    candidate: int | None = None
    order: int | None = None
    dry_run: bool = False
    symptom: Fault | None = Field(
        default=None,
        description="the reported fault, when ``fault`` is the diagnosed component's: the "
        "recheck asks whether the symptom is still there",
    )


class GuardrailDecision(BaseModel):
    allowed: bool
    rule: str = Field(default="", description="the rule that refused, e.g. 'cooldown'")
    reason: str = ""
    fault_resolved: bool = Field(
        default=False, description="refused because the fault is no longer firing"
    )
    retry_after_s: float | None = Field(
        default=None, description="when waiting may help (kill switch set to wait, target busy)"
    )


class ReleaseTargetInput(BaseModel):
    workflow_id: str
    run_id: str
    fault: Fault
