"""The healing policy lives on the worker: a starter cannot weaken the approval gate."""

from __future__ import annotations

from selfheal.domain import HealingPolicy
from selfheal.domain.payloads import LoadPolicyInput
from selfheal.workflows.contract import LOAD_POLICY, implements


class PolicyActivities:
    def __init__(self, policy: HealingPolicy) -> None:
        self._policy = policy

    @implements(LOAD_POLICY)
    async def load_policy(self, input: LoadPolicyInput) -> HealingPolicy:
        return self._policy
