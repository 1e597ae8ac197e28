"""The healing policy lives on the worker: a starter cannot weaken the approval gate."""

from __future__ import annotations

from temporalio import activity

from selfheal.domain import HealingPolicy
from selfheal.domain.payloads import ActivityName, LoadPolicyInput


class PolicyActivities:
    def __init__(self, policy: HealingPolicy) -> None:
        self._policy = policy

    @activity.defn(name=ActivityName.LOAD_POLICY)
    async def load_policy(self, input: LoadPolicyInput) -> HealingPolicy:
        return self._policy
