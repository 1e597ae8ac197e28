"""No-op stand-ins for every activity of the contract, for the benches (never ``tests/``).

Each is registered under its real name (``@implements``), so a healing runs on the real
``HealingWorkflow`` and worker, and the benches measure orchestration, not a target system. The
diagnosis is confident, the plan one low-risk step, validation healthy at once: with the policy's
zero stabilization window a healing goes straight to ``healed`` without waiting on a human or a
clock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from selfheal.domain import (
    Diagnosis,
    Evidence,
    HealingPolicy,
    RecoveryPlan,
    RecoveryStep,
    RiskLevel,
    StepResult,
    StepStatus,
    ValidationResult,
)
from selfheal.domain.forecast import (
    ChooseWindowInput,
    ChosenWindow,
    Prediction,
    ReportPredictionInput,
    ReportPredictionResult,
    RunForecastInput,
)
from selfheal.domain.payloads import (
    CheckGuardrailsInput,
    CollectEvidenceInput,
    CompensateStepInput,
    DiagnoseInput,
    FindSolutionsInput,
    FindSolutionsResult,
    GuardrailDecision,
    LoadPolicyInput,
    NotifyInput,
    ProbeDependencyInput,
    ProbeDependencyResult,
    RecordOutcomeInput,
    RecordOutcomeResult,
    ReleaseTargetInput,
    RunStepInput,
    ValidateRecoveryInput,
    WatchSideEffectsInput,
    WatchSideEffectsResult,
)
from selfheal.workflows.contract import (
    CHECK_GUARDRAILS,
    CHOOSE_WINDOW,
    COLLECT_EVIDENCE,
    COMPENSATE_STEP,
    DIAGNOSE_FAULT,
    FIND_SOLUTIONS,
    LOAD_POLICY,
    NOTIFY,
    PROBE_DEPENDENCY,
    RECORD_OUTCOME,
    RELEASE_TARGET,
    REPORT_PREDICTION,
    RUN_FORECAST,
    RUN_STEP,
    VALIDATE_RECOVERY,
    WATCH_SIDE_EFFECTS,
    check_implementations,
    implements,
)

# Heals at once: no stabilization window, no notification.
QUICK_POLICY = HealingPolicy(stabilization_window_s=0, probe_interval_s=1, notify=False)
PLAN = RecoveryPlan(
    source="knowledge_base",
    solution_id=1,
    solution_name="restart",
    steps=[RecoveryStep(name="restart", action="process.restart")],
    risk=RiskLevel.LOW,
)
# Activities one healing of the plan above runs: policy, evidence, diagnosis, solutions, two
# guardrail checks, the step, the side-effect watch, validation, target release, record.
HEALING_ACTIVITIES = 11


class NoOpActivities:
    """Every activity of the contract, answering at once; ``policy`` is what load_policy says."""

    def __init__(self, policy: HealingPolicy = QUICK_POLICY) -> None:
        self.policy = policy

    def all(self) -> list[Callable[..., Any]]:
        """One implementation of every contract activity (checked), for ``build_worker``."""
        activities: list[Callable[..., Any]] = [
            self.load_policy,
            self.collect_evidence,
            self.diagnose_fault,
            self.find_solutions,
            self.run_step,
            self.compensate_step,
            self.validate_recovery,
            self.record_outcome,
            self.notify,
            self.check_guardrails,
            self.release_target,
            self.watch_side_effects,
            self.probe_dependency,
            self.run_forecast,
            self.choose_window,
            self.report_prediction,
        ]
        check_implementations(activities)
        return activities

    @implements(LOAD_POLICY)
    async def load_policy(self, input: LoadPolicyInput) -> HealingPolicy:
        return self.policy

    @implements(COLLECT_EVIDENCE)
    async def collect_evidence(self, input: CollectEvidenceInput) -> Evidence:
        return Evidence(collected_at=datetime.now(UTC), probe_ok=False, facts={"probe_ok": False})

    @implements(DIAGNOSE_FAULT)
    async def diagnose_fault(self, input: DiagnoseInput) -> Diagnosis:
        return Diagnosis(root_cause="process_crashed", confidence=0.95, rule="bench")

    @implements(FIND_SOLUTIONS)
    async def find_solutions(self, input: FindSolutionsInput) -> FindSolutionsResult:
        return FindSolutionsResult(plans=[PLAN])

    @implements(RUN_STEP)
    async def run_step(self, input: RunStepInput) -> StepResult:
        now = datetime.now(UTC)
        return StepResult.for_step(
            input.step,
            candidate=input.candidate,
            order=input.order,
            status=StepStatus.SUCCEEDED,
            started_at=now,
            ended_at=now,
        )

    @implements(COMPENSATE_STEP)
    async def compensate_step(self, input: CompensateStepInput) -> StepResult:
        now = datetime.now(UTC)
        return StepResult.for_step(
            input.step,
            candidate=input.candidate,
            order=input.order,
            status=StepStatus.COMPENSATED,
            compensation=True,
            started_at=now,
            ended_at=now,
        )

    @implements(VALIDATE_RECOVERY)
    async def validate_recovery(self, input: ValidateRecoveryInput) -> ValidationResult:
        return ValidationResult(healthy=True, checks=1, failures=0, window_s=input.window_s)

    @implements(RECORD_OUTCOME)
    async def record_outcome(self, input: RecordOutcomeInput) -> RecordOutcomeResult:
        return RecordOutcomeResult(healing_id=1)

    @implements(NOTIFY)
    async def notify(self, input: NotifyInput) -> bool:
        return True

    @implements(CHECK_GUARDRAILS)
    async def check_guardrails(self, input: CheckGuardrailsInput) -> GuardrailDecision:
        return GuardrailDecision(allowed=True)

    @implements(RELEASE_TARGET)
    async def release_target(self, input: ReleaseTargetInput) -> None:
        return None

    @implements(WATCH_SIDE_EFFECTS)
    async def watch_side_effects(self, input: WatchSideEffectsInput) -> WatchSideEffectsResult:
        return WatchSideEffectsResult(skipped=["bench: nothing watched"])

    @implements(PROBE_DEPENDENCY)
    async def probe_dependency(self, input: ProbeDependencyInput) -> ProbeDependencyResult:
        return ProbeDependencyResult(healthy=True)

    @implements(RUN_FORECAST)
    async def run_forecast(self, input: RunForecastInput) -> Prediction:
        return Prediction(
            rule=input.rule,
            at=datetime.now(UTC),
            probability=0.0,
            min_probability=0.7,
            crossing_at=None,
            threshold=0.0,
        )

    @implements(CHOOSE_WINDOW)
    async def choose_window(self, input: ChooseWindowInput) -> ChosenWindow:
        return ChosenWindow(start=datetime.now(UTC), act_now=True)

    @implements(REPORT_PREDICTION)
    async def report_prediction(self, input: ReportPredictionInput) -> ReportPredictionResult:
        return ReportPredictionResult(workflow_id=None, detail="bench: not reported")
