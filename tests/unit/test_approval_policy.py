"""The approval policy a healing gets (``load_policy``): the worker's, with the service's over it,
never weaker; who may decide; and the example of docs/approval.md, as an operator copies it."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from selfheal.activities.policy import MIN_SUPPRESSION_S, PolicyActivities, merge_approval
from selfheal.core.catalog import ServiceCatalog, ServiceSpec, TargetSpec, load_services
from selfheal.domain import HealingPolicy, RiskLevel
from selfheal.domain.criteria import ActionApproval, ApprovalSpec
from selfheal.domain.payloads import LoadPolicyInput

DOC = Path(__file__).resolve().parents[2] / "docs" / "approval.md"
WORKER = HealingPolicy(approval_min_risk=RiskLevel.HIGH, approval_min_confidence=0.7)


def service(approval: ApprovalSpec | None = None, **fields: object) -> ServiceSpec:
    return ServiceSpec.model_validate(
        {
            "name": "checkout",
            "targets": [TargetSpec(name="checkout", kind="process")],
            "approval": approval or ApprovalSpec(),
            **fields,
        }
    )


def loaded(spec: ServiceSpec | None, approvers: list[str] | None = None) -> HealingPolicy:
    catalog = ServiceCatalog(services=[spec] if spec is not None else [])
    activities = PolicyActivities(WORKER, catalog, approvers=approvers)
    return asyncio.run(activities.load_policy(LoadPolicyInput(service="checkout")))


@pytest.mark.parametrize(
    ("service_risk", "service_confidence", "risk", "confidence"),
    [
        (None, None, RiskLevel.HIGH, 0.7),  # the service says nothing: the worker's
        (RiskLevel.MEDIUM, 0.9, RiskLevel.MEDIUM, 0.9),  # the service asks more: its own
        (RiskLevel.LOW, None, RiskLevel.LOW, 0.7),
        (RiskLevel.CRITICAL, 0.5, RiskLevel.HIGH, 0.7),  # asks less: the worker's stand
        (RiskLevel.HIGH, 0.7, RiskLevel.HIGH, 0.7),
    ],
)
def test_a_service_can_only_ask_for_more_approval(
    service_risk: RiskLevel | None,
    service_confidence: float | None,
    risk: RiskLevel,
    confidence: float,
) -> None:
    spec = service(ApprovalSpec(min_risk=service_risk, min_confidence=service_confidence))

    policy = loaded(spec)

    assert (policy.approval_min_risk, policy.approval_min_confidence) == (risk, confidence)
    # The merged spec states the thresholds in force, not the service's weaker ones.
    assert (policy.approval.min_risk, policy.approval.min_confidence) == (risk, confidence)


def test_always_and_actions_come_from_the_service() -> None:
    spec = service(
        ApprovalSpec(
            always=["redis.*"],
            actions={"process.restart": ActionApproval(min_confidence=0.9, approvers=["bob"])},
        )
    )

    approval = loaded(spec).approval

    assert approval.always == ["redis.*"]
    [rule] = approval.action_rules("process.restart")
    assert (rule.min_confidence, rule.approvers) == (0.9, ["bob"])
    assert approval.action_rules("http.degrade") == []


@pytest.mark.parametrize(
    ("service_approvers", "worker_approvers", "expected"),
    [
        (["name:alice"], ["name:ops"], ["name:alice"]),  # the service's list when it has one
        ([], ["name:ops"], ["name:ops"]),  # else the worker's
        ([], None, []),  # neither: anyone who may send the update
    ],
)
def test_approvers_are_the_services_else_the_workers(
    service_approvers: list[str], worker_approvers: list[str] | None, expected: list[str]
) -> None:
    spec = service(ApprovalSpec(approvers=service_approvers))

    assert loaded(spec, worker_approvers).approval.approvers == expected


def test_a_service_outside_the_catalog_gets_the_workers_policy() -> None:
    policy = loaded(None, ["name:ops"])

    assert (policy.approval_min_risk, policy.approval_min_confidence) == (RiskLevel.HIGH, 0.7)
    assert policy.approval.approvers == ["name:ops"]
    assert policy.approval.always == [] and policy.approval.actions == {}


def test_the_suppression_window_is_kept() -> None:
    policy = loaded(service(ApprovalSpec(min_risk=RiskLevel.LOW), cooldown_s=900))

    assert policy.suppression_s == 900
    assert loaded(service(cooldown_s=0)).suppression_s == MIN_SUPPRESSION_S


def test_merging_leaves_the_workers_policy_alone() -> None:
    merge_approval(WORKER, ApprovalSpec(min_risk=RiskLevel.LOW, approvers=["x"]), ["y"])

    assert WORKER.approval_min_risk == RiskLevel.HIGH and WORKER.approval.approvers == []


def test_the_documented_example_loads_and_asks_for_more(tmp_path: Path) -> None:
    [example] = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    path = tmp_path / "services.yaml"
    path.write_text(example)
    catalog = load_services(path)

    policy = asyncio.run(
        PolicyActivities(WORKER, catalog).load_policy(LoadPolicyInput(service="checkout"))
    )

    assert (policy.approval_min_risk, policy.approval_min_confidence) == (RiskLevel.MEDIUM, 0.8)
    assert policy.approval.always == ["redis.*"]
    assert "name:alice" in policy.approval.approvers
    [degrade] = policy.approval.action_rules("http.degrade")
    assert degrade.always and degrade.approvers == ["name:oncall-lead"]
