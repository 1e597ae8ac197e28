"""Stand-in activities for workflow-logic tests, implementing the contract's activities
(``@implements``: the same names and exactly the same payload types as the real ones).

They keep a journal of every call so tests can assert order (compensation in reverse, the next
candidate after a failure) without depending on a target system. End-to-end tests use the real
activities instead.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

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
from selfheal.domain.criteria import BreakerSpec, GuardBreach
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
    implements,
)


def plan(name: str, *steps: str, risk: RiskLevel = RiskLevel.MEDIUM) -> RecoveryPlan:
    return RecoveryPlan(
        source="knowledge_base",
        solution_id=abs(hash(name)) % 10_000,
        solution_name=name,
        steps=[RecoveryStep(name=s, action="test.act", params={"step": s}) for s in steps],
        risk=risk,
    )


def degrade_plan(breaker: BreakerSpec | None = None, mode: str = "fallback") -> RecoveryPlan:
    """checkout's fallback (``http.degrade``), which a healing keeps as a breaker."""
    return RecoveryPlan(
        source="knowledge_base",
        solution_id=7,
        solution_name="degrade-to-fallback",
        steps=[
            RecoveryStep(
                name="fallback",
                action="http.degrade",
                params={"base_url": "http://checkout", "mode": mode},
                breaker=breaker,
            )
        ],
        risk=RiskLevel.MEDIUM,
    )


@dataclass
class Scenario:
    policy: HealingPolicy = field(
        default_factory=lambda: HealingPolicy(stabilization_window_s=0, probe_interval_s=1)
    )
    confidence: float = 0.9
    plans: list[RecoveryPlan] = field(default_factory=lambda: [plan("restart", "restart")])
    fail_steps: set[str] = field(default_factory=set)
    unhealthy_after: set[str] = field(default_factory=set)  # plan names whose validation fails
    step_delay_s: float = 0.0
    journal: list[str] = field(default_factory=list)
    recorded: list[RecordOutcomeInput] = field(default_factory=list)
    step_started: asyncio.Event = field(default_factory=asyncio.Event)
    # Guardrail answers by step name ("start" for the check at the start of a healing); each
    # entry is a list consumed in order, the last one repeating.
    guardrails: dict[str, list[GuardrailDecision]] = field(default_factory=dict)
    released: list[str] = field(default_factory=list)
    diagnosis: Diagnosis | None = None  # instead of process_crashed at ``confidence``
    # the service each activity was asked about: "plan:checkout", "step:restart:inventory", ...
    seen: list[str] = field(default_factory=list)
    # Side-effect guards: a step name -> the guard that trips once that step has run.
    breach_after: dict[str, GuardBreach] = field(default_factory=dict)
    # Breaker: the answers of the dependency probe, consumed in order, the last one repeating.
    dependency_healthy: list[bool] = field(default_factory=lambda: [True])
    probes: int = 0
    # Validation while checking a 'resolved' report (window 0): healthy or not.
    resolved_check_healthy: bool = True
    # Notifications sent: their events ("outcome", "reminder", "resolved").
    notified: list[str] = field(default_factory=list)
    validations_asked: list[ValidateRecoveryInput] = field(default_factory=list)
    # Answers of validation (stabilization windows), consumed in order, the last one repeating;
    # empty: healthy unless the plan is in unhealthy_after.
    validation_answers: list[bool] = field(default_factory=list)
    # find_solutions fails (a retryable error: the knowledge base is unreachable)
    fail_planning: bool = False
    # Predicted faults: the probability each forecast (re-check) finds, consumed in order, the
    # last one repeating; and how long after it was asked the chosen window starts.
    forecasts: list[float] = field(default_factory=lambda: [0.9])
    window_in_s: float = 0.0
    windows_asked: list[ChooseWindowInput] = field(default_factory=list)
    _current_plan: str = ""

    def seen_forecasts(self) -> list[str]:
        return [entry for entry in self.journal if entry.startswith("forecast:")]

    def activities(self) -> list[Any]:
        scenario = self

        @implements(LOAD_POLICY)
        async def load_policy(input: LoadPolicyInput) -> HealingPolicy:
            return scenario.policy

        @implements(COLLECT_EVIDENCE)
        async def collect_evidence(input: CollectEvidenceInput) -> Evidence:
            return Evidence(collected_at=datetime.now(UTC), facts={"probe_ok": False})

        @implements(DIAGNOSE_FAULT)
        async def diagnose_fault(input: DiagnoseInput) -> Diagnosis:
            if scenario.diagnosis is not None:
                return scenario.diagnosis
            return Diagnosis(
                root_cause="process_crashed", confidence=scenario.confidence, rule="test-rule"
            )

        @implements(FIND_SOLUTIONS)
        async def find_solutions(input: FindSolutionsInput) -> FindSolutionsResult:
            scenario.seen.append(f"plan:{input.fault.service}")
            if scenario.fail_planning:
                raise ApplicationError("knowledge base unreachable", type="KnowledgeBaseError")
            return FindSolutionsResult(plans=scenario.plans)

        @implements(RUN_STEP)
        async def run_step(input: RunStepInput) -> StepResult:
            started = datetime.now(UTC)
            name = input.step.name
            scenario._current_plan = next(
                p.solution_name for i, p in enumerate(scenario.plans) if i == input.candidate
            )
            scenario.journal.append(f"run:{name}")
            scenario.seen.append(f"step:{name}:{input.fault.service}")
            scenario.step_started.set()
            if scenario.step_delay_s:
                await asyncio.sleep(scenario.step_delay_s)
            if name in scenario.fail_steps:
                raise ApplicationError(f"{name} broke", type="TargetError", non_retryable=True)
            return StepResult.for_step(
                input.step,
                candidate=input.candidate,
                order=input.order,
                status=StepStatus.DRY_RUN if input.dry_run else StepStatus.SUCCEEDED,
                started_at=started,
                ended_at=datetime.now(UTC),
            )

        @implements(COMPENSATE_STEP)
        async def compensate_step(input: CompensateStepInput) -> StepResult:
            scenario.journal.append(f"undo:{input.step.name}")
            now = datetime.now(UTC)
            return StepResult.for_step(
                input.step,
                candidate=input.candidate,
                order=input.order,
                params={},
                status=StepStatus.COMPENSATED,
                compensation=True,
                started_at=now,
                ended_at=now,
            )

        @implements(VALIDATE_RECOVERY)
        async def validate_recovery(input: ValidateRecoveryInput) -> ValidationResult:
            scenario.validations_asked.append(input)
            if input.window_s == 0 and input.grace_s == 0:
                ok = scenario.resolved_check_healthy
                scenario.journal.append(f"resolved-check:{'ok' if ok else 'bad'}")
                return ValidationResult(
                    healthy=ok,
                    checks=1,
                    failures=0 if ok else 1,
                    window_s=0,
                    detail="" if ok else "health probe: connection refused",
                )
            if scenario.breach_after:
                # long enough for a watch to trip while validating
                await asyncio.sleep(0.5)
            healthy = scenario._current_plan not in scenario.unhealthy_after
            if scenario.validation_answers:
                answers = scenario.validation_answers
                healthy = answers.pop(0) if len(answers) > 1 else answers[0]
            scenario.seen.append(f"validate:{input.fault.service}")
            scenario.journal.append(f"validate:{'ok' if healthy else 'bad'}")
            return ValidationResult(
                healthy=healthy,
                checks=1,
                failures=0 if healthy else 1,
                window_s=input.window_s,
                detail="" if healthy else "probe still failing",
            )

        @implements(RECORD_OUTCOME)
        async def record_outcome(input: RecordOutcomeInput) -> RecordOutcomeResult:
            scenario.recorded.append(input)
            return RecordOutcomeResult(healing_id=len(scenario.recorded))

        @implements(CHECK_GUARDRAILS)
        async def check_guardrails(input: CheckGuardrailsInput) -> GuardrailDecision:
            key = input.step.name if input.step is not None else "start"
            symptom = input.symptom.service if input.symptom is not None else "-"
            scenario.seen.append(f"guard:{key}:{input.fault.service}:{symptom}")
            answers = scenario.guardrails.get(key)
            if not answers:
                return GuardrailDecision(allowed=True)
            scenario.journal.append(f"guard:{key}")
            return answers.pop(0) if len(answers) > 1 else answers[0]

        @implements(RELEASE_TARGET)
        async def release_target(input: ReleaseTargetInput) -> None:
            scenario.released.append(input.workflow_id)

        @implements(NOTIFY)
        async def notify(input: NotifyInput) -> bool:
            scenario.notified.append(input.event)
            return False

        @implements(WATCH_SIDE_EFFECTS)
        async def watch_side_effects(input: WatchSideEffectsInput) -> WatchSideEffectsResult:
            while True:
                for step, breach in scenario.breach_after.items():
                    if f"run:{step}" in scenario.journal and f"breach:{breach.guard}" not in (
                        scenario.journal
                    ):
                        scenario.journal.append(f"breach:{breach.guard}")
                        return WatchSideEffectsResult(breach=breach)
                activity.heartbeat()
                await asyncio.sleep(0.05)

        @implements(PROBE_DEPENDENCY)
        async def probe_dependency(input: ProbeDependencyInput) -> ProbeDependencyResult:
            answers = scenario.dependency_healthy
            healthy = answers[min(scenario.probes, len(answers) - 1)]
            scenario.probes += 1
            scenario.journal.append(f"probe:{'ok' if healthy else 'bad'}")
            return ProbeDependencyResult(
                healthy=healthy,
                probed=[input.dependency or "dep"],
                detail="answers 200" if healthy else "connection refused",
            )

        @implements(RUN_FORECAST)
        async def run_forecast(input: RunForecastInput) -> Prediction:
            answers = scenario.forecasts
            probability = answers[min(len(scenario.seen_forecasts()), len(answers) - 1)]
            scenario.journal.append(f"forecast:{probability:g}")
            return Prediction(
                rule=input.rule,
                at=datetime.now(UTC),
                probability=probability,
                min_probability=0.7,
                crossing_at=None,
                threshold=90.0,
                detail=f"stand-in: p={probability:g}",
            )

        @implements(CHOOSE_WINDOW)
        async def choose_window(input: ChooseWindowInput) -> ChosenWindow:
            scenario.windows_asked.append(input)
            scenario.journal.append("window")
            start = datetime.now(UTC) + timedelta(seconds=scenario.window_in_s)
            return ChosenWindow(
                start=start,
                end=start + timedelta(hours=2),
                act_now=scenario.window_in_s <= 0,
                reasons=["stand-in window"],
            )

        @implements(REPORT_PREDICTION)
        async def report_prediction(input: ReportPredictionInput) -> ReportPredictionResult:
            scenario.journal.append(f"report:{input.prediction.rule}")
            return ReportPredictionResult(workflow_id=None, detail="stand-in")

        return [
            run_forecast,
            choose_window,
            report_prediction,
            watch_side_effects,
            probe_dependency,
            load_policy,
            collect_evidence,
            diagnose_fault,
            find_solutions,
            run_step,
            compensate_step,
            validate_recovery,
            record_outcome,
            notify,
            check_guardrails,
            release_target,
        ]
