"""The saga: compensations registered before their steps run, undone in reverse."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from selfheal.domain import RecoveryStep, StepResult


@dataclass
class Compensation:
    candidate: int
    order: int
    step: RecoveryStep
    # The forward result, filled in when the step returns; a step that failed for good may
    # still have changed its target, so it is compensated too, with what is known of it.
    result: StepResult | None = None


@dataclass
class Saga:
    pending: list[Compensation] = field(default_factory=list)

    def register(self, candidate: int, order: int, step: RecoveryStep) -> Compensation:
        entry = Compensation(candidate=candidate, order=order, step=step)
        self.pending.append(entry)
        return entry

    async def compensate(self, undo: Callable[[Compensation], Awaitable[None]]) -> None:
        """Undo every registered step, last first; each undo is attempted even if one fails."""
        while self.pending:
            await undo(self.pending.pop())

    def __bool__(self) -> bool:
        return bool(self.pending)
