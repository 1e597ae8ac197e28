"""Knowledge-base activities: plans for a diagnosis, and the outcome that teaches the KB.

The repository is synchronous (SQLAlchemy sessions), so its calls run in a thread: the worker's
event loop keeps serving other activities while Postgres answers.
"""

from __future__ import annotations

import asyncio

import structlog
from sqlalchemy.orm import Session, sessionmaker

from selfheal.activities.actions.registry import ActionRegistry
from selfheal.activities.errors import as_application_error
from selfheal.domain import RecoveryPlan, RecoveryStep, RiskLevel, SelfhealError, Solution
from selfheal.domain.payloads import (
    FindSolutionsInput,
    FindSolutionsResult,
    RecordOutcomeInput,
    RecordOutcomeResult,
)
from selfheal.models.knowledge_base import KnowledgeBase
from selfheal.workflows.contract import FIND_SOLUTIONS, RECORD_OUTCOME, implements

log = structlog.get_logger(__name__)


class KnowledgeBaseActivities:
    def __init__(self, session_factory: sessionmaker[Session], registry: ActionRegistry) -> None:
        self._kb = KnowledgeBase(session_factory)
        self._registry = registry

    @implements(FIND_SOLUTIONS)
    async def find_solutions(self, input: FindSolutionsInput) -> FindSolutionsResult:
        """The KB's plans for the root cause, best first, and the rule's default plan.

        A plan this worker cannot run (an action no longer registered, a step that no longer
        declares its undo) is left out, so the limit counts runnable plans only.
        """
        try:
            solutions = await asyncio.to_thread(
                self._kb.find_solutions, input.diagnosis.root_cause, input.fault.service
            )
        except SelfhealError as exc:
            raise as_application_error(exc) from exc
        plans: list[RecoveryPlan] = []
        for solution in solutions:
            if len(plans) >= input.limit:
                break
            plan = self._solution_plan(solution)
            if plan is not None:
                plans.append(plan)
        return FindSolutionsResult(plans=plans, default_plan=self._default_plan(input))

    @implements(RECORD_OUTCOME)
    async def record_outcome(self, input: RecordOutcomeInput) -> RecordOutcomeResult:
        try:
            return await asyncio.to_thread(self._kb.record_outcome, input)
        except SelfhealError as exc:
            raise as_application_error(exc) from exc

    def _solution_plan(self, solution: Solution) -> RecoveryPlan | None:
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
            success_rate=solution.success_rate,
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
