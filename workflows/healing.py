"""HealingWorkflow: one fault, one durable healing.

diagnose → plan (knowledge base, best first) → approval gate → for each candidate: run its steps
(compensations registered first), validate; on failure undo in reverse and try the next
candidate → record the outcome → notify.

Deterministic orchestration only: every side effect is an activity, called through its typed
reference in ``workflows/contract.py`` (by name, so that no I/O module is imported into the
workflow sandbox, yet typed, so that mypy sees a changed payload).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from selfheal.domain import (
        Approval,
        ApprovalDecision,
        Diagnosis,
        Fault,
        FaultUpdate,
        HealingInput,
        HealingOutcome,
        HealingPhase,
        HealingPolicy,
        HealingStatus,
        RecoveryPlan,
        RecoveryStep,
        RiskLevel,
        StepResult,
        StepStatus,
        ValidationResult,
    )
    from selfheal.domain.criteria import (
        BreakerEvent,
        BreakerSpec,
        BreakerState,
        BreakerStatus,
        GuardBreach,
        ValidationCriterion,
    )
    from selfheal.domain.forecast import (
        RULE_LABEL,
        ChooseWindowInput,
        RunForecastInput,
        is_predicted,
    )
    from selfheal.domain.payloads import (
        CheckGuardrailsInput,
        CollectEvidenceInput,
        CompensateStepInput,
        DiagnoseInput,
        FindSolutionsInput,
        GuardrailDecision,
        LoadPolicyInput,
        NotifyEvent,
        NotifyInput,
        ProbeDependencyInput,
        RecordOutcomeInput,
        ReleaseTargetInput,
        RunStepInput,
        SolutionAttempt,
        ValidateRecoveryInput,
        WatchSideEffectsInput,
    )
    from selfheal.workflows.contract import (
        CHECK_GUARDRAILS,
        CHOOSE_WINDOW,
        COLLECT_EVIDENCE,
        COMPENSATE_STEP,
        DIAGNOSE_FAULT,
        FAULT_SERVICE,
        FAULT_TYPE,
        FIND_SOLUTIONS,
        LOAD_POLICY,
        NOTIFY,
        OUTCOME,
        PHASE,
        PROBE_DEPENDENCY,
        QUERY_STATUS,
        RECORD_OUTCOME,
        RELEASE_TARGET,
        RISK_LEVEL,
        ROOT_CAUSE,
        RUN_FORECAST,
        RUN_STEP,
        SIGNAL_APPROVE,
        SIGNAL_FAULT_UPDATE,
        SIGNAL_REJECT,
        UPDATE_APPROVE,
        UPDATE_REJECT,
        VALIDATE_RECOVERY,
        WATCH_SIDE_EFFECTS,
        WORKFLOW_TYPE,
    )
    from selfheal.workflows.saga import Compensation, Saga

# Reads (policy, evidence, diagnosis, knowledge base) retry quickly and give up within minutes.
READ_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
)
# The audit must land: keep retrying for up to an hour (schedule-to-close below).
RECORD_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
)
NON_RETRYABLE_STEP_ERRORS = ["InvalidParams", "ActionNotFound"]
# Guardrails joined the workflow after its first release: histories from before replay without.
GUARDRAILS_PATCH = "guardrails-v1"
# After its outcome a healing answers for its fingerprint a while (issue: alert storms).
SUPPRESSION_PATCH = "suppression-v1"
# A refusal by these rules is about one candidate's steps: another candidate may fit.
CANDIDATE_RULES = frozenset({"allowlist", "blast_radius"})
# After acting (issue 10): approval policy and reminders, reads that outlast a database outage,
# resolutions checked against the evidence, side-effect guards, breakers, escalation on any
# unexpected error. Histories from before replay without.
AFTER_ACTING_PATCH = "after-acting-v1"
PREDICTED_PATCH = "predicted-faults-v1"
FORECAST_TIMEOUT = timedelta(seconds=60)
# The degradation modes a healing keeps as a breaker (closes them itself once the dependency
# answers).
BREAKER_ACTION = "http.degrade"
BREAKER_MODES = frozenset({"circuit_break", "fallback"})
# How long a side-effect watch may run: it is cancelled when its plan is done.
WATCH_TIMEOUT = timedelta(hours=24)


def _utc(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, tz=UTC)


def _error_text(exc: BaseException) -> str:
    """The root cause's message: an ActivityError wraps the ApplicationError that says why."""
    cause: BaseException = exc
    while isinstance(cause, ActivityError) and cause.cause is not None:
        cause = cause.cause
    if isinstance(cause, ApplicationError) and cause.type:
        return f"{cause.type}: {cause.message}"
    return str(cause) or type(cause).__name__


@dataclass
class _PlanFailure:
    reason: str
    counts: bool = True  # as a failed attempt of the solution (a refusal does not)
    escalate: bool = False  # stop the healing after compensating, no further candidate


class _Finished(Exception):
    """Ends the healing early with an outcome (raised and caught inside ``run`` only)."""

    def __init__(self, outcome: HealingOutcome, detail: str) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail


@workflow.defn(name=WORKFLOW_TYPE)
class HealingWorkflow:
    @workflow.init
    def __init__(self, input: HealingInput) -> None:
        info = workflow.info()
        self._status = HealingStatus(
            workflow_id=info.workflow_id,
            run_id=info.run_id,
            phase=HealingPhase.DIAGNOSING,
            fault=input.fault,
            occurrences=0,
            started_at=workflow.now(),
        )
        self._decision: Approval | None = None
        self._mutated = False  # True once any mutating step may have changed the target
        self._guarded = False  # guardrails are checked (every healing started since the patch)
        self._firing = True  # the last report said firing (the start signal is one)
        self._v10 = False  # the after-acting behaviour (AFTER_ACTING_PATCH)
        self._predicted = False  # a forecast's fault, handled as such (PREDICTED_PATCH)
        self._breach: GuardBreach | None = None  # a guard that tripped while the plan ran
        self._recovered_at: datetime | None = None  # validation passed (a breaker may hold on)
        self._policy = HealingPolicy()
        self._watch_handle: workflow.ActivityHandle[Any] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._nobody = False  # the approval policy leaves nobody who may decide

    @property
    def _acting(self) -> Fault:
        """What planning, guardrails and steps act on: the diagnosed component's fault when the
        diagnosis moved it to another service, else the reported fault."""
        diagnosis = self._status.diagnosis
        if diagnosis is not None and diagnosis.acting_on is not None:
            return diagnosis.acting_on
        return self._status.fault

    # ----------------------------------------------------------------------------- handlers

    @workflow.query(name=QUERY_STATUS)
    def status(self) -> HealingStatus:
        return self._status

    @workflow.signal(name=SIGNAL_FAULT_UPDATE)
    def fault_update(self, update: FaultUpdate) -> None:
        if update.kind == "fired":
            self._status.occurrences += update.count
            self._firing = True
            if self._status.outcome is not None:
                self._status.reports_after_outcome += update.count
        elif update.kind == "resolved":
            if self._status.resolved_at is None:
                self._status.resolved_at = update.at
            # The episode is over: after the outcome, a new firing may start a new healing
            # (whose guardrails decide).
            self._firing = False
        elif update.kind == "symptom" and update.fault is not None:
            # One entry per symptom: a storm of the same secondary fault must not grow the state.
            known = {f.fingerprint for f in self._status.secondary_faults}
            if update.fault.fingerprint not in known:
                self._status.secondary_faults.append(update.fault)

    @workflow.update(name=UPDATE_APPROVE)
    def approve(self, decision: ApprovalDecision) -> Approval:
        return self._decide(True, decision)

    @approve.validator
    def _validate_approve(self, decision: ApprovalDecision) -> None:
        self._validate_decision(decision)

    @workflow.update(name=UPDATE_REJECT)
    def reject(self, decision: ApprovalDecision) -> Approval:
        return self._decide(False, decision)

    @reject.validator
    def _validate_reject(self, decision: ApprovalDecision) -> None:
        self._validate_decision(decision)

    # Signals with the update names, for clients that cannot send updates. They pass the same
    # checks; a decision that would be refused as an update is dropped (and logged).
    @workflow.signal(name=SIGNAL_APPROVE)
    def approve_signal(self, decision: ApprovalDecision) -> None:
        self._decide_by_signal(True, decision)

    @workflow.signal(name=SIGNAL_REJECT)
    def reject_signal(self, decision: ApprovalDecision) -> None:
        self._decide_by_signal(False, decision)

    def _validate_decision(self, decision: ApprovalDecision) -> None:
        if not self._status.awaiting_approval:
            raise ValueError(f"healing is not awaiting approval (phase {self._status.phase})")
        by = decision.by.strip()
        if not by:
            raise ValueError("'by' is required: who approves or rejects")
        allowed = self._status.approvers
        if self._nobody:
            raise ValueError("no approver is allowed by every action rule of the plan")
        if allowed and by not in allowed:
            raise ValueError(
                f"{by!r} may not decide this healing (approvers: {', '.join(allowed)})"
            )

    def _decide(self, approved: bool, decision: ApprovalDecision) -> Approval:
        self._decision = Approval(
            approved=approved, by=decision.by.strip(), reason=decision.reason, at=workflow.now()
        )
        return self._decision

    def _decide_by_signal(self, approved: bool, decision: ApprovalDecision) -> None:
        try:
            self._validate_decision(decision)
        except ValueError as exc:
            workflow.logger.warning("approval signal ignored: %s", exc)
            return
        if self._decision is None:
            self._decide(approved, decision)

    # ---------------------------------------------------------------------------- main flow

    @workflow.run
    async def run(self, input: HealingInput) -> HealingStatus:
        fault = input.fault
        self._upsert(
            PHASE.value_set(HealingPhase.DIAGNOSING),
            FAULT_SERVICE.value_set(fault.service),
            FAULT_TYPE.value_set(fault.type),
        )
        policy = await LOAD_POLICY.execute(
            LoadPolicyInput(service=fault.service),
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=READ_RETRY,
        )
        self._status.dry_run = input.dry_run or fault.dry_run or policy.dry_run
        self._guarded = workflow.patched(GUARDRAILS_PATCH)
        self._v10 = workflow.patched(AFTER_ACTING_PATCH)
        if is_predicted(fault.type, fault.labels) and workflow.patched(PREDICTED_PATCH):
            self._predicted = True
        self._policy = policy
        attempts: list[SolutionAttempt] = []
        try:
            try:
                await self._heal(input, policy, attempts)
            except ActivityError as exc:
                if not self._v10:
                    raise
                # Whatever failed unexpectedly (a read that outlasted its retries, a bug), the
                # healing ends truthfully: escalated with the error, recorded and notified.
                raise _Finished(
                    HealingOutcome.ESCALATED,
                    f"{self._status.phase.value} failed: {_error_text(exc)}",
                ) from None
        except _Finished as finished:
            self._finish(finished.outcome, finished.detail)
        if self._guarded and not self._status.dry_run:
            await self._release()
        await self._record(attempts)
        if policy.notify:
            await self._notify()
        if policy.suppression_s > 0 and workflow.patched(SUPPRESSION_PATCH):
            await self._suppress(policy.suppression_s)
        return self._status

    async def _heal(
        self, input: HealingInput, policy: HealingPolicy, attempts: list[SolutionAttempt]
    ) -> None:
        diagnosis = await self._diagnose(input)
        candidates = await self._plan(input, policy, diagnosis)
        if self._predicted:
            # Approval first (asked for well before the window), then the window; the target is
            # held only from the window on, so a real fault of it is not kept waiting for hours.
            await self._gate(input, policy, diagnosis, candidates)
            await self._await_window()
            if self._guarded:
                await self._check_or_finish(policy)
            await self._execute(policy, candidates, attempts)
            return
        if self._guarded:
            # After planning, so an escalation carries its diagnosis, and before the gate, so
            # nobody is asked to approve a plan the guardrails would refuse. From here the
            # healing holds its target: another fault of it waits until this one is decided.
            await self._check_or_finish(policy)
        await self._gate(input, policy, diagnosis, candidates)
        await self._execute(policy, candidates, attempts)

    async def _check_or_finish(self, policy: HealingPolicy) -> None:
        """The guardrails' verdict on the plan; a refusal ends the healing (escalated, or a dry
        run saying what would be refused)."""
        decision = await self._check(policy)
        if not decision.allowed:
            refusal = f"{decision.rule}: {decision.reason}"
            if self._status.dry_run:
                raise _Finished(HealingOutcome.DRY_RUN, f"dry run: would be refused by {refusal}")
            raise _Finished(HealingOutcome.ESCALATED, f"guardrail {refusal}")

    async def _await_window(self) -> None:
        """A predicted fault: wait on a durable timer for the maintenance window chosen (or
        none: act now), then forecast again; if the crossing is no longer likely, end without
        acting (``resolved_before_action``)."""
        fault = self._status.fault
        crossing = fault.values.get("crossing_at")
        chosen = await CHOOSE_WINDOW.execute(
            ChooseWindowInput(
                service=fault.service,
                crossing_at=None if crossing is None else _utc(crossing),
                workflow_id=workflow.info().workflow_id,
            ),
            start_to_close_timeout=timedelta(seconds=30),
            **self._read_retry(),
        )
        self._status.window = chosen
        wait = (chosen.start - workflow.now()).total_seconds()
        if wait > 0:
            self._set_phase(HealingPhase.AWAITING_WINDOW)
            await workflow.sleep(wait)
        rule = fault.labels[RULE_LABEL]
        prediction = await RUN_FORECAST.execute(
            RunForecastInput(rule=rule),
            start_to_close_timeout=FORECAST_TIMEOUT,
            **self._read_retry(),
        )
        self._status.recheck = prediction
        if not prediction.predicted:
            raise _Finished(
                HealingOutcome.RESOLVED_BEFORE_ACTION,
                f"the risk went away: at the re-check a crossing is {prediction.probability:.0%} "
                f"likely, below {prediction.min_probability:.0%} ({prediction.detail})",
            )

    def _read_retry(self) -> dict[str, Any]:
        """Reads that depend on Postgres or an evidence source: retried through an outage of
        up to ``read_retry_max_s`` (bounded by the schedule-to-close timeout), then they fail
        and the healing escalates with the error."""
        if not self._v10:
            return {"retry_policy": READ_RETRY}
        return {
            "retry_policy": RetryPolicy(
                initial_interval=timedelta(seconds=1),
                backoff_coefficient=2.0,
                maximum_interval=timedelta(seconds=30),
            ),
            "schedule_to_close_timeout": timedelta(seconds=self._policy.read_retry_max_s),
        }

    async def _suppress(self, seconds: float) -> None:
        """While the fault is still reported as firing after the outcome, keep answering for
        its fingerprint: a storm's repeated reports are counted here (``reports_after_outcome``)
        and start nothing, until the window ends or the fault resolves (a new episode may then
        start a new healing). A fault already resolved ends the healing at once."""
        if self._firing:
            window = timedelta(seconds=seconds)
            self._status.suppressed_until = workflow.now() + window
            try:
                await workflow.wait_condition(lambda: not self._firing, timeout=window)
            except TimeoutError:
                return
        outcome = self._status.outcome
        if self._v10 and self._policy.notify and outcome is not None and outcome.pages:
            await self._notify("resolved")  # PagerDuty: resolve the incident it triggered

    async def _diagnose(self, input: HealingInput) -> Diagnosis:
        evidence = await COLLECT_EVIDENCE.execute(
            CollectEvidenceInput(fault=input.fault),
            start_to_close_timeout=timedelta(seconds=60),
            **self._read_retry(),
        )
        diagnosis = await DIAGNOSE_FAULT.execute(
            DiagnoseInput(fault=input.fault, evidence=evidence),
            start_to_close_timeout=timedelta(seconds=30),
            **self._read_retry(),
        )
        self._status.diagnosis = diagnosis
        self._upsert(ROOT_CAUSE.value_set(diagnosis.root_cause))
        await self._stop_if_resolved()
        return diagnosis

    async def _plan(
        self, input: HealingInput, policy: HealingPolicy, diagnosis: Diagnosis
    ) -> list[RecoveryPlan]:
        self._set_phase(HealingPhase.PLANNING)
        found = await FIND_SOLUTIONS.execute(
            FindSolutionsInput(
                fault=self._acting, diagnosis=diagnosis, limit=policy.max_candidates
            ),
            start_to_close_timeout=timedelta(seconds=30),
            **self._read_retry(),
        )
        candidates = list(found.plans[: policy.max_candidates])
        if not candidates and found.default_plan is not None:
            # A rule's default plan has not earned the knowledge base's trust: it never counts
            # as a confident diagnosis, so a human looks at it unless the gate is opened wider.
            candidates = [found.default_plan]
            if diagnosis.confidence > policy.default_plan_max_confidence:
                diagnosis = diagnosis.model_copy(
                    update={"confidence": policy.default_plan_max_confidence}
                )
                self._status.diagnosis = diagnosis
        self._status.candidates = candidates
        if not candidates:
            raise _Finished(
                HealingOutcome.ESCALATED,
                f"no known solution for root cause {diagnosis.root_cause!r}",
            )
        self._upsert(RISK_LEVEL.value_set(self._risk(candidates)))
        await self._stop_if_resolved()
        return candidates

    async def _gate(
        self,
        input: HealingInput,
        policy: HealingPolicy,
        diagnosis: Diagnosis,
        candidates: list[RecoveryPlan],
    ) -> None:
        reasons: list[str] = []
        risk = self._risk(candidates)
        if risk >= policy.approval_min_risk:
            reasons.append(f"plan risk {risk} is at least {policy.approval_min_risk}")
        if diagnosis.confidence < policy.approval_min_confidence:
            reasons.append(
                f"diagnosis confidence {diagnosis.confidence:.2f} is below "
                f"{policy.approval_min_confidence:.2f}"
            )
        ranked = diagnosis.hypotheses
        if (
            len(ranked) >= 2
            and ranked[0].confidence - ranked[1].confidence < policy.approval_margin
        ):
            reasons.append(
                f"the top two hypotheses are close: {ranked[0].root_cause} on "
                f"{ranked[0].component} {ranked[0].confidence:.2f}, {ranked[1].root_cause} on "
                f"{ranked[1].component} {ranked[1].confidence:.2f}"
            )
        if input.require_approval:
            reasons.append("approval requested when the healing was started")
        if self._predicted and policy.predicted_approval:
            reasons.append(
                "a predicted fault asks before acting (SELFHEAL_HEALING__PREDICTED_APPROVAL)"
            )
        if self._v10:
            reasons += self._policy_reasons(policy, diagnosis, candidates)
        self._status.approval_required = bool(reasons)
        self._status.approval_reasons = reasons
        if not reasons:
            return
        self._set_phase(HealingPhase.AWAITING_APPROVAL)
        self._status.awaiting_approval = True
        self._status.awaiting_since = workflow.now()
        try:
            await self._await_decision(policy)
        finally:
            self._status.awaiting_approval = False
        self._status.approval = self._decision
        await self._stop_if_resolved()
        if self._decision is not None and not self._decision.approved:
            raise _Finished(
                HealingOutcome.REJECTED,
                f"rejected by {self._decision.by}: {self._decision.reason}".rstrip(": "),
            )

    def _policy_reasons(
        self, policy: HealingPolicy, diagnosis: Diagnosis, candidates: list[RecoveryPlan]
    ) -> list[str]:
        """The service's approval policy: actions that always need approval, per-action
        confidence thresholds; and who may decide (``status.approvers``)."""
        spec = policy.approval
        reasons: list[str] = []
        approvers: list[str] = list(spec.approvers)
        named: list[str] | None = None  # approvers every matching action rule allows
        actions = sorted({step.action for plan in candidates for step in plan.steps})
        for action in actions:
            if any(fnmatchcase(action, pattern) for pattern in spec.always):
                reasons.append(f"action {action} always needs approval (service policy)")
            for rule in spec.action_rules(action):
                if rule.always:
                    reasons.append(f"action {action} always needs approval (action policy)")
                if rule.min_confidence is not None and diagnosis.confidence < rule.min_confidence:
                    reasons.append(
                        f"diagnosis confidence {diagnosis.confidence:.2f} is below "
                        f"{rule.min_confidence:.2f} for action {action}"
                    )
                if rule.approvers is not None:
                    # an action's approvers replace the service's; several: all must allow
                    named = (
                        list(rule.approvers)
                        if named is None
                        else [a for a in named if a in rule.approvers]
                    )
        if named is not None:
            approvers = named
            if not named:
                self._nobody = True
                reasons.append(
                    "no approver is allowed by every action rule of the plan: nobody can "
                    "approve it (it will time out); fix the service's approval policy"
                )
        self._status.approvers = sorted(set(approvers))
        return list(dict.fromkeys(reasons))

    async def _await_decision(self, policy: HealingPolicy) -> None:
        """Wait for a decision (or a resolution the evidence confirms), reminding the approvers
        every ``approval_reminder_s``; time out after ``approval_timeout_s`` (a predicted fault:
        ``predicted_approval_timeout_s``, if longer: it is asked hours before its window)."""
        timeout_s = policy.approval_timeout_s
        if self._predicted:
            timeout_s = max(timeout_s, policy.predicted_approval_timeout_s)
        deadline = workflow.now() + timedelta(seconds=timeout_s)
        reminder = policy.approval_reminder_s if self._v10 and policy.notify else 0.0
        while True:
            left = (deadline - workflow.now()).total_seconds()
            if left <= 0:
                raise _Finished(
                    HealingOutcome.APPROVAL_TIMEOUT,
                    f"no decision within {timeout_s:.0f}s; nothing was executed",
                )
            wait = min(left, reminder) if reminder > 0 else left
            try:
                await workflow.wait_condition(
                    lambda: self._decision is not None or self._status.resolved_at is not None,
                    timeout=timedelta(seconds=wait),
                    timeout_summary="approval reminder" if wait < left else "approval timeout",
                )
            except TimeoutError:
                if wait < left:
                    await self._notify("reminder")
                continue
            if self._decision is not None:
                return
            # a resolution: ends the healing if the evidence agrees, else keep waiting
            await self._stop_if_resolved()

    async def _execute(
        self,
        policy: HealingPolicy,
        candidates: list[RecoveryPlan],
        attempts: list[SolutionAttempt],
    ) -> None:
        failures: list[str] = []
        for index, plan in enumerate(candidates):
            self._status.current_candidate = index
            self._status.solution_name = plan.solution_name
            saga = Saga()
            self._breach = None  # a guard tripped by the previous candidate is not this one's
            try:
                failure = await self._run_plan(policy, index, plan, saga)
                if self._status.dry_run:
                    raise _Finished(
                        HealingOutcome.DRY_RUN,
                        f"dry run: {plan.solution_name} would run {len(plan.steps)} step(s)",
                    )
                if failure is None:
                    invalid = await self._validate(policy, plan)
                    failure = _PlanFailure(invalid) if invalid else None
            finally:
                await self._unwatch()
            if failure is None:
                attempts.append(self._attempt(index, plan, succeeded=True))
                self._recovered_at = workflow.now()
                open_detail = await self._keep_breaker(policy, plan, saga)
                if open_detail is not None:
                    raise _Finished(HealingOutcome.ESCALATED, open_detail)
                detail = f"healed by {plan.solution_name}"
                if self._status.breaker is not None:
                    detail += f"; breaker closed after {self._status.breaker.cycles} cycle(s)"
                raise _Finished(HealingOutcome.HEALED, detail)
            failures.append(f"{plan.solution_name}: {failure.reason}")
            if saga:
                self._set_phase(HealingPhase.COMPENSATING)
                await saga.compensate(lambda entry: self._compensate(entry))
            if failure.counts:
                attempts.append(self._attempt(index, plan, succeeded=False))
            if failure.escalate:
                raise _Finished(HealingOutcome.ESCALATED, failure.reason)
        raise _Finished(
            HealingOutcome.ESCALATED,
            f"all {len(candidates)} candidate(s) failed: " + "; ".join(failures),
        )

    async def _run_plan(
        self, policy: HealingPolicy, index: int, plan: RecoveryPlan, saga: Saga
    ) -> _PlanFailure | None:
        """Run the plan's steps in order; why it failed, or None."""
        self._set_phase(HealingPhase.EXECUTING)
        for order, step in enumerate(plan.steps):
            if self._breach is not None:
                return self._breached()
            await self._stop_if_resolved()
            if self._guarded:
                decision = await self._check(policy, step, index, order)
                if not decision.allowed:
                    refusal = self._refused(decision, index, order, step)
                    if self._status.dry_run:
                        continue  # a dry run shows every refusal and runs nothing anyway
                    return refusal
            if self._v10 and not self._status.dry_run and self._watch_task is None:
                # from right before the first step runs: the guards' baseline
                self._watch_task = self._watch(policy)
            entry = saga.register(index, order, step)
            started = workflow.now()
            try:
                result = await RUN_STEP.execute(
                    RunStepInput(
                        workflow_id=self._status.workflow_id,
                        run_id=self._status.run_id,
                        candidate=index,
                        order=order,
                        step=step,
                        fault=self._acting,
                        dry_run=self._status.dry_run,
                    ),
                    start_to_close_timeout=timedelta(seconds=step.timeout_s),
                    heartbeat_timeout=timedelta(
                        seconds=min(step.timeout_s, policy.step_heartbeat_timeout_s)
                    ),
                    retry_policy=RetryPolicy(
                        initial_interval=timedelta(seconds=1),
                        backoff_coefficient=2.0,
                        maximum_interval=timedelta(seconds=30),
                        maximum_attempts=step.max_attempts,
                        non_retryable_error_types=NON_RETRYABLE_STEP_ERRORS,
                    ),
                )
            except ActivityError as exc:
                self._mutated = self._mutated or not self._status.dry_run
                error = _error_text(exc)
                result = StepResult.for_step(
                    step,
                    candidate=index,
                    order=order,
                    status=StepStatus.FAILED,
                    error=error,
                    started_at=started,
                    ended_at=workflow.now(),
                )
                entry.result = result
                self._status.steps.append(result)
                return _PlanFailure(f"step {order + 1} ({step.label}) failed: {error}")
            entry.result = result
            self._status.steps.append(result)
            if result.status == StepStatus.SUCCEEDED and result.mutating:
                self._mutated = True
        if self._breach is not None:
            return self._breached()
        return None

    # ------------------------------------------------------------------------- side effects

    def _watch(self, policy: HealingPolicy) -> asyncio.Task[None]:
        """Watch the side-effect guards from before the plan's first step until its validation
        ends; a breach sets ``_breach`` (the plan stops after its current step)."""
        handle = WATCH_SIDE_EFFECTS.start(
            WatchSideEffectsInput(
                workflow_id=self._status.workflow_id,
                fault=self._acting,
                interval_s=policy.guard_interval_s,
            ),
            start_to_close_timeout=WATCH_TIMEOUT,
            heartbeat_timeout=timedelta(seconds=policy.guard_interval_s + 30),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=1),
                maximum_interval=timedelta(seconds=30),
                maximum_attempts=5,
            ),
        )

        async def watching() -> None:
            try:
                result = await handle
            except asyncio.CancelledError:
                return
            except ActivityError as exc:
                if not isinstance(exc.cause, CancelledError):  # cancelled: the plan is done
                    workflow.logger.warning("side-effect watch failed: %s", _error_text(exc))
                return
            if result.breach is not None:
                self._breach = result.breach.model_copy(update={"at": workflow.now()})
                self._status.breaches.append(self._breach)

        self._watch_handle = handle
        return asyncio.create_task(watching())

    async def _unwatch(self) -> None:
        task, self._watch_task = self._watch_task, None
        if task is None:
            return
        if not task.done() and self._watch_handle is not None:
            self._watch_handle.cancel()
        await task

    def _breached(self) -> _PlanFailure:
        breach = self._breach
        assert breach is not None
        baseline = f" (was {breach.baseline:g})" if breach.baseline is not None else ""
        return _PlanFailure(
            f"side-effect guard {breach.guard} tripped on {breach.service}: {breach.expr}, "
            f"value {breach.value:g}{baseline}"
        )

    # ------------------------------------------------------------------------------ breaker

    async def _keep_breaker(
        self, policy: HealingPolicy, plan: RecoveryPlan, saga: Saga
    ) -> str | None:
        """Keep a circuit-break or fallback degradation as a breaker: open for ``open_s``,
        then half-open: probe the dependency; healthy → close (restore the switch, the step's
        compensation); else open again, ``backoff`` times longer. After ``max_cycles``
        half-open probes, the breaker is left open: what to say in the escalation. Durable
        timers: a worker restart changes nothing. None when closed (or nothing to keep)."""
        if not self._v10 or self._status.dry_run:
            return None
        entry = next(
            (
                e
                for e in saga.pending
                if e.step.action == BREAKER_ACTION
                and e.step.params.get("mode") in BREAKER_MODES
                and (e.step.breaker is None or e.step.breaker.enabled)
                and e.result is not None
                and e.result.status == StepStatus.SUCCEEDED
            ),
            None,
        )
        if entry is None:
            return None
        spec = entry.step.breaker or BreakerSpec()
        open_s = spec.open_s or policy.breaker_open_s
        backoff = spec.backoff or policy.breaker_backoff
        max_open_s = spec.max_open_s or policy.breaker_max_open_s
        max_cycles = spec.max_cycles or policy.breaker_max_cycles
        diagnosis = self._status.diagnosis
        dependency = spec.dependency
        if dependency is None and diagnosis is not None and diagnosis.component:
            if diagnosis.component != self._acting.service:
                dependency = diagnosis.component
        breaker = BreakerStatus(state="open", step=entry.step.label, dependency=dependency)
        self._status.breaker = breaker
        self._set_phase(HealingPhase.BREAKER_OPEN)
        self._breaker_event("open", f"{entry.step.label} applied; open for {open_s:g}s")
        while True:
            breaker.open_until = workflow.now() + timedelta(seconds=open_s)
            await workflow.sleep(timedelta(seconds=open_s), summary="breaker open")
            breaker.cycles += 1
            breaker.open_until = None
            self._breaker_event("half_open", f"probe {breaker.cycles} of {max_cycles}")
            probe = await PROBE_DEPENDENCY.execute(
                ProbeDependencyInput(
                    service=self._acting.service, dependency=dependency, trials=spec.trials
                ),
                start_to_close_timeout=timedelta(seconds=60 + 10 * spec.trials),
                retry_policy=READ_RETRY,
            )
            detail = probe.detail
            if probe.healthy:
                # Half-open: let the traffic through again (restore the switch), and keep it
                # so only if the reported fault stays away; else degrade again.
                await self._compensate(entry)
                restored = self._status.steps[-1]
                if restored.status == StepStatus.COMPENSATION_FAILED:
                    self._breaker_event("open", f"closing failed: {restored.error}")
                    return (
                        f"dependency {', '.join(probe.probed) or '?'} recovered but the breaker "
                        f"could not be closed ({restored.error}); it is left open"
                    )
                trial = await self._validate(policy, plan, trial=True)
                if trial is None:
                    saga.pending.remove(entry)
                    self._breaker_event("closed", probe.detail or "dependency healthy")
                    return None
                detail = f"dependency answered, but with the switch restored {trial}"
                reopened = await self._reapply(policy, entry)
                if reopened is not None:
                    self._breaker_event("open", f"could not open again: {reopened}")
                    return f"the breaker could not be opened again ({reopened})"
                self._set_phase(HealingPhase.BREAKER_OPEN)
            if breaker.cycles >= max_cycles:
                self._breaker_event("open", f"left open: {detail}")
                return (
                    f"healed by {self._status.solution_name}, but the dependency "
                    f"{', '.join(probe.probed) or dependency or '?'} is still unhealthy after "
                    f"{breaker.cycles} half-open probe(s) ({detail}); the breaker "
                    f"({entry.step.label}) is left open"
                )
            open_s = min(open_s * backoff, max_open_s)
            self._breaker_event("open", f"{detail}; open again for {open_s:g}s")

    async def _reapply(self, policy: HealingPolicy, entry: Compensation) -> str | None:
        """Open the breaker again: run the degradation step once more (a new activity, its own
        idempotency key per cycle); None when it applied, else why not."""
        assert self._status.breaker is not None
        cycle = self._status.breaker.cycles
        started = workflow.now()
        try:
            result = await RUN_STEP.execute(
                RunStepInput(
                    workflow_id=self._status.workflow_id,
                    run_id=f"{self._status.run_id}/breaker-{cycle}",
                    candidate=entry.candidate,
                    order=entry.order,
                    step=entry.step,
                    fault=self._acting,
                ),
                start_to_close_timeout=timedelta(seconds=entry.step.timeout_s),
                heartbeat_timeout=timedelta(
                    seconds=min(entry.step.timeout_s, policy.step_heartbeat_timeout_s)
                ),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=1),
                    maximum_interval=timedelta(seconds=30),
                    maximum_attempts=entry.step.max_attempts,
                    non_retryable_error_types=NON_RETRYABLE_STEP_ERRORS,
                ),
            )
        except ActivityError as exc:
            error = _error_text(exc)
            self._status.steps.append(
                StepResult.for_step(
                    entry.step,
                    candidate=entry.candidate,
                    order=entry.order,
                    status=StepStatus.FAILED,
                    error=error,
                    started_at=started,
                    ended_at=workflow.now(),
                )
            )
            return error
        entry.result = result  # what a later close restores from
        self._status.steps.append(result)
        return None

    def _breaker_event(self, state: BreakerState, detail: str) -> None:
        breaker = self._status.breaker
        assert breaker is not None
        breaker.state = state
        breaker.history.append(BreakerEvent(state=breaker.state, at=workflow.now(), detail=detail))

    async def _check(
        self,
        policy: HealingPolicy,
        step: RecoveryStep | None = None,
        candidate: int | None = None,
        order: int | None = None,
    ) -> GuardrailDecision:
        """Ask the guardrails; while they say waiting may help (kill switch set to wait, target
        busy), sleep and ask again, up to the policy's limit."""
        waited = 0.0
        while True:
            decision = await CHECK_GUARDRAILS.execute(
                CheckGuardrailsInput(
                    workflow_id=self._status.workflow_id,
                    run_id=self._status.run_id,
                    fault=self._acting,
                    step=step,
                    candidate=candidate,
                    order=order,
                    dry_run=self._status.dry_run,
                    symptom=self._status.fault if self._acting is not self._status.fault else None,
                ),
                start_to_close_timeout=timedelta(seconds=60),
                **self._read_retry(),
            )
            if (
                decision.allowed
                or decision.retry_after_s is None
                or self._status.dry_run
                or waited >= policy.guardrail_wait_max_s
            ):
                self._status.waiting_on = None
                return decision
            self._status.waiting_on = f"{decision.rule}: {decision.reason}"
            delay = max(1.0, min(decision.retry_after_s, policy.guardrail_wait_max_s - waited))
            await workflow.sleep(timedelta(seconds=delay), summary=f"guardrail {decision.rule}")
            waited += delay
            await self._stop_if_resolved()

    def _refused(
        self, decision: GuardrailDecision, index: int, order: int, step: RecoveryStep
    ) -> _PlanFailure | None:
        """Record a refused step; what it means for the plan (None: go on to validation)."""
        now = workflow.now()
        self._status.steps.append(
            StepResult.for_step(
                step,
                candidate=index,
                order=order,
                status=StepStatus.REFUSED,
                error=f"{decision.rule}: {decision.reason}",
                started_at=now,
                ended_at=now,
            )
        )
        reason = f"step {order + 1} ({step.label}) refused by {decision.rule}: {decision.reason}"
        if decision.fault_resolved:
            # the guardrail re-probed the fault: the evidence already agrees
            if self._status.resolved_at is None:
                self._status.resolved_at = now
            self._end_if_resolved()
            return None  # some steps ran: whether the target is healthy is validation's call
        if decision.rule in CANDIDATE_RULES:
            return _PlanFailure(reason, counts=False)
        return _PlanFailure(reason, counts=False, escalate=True)

    async def _release(self) -> None:
        await RELEASE_TARGET.execute(
            ReleaseTargetInput(
                workflow_id=self._status.workflow_id,
                run_id=self._status.run_id,
                fault=self._acting,
            ),
            start_to_close_timeout=timedelta(seconds=30),
            schedule_to_close_timeout=timedelta(hours=1),
            retry_policy=RECORD_RETRY,
        )

    async def _compensate(self, entry: Compensation) -> None:
        forward = entry.result
        if forward is None or forward.status == StepStatus.DRY_RUN or not forward.mutating:
            return
        started = workflow.now()
        try:
            result = await COMPENSATE_STEP.execute(
                CompensateStepInput(
                    workflow_id=self._status.workflow_id,
                    run_id=self._status.run_id,
                    candidate=entry.candidate,
                    order=entry.order,
                    step=entry.step,
                    fault=self._acting,
                    result=forward,
                ),
                start_to_close_timeout=timedelta(seconds=entry.step.timeout_s),
                heartbeat_timeout=timedelta(seconds=min(entry.step.timeout_s, 15.0)),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=1),
                    maximum_interval=timedelta(seconds=30),
                    maximum_attempts=max(entry.step.max_attempts, 3),
                    non_retryable_error_types=NON_RETRYABLE_STEP_ERRORS,
                ),
            )
        except ActivityError as exc:
            undo = entry.step.compensate
            result = StepResult.for_step(
                entry.step,
                candidate=entry.candidate,
                order=entry.order,
                action=undo.action if undo else None,
                params=undo.params if undo else {},
                status=StepStatus.COMPENSATION_FAILED,
                compensation=True,
                error=_error_text(exc),
                started_at=started,
                ended_at=workflow.now(),
            )
        self._status.steps.append(result)

    async def _validate(
        self, policy: HealingPolicy, plan: RecoveryPlan, *, trial: bool = False
    ) -> str | None:
        """Validate the recovery over the stabilization window; why it failed, or None. A
        breaker's half-open ``trial`` validates the same way, with no guard watching."""
        self._set_phase(HealingPhase.VALIDATING)
        window = policy.stabilization_window_s
        started = workflow.now()
        validation = ValidateRecoveryInput(
            fault=self._status.fault,
            window_s=window,
            interval_s=policy.probe_interval_s,
            grace_s=policy.validation_grace_s,
            criteria=plan.validation,
            resolved_at=self._status.resolved_at,
        )
        timeout = timedelta(seconds=window + policy.validation_grace_s + 60)
        heartbeat = timedelta(seconds=policy.probe_interval_s + 30)
        breach: GuardBreach | None = None
        try:
            if not self._v10:
                result = await VALIDATE_RECOVERY.execute(
                    validation,
                    start_to_close_timeout=timeout,
                    heartbeat_timeout=heartbeat,
                    retry_policy=READ_RETRY,
                )
            else:
                # a guard that trips during the window ends it at once
                handle = VALIDATE_RECOVERY.start(
                    validation,
                    start_to_close_timeout=timeout,
                    heartbeat_timeout=heartbeat,
                    retry_policy=READ_RETRY,
                )
                await workflow.wait_condition(lambda: handle.done() or self._breach is not None)
                if handle.done():
                    result = await handle
                else:
                    breach = self._breach
                    handle.cancel()
                    result = ValidationResult.unchecked(window, self._breached().reason)
        except ActivityError as exc:
            result = ValidationResult.unchecked(window, _error_text(exc))
        self._status.validations.append(
            result.model_copy(
                update={"started_at": started, "ended_at": workflow.now(), "breach": breach}
            )
        )
        if breach is not None:
            return self._breached().reason
        if result.healthy:
            return None
        return f"validation failed: {result.detail}"

    async def _record(self, attempts: list[SolutionAttempt]) -> None:
        try:
            await RECORD_OUTCOME.execute(
                RecordOutcomeInput(status=self._status, attempts=attempts),
                start_to_close_timeout=timedelta(seconds=30),
                schedule_to_close_timeout=timedelta(hours=1),
                retry_policy=RECORD_RETRY,
            )
        except ActivityError as exc:
            # The outcome stands (it is in this workflow's history); the audit row is missing.
            workflow.logger.error("recording the outcome failed: %s", _error_text(exc))

    async def _notify(self, event: NotifyEvent = "outcome") -> None:
        try:
            await NOTIFY.execute(
                NotifyInput(status=self._status, event=event),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=READ_RETRY,
            )
        except ActivityError as exc:
            workflow.logger.warning("notification failed: %s", _error_text(exc))

    # ------------------------------------------------------------------------------ helpers

    async def _stop_if_resolved(self) -> None:
        """A 'resolved' report ends a healing that has not acted yet only when the evidence
        agrees: one check of the fault's validation (its probe, its catalog metric). A check
        that fails is recorded (``resolution_disputed``) and the healing goes on; a fault with
        nothing to check is believed."""
        if self._status.resolved_at is None or self._mutated:
            return
        if self._v10:
            at = self._status.resolved_at
            check = await VALIDATE_RECOVERY.execute(
                ValidateRecoveryInput(
                    fault=self._status.fault,
                    window_s=0.0,
                    interval_s=1.0,
                    grace_s=0.0,
                    criteria=[ValidationCriterion(kind="probe")],
                ),
                start_to_close_timeout=timedelta(seconds=60),
                heartbeat_timeout=timedelta(seconds=45),
                retry_policy=READ_RETRY,
            )
            if not check.healthy and check.checks > 0:
                self._status.resolution_disputed.append(
                    f"{at.isoformat()}: 'resolved' reported, but {check.detail}"
                )
                self._status.resolved_at = None
                self._firing = True
                return
        self._end_if_resolved()

    def _end_if_resolved(self) -> None:
        if self._status.resolved_at is not None and not self._mutated:
            raise _Finished(
                HealingOutcome.RESOLVED_BEFORE_ACTION,
                "the fault resolved before any mutating step ran",
            )

    def _finish(self, outcome: HealingOutcome, detail: str) -> None:
        now = workflow.now()
        self._status.outcome = outcome
        self._status.outcome_detail = detail
        self._status.ended_at = now
        self._status.awaiting_approval = False
        if outcome == HealingOutcome.HEALED:
            # recovered when validation passed, even if a breaker was kept open longer
            recovered = self._recovered_at if self._recovered_at is not None else now
            self._status.time_to_recover_s = (
                recovered - self._status.fault.detected_at
            ).total_seconds()
        self._status.phase = outcome.phase
        self._upsert(PHASE.value_set(outcome.phase), OUTCOME.value_set(outcome))

    def _set_phase(self, phase: HealingPhase) -> None:
        self._status.phase = phase
        self._upsert(PHASE.value_set(phase))

    def _upsert(self, *updates: SearchAttributeUpdate[Any]) -> None:
        workflow.upsert_search_attributes(list(updates))

    @staticmethod
    def _risk(candidates: list[RecoveryPlan]) -> RiskLevel:
        return RiskLevel.highest([plan.risk for plan in candidates])

    @staticmethod
    def _attempt(index: int, plan: RecoveryPlan, *, succeeded: bool) -> SolutionAttempt:
        return SolutionAttempt(
            candidate=index,
            solution_id=plan.solution_id,
            solution_name=plan.solution_name,
            succeeded=succeeded,
        )


__all__ = ["HealingWorkflow"]
