"""HealingWorkflow: one fault, one durable healing.

diagnose → plan (knowledge base, best first) → approval gate → for each candidate: run its steps
(compensations registered first), validate; on failure undo in reverse and try the next
candidate → record the outcome → notify.

Deterministic orchestration only: every side effect is an activity, called through its typed
reference in ``workflows/contract.py`` (by name, so that no I/O module is imported into the
workflow sandbox, yet typed, so that mypy sees a changed payload).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError

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
    from selfheal.domain.payloads import (
        CheckGuardrailsInput,
        CollectEvidenceInput,
        CompensateStepInput,
        DiagnoseInput,
        FindSolutionsInput,
        GuardrailDecision,
        LoadPolicyInput,
        NotifyInput,
        RecordOutcomeInput,
        ReleaseTargetInput,
        RunStepInput,
        SolutionAttempt,
        ValidateRecoveryInput,
    )
    from selfheal.workflows.contract import (
        CHECK_GUARDRAILS,
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
        QUERY_STATUS,
        RECORD_OUTCOME,
        RELEASE_TARGET,
        RISK_LEVEL,
        ROOT_CAUSE,
        RUN_STEP,
        SIGNAL_APPROVE,
        SIGNAL_FAULT_UPDATE,
        SIGNAL_REJECT,
        UPDATE_APPROVE,
        UPDATE_REJECT,
        VALIDATE_RECOVERY,
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
        if not decision.by.strip():
            raise ValueError("'by' is required: who approves or rejects")

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
        attempts: list[SolutionAttempt] = []
        try:
            diagnosis = await self._diagnose(input)
            candidates = await self._plan(input, policy, diagnosis)
            if self._guarded:
                # After planning, so an escalation carries its diagnosis, and before the gate,
                # so nobody is asked to approve a plan the guardrails would refuse.
                decision = await self._check(policy)
                if not decision.allowed:
                    refusal = f"{decision.rule}: {decision.reason}"
                    if self._status.dry_run:
                        raise _Finished(
                            HealingOutcome.DRY_RUN, f"dry run: would be refused by {refusal}"
                        )
                    raise _Finished(HealingOutcome.ESCALATED, f"guardrail {refusal}")
            await self._gate(input, policy, diagnosis, candidates)
            await self._execute(policy, candidates, attempts)
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

    async def _suppress(self, seconds: float) -> None:
        """While the fault is still reported as firing after the outcome, keep answering for
        its fingerprint: a storm's repeated reports are counted here (``reports_after_outcome``)
        and start nothing, until the window ends or the fault resolves (a new episode may then
        start a new healing). A fault already resolved ends the healing at once."""
        if not self._firing:
            return
        window = timedelta(seconds=seconds)
        self._status.suppressed_until = workflow.now() + window
        try:
            await workflow.wait_condition(lambda: not self._firing, timeout=window)
        except TimeoutError:
            pass

    async def _diagnose(self, input: HealingInput) -> Diagnosis:
        evidence = await COLLECT_EVIDENCE.execute(
            CollectEvidenceInput(fault=input.fault),
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=READ_RETRY,
        )
        diagnosis = await DIAGNOSE_FAULT.execute(
            DiagnoseInput(fault=input.fault, evidence=evidence),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=READ_RETRY,
        )
        self._status.diagnosis = diagnosis
        self._upsert(ROOT_CAUSE.value_set(diagnosis.root_cause))
        self._stop_if_resolved()
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
            retry_policy=READ_RETRY,
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
        self._stop_if_resolved()
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
        self._status.approval_required = bool(reasons)
        self._status.approval_reasons = reasons
        if not reasons:
            return
        self._set_phase(HealingPhase.AWAITING_APPROVAL)
        self._status.awaiting_approval = True
        try:
            await workflow.wait_condition(
                lambda: self._decision is not None or self._status.resolved_at is not None,
                timeout=timedelta(seconds=policy.approval_timeout_s),
                timeout_summary="approval timeout",
            )
        except TimeoutError:
            raise _Finished(
                HealingOutcome.APPROVAL_TIMEOUT,
                f"no decision within {policy.approval_timeout_s:.0f}s; nothing was executed",
            ) from None
        finally:
            self._status.awaiting_approval = False
        self._status.approval = self._decision
        self._stop_if_resolved()
        if self._decision is not None and not self._decision.approved:
            raise _Finished(
                HealingOutcome.REJECTED,
                f"rejected by {self._decision.by}: {self._decision.reason}".rstrip(": "),
            )

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
            failure = await self._run_plan(policy, index, plan, saga)
            if self._status.dry_run:
                raise _Finished(
                    HealingOutcome.DRY_RUN,
                    f"dry run: {plan.solution_name} would run {len(plan.steps)} step(s)",
                )
            if failure is None:
                invalid = await self._validate(policy)
                failure = _PlanFailure(invalid) if invalid else None
            if failure is None:
                attempts.append(self._attempt(index, plan, succeeded=True))
                raise _Finished(HealingOutcome.HEALED, f"healed by {plan.solution_name}")
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
            self._stop_if_resolved()
            if self._guarded:
                decision = await self._check(policy, step, index, order)
                if not decision.allowed:
                    refusal = self._refused(decision, index, order, step)
                    if self._status.dry_run:
                        continue  # a dry run shows every refusal and runs nothing anyway
                    return refusal
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
        return None

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
                retry_policy=READ_RETRY,
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
            self._stop_if_resolved()

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
            if self._status.resolved_at is None:
                self._status.resolved_at = now
            self._stop_if_resolved()
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

    async def _validate(self, policy: HealingPolicy) -> str | None:
        self._set_phase(HealingPhase.VALIDATING)
        window = policy.stabilization_window_s
        started = workflow.now()
        try:
            result = await VALIDATE_RECOVERY.execute(
                ValidateRecoveryInput(
                    fault=self._status.fault,
                    window_s=window,
                    interval_s=policy.probe_interval_s,
                    grace_s=policy.validation_grace_s,
                ),
                start_to_close_timeout=timedelta(seconds=window + policy.validation_grace_s + 60),
                heartbeat_timeout=timedelta(seconds=policy.probe_interval_s + 30),
                retry_policy=READ_RETRY,
            )
        except ActivityError as exc:
            result = ValidationResult.unchecked(window, _error_text(exc))
        self._status.validations.append(
            result.model_copy(update={"started_at": started, "ended_at": workflow.now()})
        )
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

    async def _notify(self) -> None:
        try:
            await NOTIFY.execute(
                NotifyInput(status=self._status),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=READ_RETRY,
            )
        except ActivityError as exc:
            workflow.logger.warning("notification failed: %s", _error_text(exc))

    # ------------------------------------------------------------------------------ helpers

    def _stop_if_resolved(self) -> None:
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
            self._status.time_to_recover_s = (now - self._status.fault.detected_at).total_seconds()
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
