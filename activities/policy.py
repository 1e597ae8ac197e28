"""The healing policy lives on the worker: a starter cannot weaken the approval gate.

The suppression window is the service's: ``SELFHEAL_HEALING__SUPPRESSION_S`` when set (0 turns
it off), else the service's ``cooldown_s`` from the catalog, at least ``MIN_SUPPRESSION_S``.
"""

from __future__ import annotations

from selfheal.core.catalog import ServiceCatalog
from selfheal.domain import HealingPolicy
from selfheal.domain.payloads import LoadPolicyInput
from selfheal.workflows.contract import LOAD_POLICY, implements

MIN_SUPPRESSION_S = 300.0


class PolicyActivities:
    def __init__(
        self,
        policy: HealingPolicy,
        catalog: ServiceCatalog | None = None,
        *,
        suppression_s: float | None = None,
    ) -> None:
        self._policy = policy
        self._catalog = catalog
        self._suppression_s = suppression_s

    def suppression_for(self, service: str) -> float:
        if self._suppression_s is not None:
            return self._suppression_s
        spec = self._catalog.get(service) if self._catalog is not None else None
        cooldown = spec.cooldown_s if spec is not None else 0.0
        return max(cooldown, MIN_SUPPRESSION_S)

    @implements(LOAD_POLICY)
    async def load_policy(self, input: LoadPolicyInput) -> HealingPolicy:
        return self._policy.model_copy(
            update={"suppression_s": self.suppression_for(input.service)}
        )
