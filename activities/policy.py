"""The healing policy lives on the worker: a starter cannot weaken the approval gate.

The suppression window is the service's: ``SELFHEAL_HEALING__SUPPRESSION_S`` when set (0 turns
it off), else the service's ``cooldown_s`` from the catalog, at least ``MIN_SUPPRESSION_S``.

The approval policy is the worker's (``SELFHEAL_HEALING__APPROVAL_*``, ``..._APPROVERS``) with
the service's ``approval:`` of ``services.yaml`` over it. A service can only ask for *more*
approval: its ``min_risk`` counts when it is lower than the worker's, its ``min_confidence``
when it is higher; its ``always`` and ``actions`` add reasons to ask. Who may decide is the
service's ``approvers`` when it lists any, else the worker's: both are the operator's own
configuration, read on the worker, so no report or starter can name an approver.
"""

from __future__ import annotations

from selfheal.core.catalog import ServiceCatalog
from selfheal.domain import HealingPolicy
from selfheal.domain.criteria import ApprovalSpec
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
        approvers: list[str] | None = None,
    ) -> None:
        self._policy = policy
        self._catalog = catalog
        self._suppression_s = suppression_s
        self._approvers = list(approvers or [])

    def suppression_for(self, service: str) -> float:
        if self._suppression_s is not None:
            return self._suppression_s
        spec = self._catalog.get(service) if self._catalog is not None else None
        cooldown = spec.cooldown_s if spec is not None else 0.0
        return max(cooldown, MIN_SUPPRESSION_S)

    def policy_for(self, service: str) -> HealingPolicy:
        """The worker's policy for a healing of ``service``: its suppression window and the
        approval policy merged with the service's (see the module)."""
        spec = self._catalog.get(service) if self._catalog is not None else None
        wanted = spec.approval if spec is not None else ApprovalSpec()
        return merge_approval(self._policy, wanted, self._approvers).model_copy(
            update={"suppression_s": self.suppression_for(service)}
        )

    @implements(LOAD_POLICY)
    async def load_policy(self, input: LoadPolicyInput) -> HealingPolicy:
        return self.policy_for(input.service)


def merge_approval(
    policy: HealingPolicy, service: ApprovalSpec, approvers: list[str]
) -> HealingPolicy:
    """``policy`` with the service's approval policy over it, never weaker than the worker's.

    ``approval.min_risk`` and ``approval.min_confidence`` of the result are the thresholds in
    force (the same as ``approval_min_risk`` and ``approval_min_confidence``), so that whoever
    reads the policy sees one answer."""
    min_risk = policy.approval_min_risk
    if service.min_risk is not None:
        min_risk = min(min_risk, service.min_risk, key=lambda level: level.rank)
    min_confidence = policy.approval_min_confidence
    if service.min_confidence is not None:
        min_confidence = max(min_confidence, service.min_confidence)
    approval = ApprovalSpec(
        min_risk=min_risk,
        min_confidence=min_confidence,
        always=list(service.always),
        approvers=list(service.approvers or approvers),
        actions={pattern: rule.model_copy() for pattern, rule in service.actions.items()},
    )
    return policy.model_copy(
        update={
            "approval_min_risk": min_risk,
            "approval_min_confidence": min_confidence,
            "approval": approval,
        }
    )
