"""Knowledge-base activities: plans for a diagnosis, and the outcome that teaches the KB.

The repository is synchronous (SQLAlchemy sessions), so its calls run in a thread: the worker's
event loop keeps serving other activities while Postgres answers.

The ranking is random (Thompson sampling): it is drawn here, in the activity, so the workflow's
history holds the draws and a replay reuses them; each plan carries its draw in ``sampled``.
"""

from __future__ import annotations

import asyncio

import numpy as np
import structlog
from sqlalchemy.orm import Session, sessionmaker

from selfheal.activities.actions.registry import ActionRegistry
from selfheal.activities.errors import as_application_error
from selfheal.core.settings import LearningSettings
from selfheal.domain import RecoveryPlan, RecoveryStep, RiskLevel, SelfhealError
from selfheal.domain.payloads import (
    FindSolutionsInput,
    FindSolutionsResult,
    RecordOutcomeInput,
    RecordOutcomeResult,
)
from selfheal.models.knowledge_base import KnowledgeBase, RankedSolution
from selfheal.workflows.contract import FIND_SOLUTIONS, RECORD_OUTCOME, implements

log = structlog.get_logger(__name__)


class KnowledgeBaseActivities:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        registry: ActionRegistry,
        *,
        learning: LearningSettings | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        """``learning``: the half-life and the per-service minimum of the ranking (default
        ``LearningSettings()``); ``rng``: the generator the ranking draws from (tests seed it)."""
        self._kb = KnowledgeBase(session_factory, learning=learning, rng=rng)
        self._registry = registry

    @implements(FIND_SOLUTIONS)
    async def find_solutions(self, input: FindSolutionsInput) -> FindSolutionsResult:
        """The KB's plans for the root cause, in the order of their Thompson draws, and the
        rule's default plan. ``input.fault`` is the fault acted on (the diagnosed component's),
        so its service is the one whose record ranks.

        A plan this worker cannot run (an action no longer registered, a step that no longer
        declares its undo) is left out, so the limit counts runnable plans only.
        """
        try:
            solutions = await asyncio.to_thread(
                self._kb.find_solutions, input.diagnosis.root_cause, input.fault.service
            )
        except SelfhealError as exc:
            raise as_application_error(exc) from None
        plans: list[RecoveryPlan] = []
        for ranked in solutions:
            if len(plans) >= input.limit:
                break
            plan = self._solution_plan(ranked)
            if plan is not None:
                plans.append(plan)
        log.info(
            "solutions ranked",
            root_cause=input.diagnosis.root_cause,
            service=input.fault.service,
            ranking=[
                f"{r.solution.name}: {r.sampled:.3f} (mean {r.success_rate:.2f}, {r.basis})"
                for r in solutions
            ],
        )
        return FindSolutionsResult(plans=plans, default_plan=self._default_plan(input))

    @implements(RECORD_OUTCOME)
    async def record_outcome(self, input: RecordOutcomeInput) -> RecordOutcomeResult:
        try:
            return await asyncio.to_thread(self._kb.record_outcome, input)
        except SelfhealError as exc:
            raise as_application_error(exc) from None

    def _solution_plan(self, ranked: RankedSolution) -> RecoveryPlan | None:
        solution = ranked.solution
        risk = self._plan_risk(
            solution.steps, solution.risk, f"solution {solution.name} v{solution.version}"
        )
        if risk is None:
            return None
        return RecoveryPlan(
            source="knowledge_base",
            solution_id=solution.id,
            solution_name=solution.name,
            solution_version=solution.version,
            steps=solution.steps,
            risk=risk,
            success_rate=ranked.success_rate,
            validation=solution.validation,
            sampled=ranked.sampled,
        )

    def _default_plan(self, input: FindSolutionsInput) -> RecoveryPlan | None:
        diagnosis = input.diagnosis
        if not diagnosis.default_plan:
            return None
        name = f"rule:{diagnosis.rule}"
        risk = self._plan_risk(diagnosis.default_plan, diagnosis.default_risk, name)
        if risk is None:
            return None
        return RecoveryPlan(
            source="rule_default", solution_name=name, steps=diagnosis.default_plan, risk=risk
        )

    def _plan_risk(
        self, steps: list[RecoveryStep], declared: RiskLevel, plan: str
    ) -> RiskLevel | None:
        try:
            for step in steps:
                self._registry.check_step(step)
            return self._registry.plan_risk(steps, declared)
        except SelfhealError as exc:
            log.warning("plan skipped: this worker cannot run it", plan=plan, error=str(exc))
            return None
