"""The pure rules of the newer Kubernetes actions: memory arithmetic and bounds of
``kubernetes.set_resources``, its params-dependent risk in a plan, which pods ``kubernetes.drain``
evicts, and how a PodDisruptionBudget's 429 is named. The actions themselves run against a real
apiserver in tests/integration/test_kubernetes_actions.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from selfheal.activities.actions import default_registry
from selfheal.activities.actions.kubernetes import (
    DrainParams,
    KubernetesTooManyRequests,
    SetResourcesParams,
    _api_error,
    _budget_named,
    _drain_choice,
    _raised,
    memory_bytes,
    memory_text,
)
from selfheal.domain import InvalidParams, RecoveryStep, RiskLevel, TargetError

REGISTRY = default_registry()
SET_RESOURCES = REGISTRY.get("kubernetes.set_resources")


def test_memory_quantities_in_bytes_and_back() -> None:
    assert memory_bytes("512Mi") == 512 * 2**20
    assert memory_bytes("1.5Gi") == 1536 * 2**20
    assert memory_bytes("129e6") == 129_000_000
    assert memory_bytes("1G") == 10**9
    assert memory_text(1536 * 2**20) == "1536Mi"
    assert memory_text(4 * 2**30) == "4Gi"
    assert memory_text(1000 * 1024) == "1000Ki"
    assert memory_text(1001) == "1001"


def params(**fields: Any) -> SetResourcesParams:
    parsed = SET_RESOURCES.parse({"name": "shop", **fields})
    assert isinstance(parsed, SetResourcesParams)
    return parsed


def resources(limit: str | None, request: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if limit is not None:
        found["limits"] = {"memory": limit, "cpu": "500m"}
    if request is not None:
        found["requests"] = {"memory": request}
    return found


def test_a_factor_raises_limit_and_request_together() -> None:
    assert _raised(resources("512Mi", "256Mi"), params(), "c") == ("768Mi", "384Mi")
    assert _raised(resources("512Mi", "256Mi"), params(memory_factor=2), "c") == ("1Gi", "512Mi")
    # Rounded up to a whole MiB; no request stays none.
    assert _raised(resources("100000000"), params(memory_factor=1.1), "c") == ("105Mi", None)


def test_the_ceiling_is_never_exceeded() -> None:
    assert _raised(resources("3Gi", "3Gi"), params(memory_factor=2), "c") == ("4Gi", "4Gi")
    with pytest.raises(TargetError, match="already at or above the ceiling 4Gi") as at_ceiling:
        _raised(resources("4Gi"), params(), "container 'app'")
    assert not at_ceiling.value.retryable
    assert "container 'app' of Deployment 'shop' in namespace 'default'" in str(at_ceiling.value)
    with pytest.raises(InvalidParams, match="memory_limit 5Gi is above the ceiling 4Gi"):
        params(memory_limit="5Gi")


def test_an_absolute_limit_keeps_the_request_within_it() -> None:
    assert _raised(resources("512Mi", "256Mi"), params(memory_limit="1Gi"), "c") == (
        "1Gi",
        "256Mi",
    )
    assert _raised(resources("512Mi", "384Mi"), params(memory_limit="256Mi"), "c") == (
        "256Mi",
        "256Mi",
    )
    # A container with no limit can only be given one.
    assert _raised(resources(None), params(memory_limit="1Gi"), "c") == ("1Gi", None)
    with pytest.raises(TargetError, match="has no memory limit to multiply: give memory_limit"):
        _raised(resources(None, "256Mi"), params(), "c")


@pytest.mark.parametrize(
    ("fields", "names"),
    [
        ({"memory_factor": 1}, "memory_factor: Input should be greater than 1"),
        ({"memory_factor": 5}, "memory_factor: Input should be less than or equal to 4"),
        ({"memory_factor": 3, "max_factor": 2}, "memory_factor 3 is above max_factor 2"),
        ({"memory_factor": 2, "memory_limit": "1Gi"}, "give one of 'memory_factor' or"),
        ({"memory_limit": "lots"}, "memory_limit: Value error, 'lots' is not a memory quantity"),
        ({"ceiling": "0"}, "ceiling: Value error, '0': a memory limit must be above 0"),
        ({"kind": "daemonset"}, "kind: Input should be 'deployment' or 'statefulset'"),
    ],
)
def test_bad_set_resources_params_name_the_field(fields: dict[str, Any], names: str) -> None:
    with pytest.raises(InvalidParams, match=f"^kubernetes.set_resources params: .*{names}"):
        params(**fields)


def resize(**fields: Any) -> RecoveryStep:
    return RecoveryStep(action="kubernetes.set_resources", params={"name": "shop", **fields})


@pytest.mark.parametrize(
    ("fields", "risk"),
    [
        ({"memory_limit": "1Gi"}, RiskLevel.MEDIUM),
        ({"memory_limit": "2Gi"}, RiskLevel.MEDIUM),
        ({"memory_limit": "3Gi"}, RiskLevel.HIGH),
        # A factor can go as far as the ceiling: above approve_above, a human decides.
        ({"memory_factor": 1.5}, RiskLevel.HIGH),
        ({"memory_factor": 1.5, "ceiling": "2Gi"}, RiskLevel.MEDIUM),
        ({"memory_factor": 1.5, "approve_above": "8Gi"}, RiskLevel.MEDIUM),
        ({"memory_limit": "1Gi", "approve_above": "512Mi"}, RiskLevel.HIGH),
        # Not judgeable from the plan: asks rather than guesses.
        ({"memory_limit": "${fault.labels.memory}"}, RiskLevel.HIGH),
        ({"memory_limit": "1Gi", "name": "${fault.target}"}, RiskLevel.MEDIUM),
    ],
)
def test_set_resources_risk_depends_on_how_high_it_can_go(
    fields: dict[str, Any], risk: RiskLevel
) -> None:
    assert SET_RESOURCES.step_risk(resize(**fields).params) is risk


def test_plan_risk_counts_a_step_s_params() -> None:
    wait = RecoveryStep(action="wait", params={"seconds": 1})
    assert REGISTRY.plan_risk([wait, resize(memory_limit="1Gi")], RiskLevel.LOW) is RiskLevel.MEDIUM
    assert REGISTRY.plan_risk([wait, resize(memory_limit="3Gi")], RiskLevel.LOW) is RiskLevel.HIGH
    assert REGISTRY.plan_risk([resize(memory_limit="1Gi")], RiskLevel.HIGH) is RiskLevel.HIGH
    # An action without risk_for keeps its declared level whatever its params.
    drain = RecoveryStep(action="kubernetes.drain", params={"node": "n1"})
    assert REGISTRY.plan_risk([drain], RiskLevel.LOW) is RiskLevel.HIGH


def pod(
    name: str,
    owner: str | None = "StatefulSet/db",
    *,
    ns: str = "prod",
    annotations: dict[str, str] | None = None,
    terminating: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "uid": f"uid-{name}"}
    if owner is not None:
        kind, owner_name = owner.split("/")
        meta["ownerReferences"] = [{"kind": kind, "name": owner_name, "controller": True}]
    if annotations:
        meta["annotations"] = annotations
    if terminating:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta}


def test_drain_leaves_daemonset_mirror_and_terminating_pods() -> None:
    pods = [
        pod("db-1"),
        pod("agent-x", "DaemonSet/agent"),
        pod("etcd-n1", "Node/n1", annotations={"kubernetes.io/config.mirror": "abc"}),
        pod("db-0", ns="app"),
        pod("old", terminating=True),
    ]
    chosen, skipped = _drain_choice(pods, DrainParams(node="n1"))

    assert [(r["namespace"], r["name"], r["uid"]) for r in chosen] == [
        ("app", "db-0", "uid-db-0"),
        ("prod", "db-1", "uid-db-1"),
    ]
    assert [s.split(" ")[0] for s in skipped] == ["prod/agent-x", "prod/etcd-n1", "prod/old"]
    assert "DaemonSet" in skipped[0] and "mirror pod" in skipped[1]


def test_drain_refuses_bare_pods_and_too_many_pods_before_changing_anything() -> None:
    with pytest.raises(TargetError, match=r"pods no controller owns \(prod/lonely\)") as bare:
        _drain_choice([pod("db-0"), pod("lonely", None)], DrainParams(node="n1"))
    assert not bare.value.retryable
    chosen, _ = _drain_choice([pod("lonely", None)], DrainParams(node="n1", allow_bare=True))
    assert [r["name"] for r in chosen] == ["lonely"]

    many = [pod(f"db-{i}") for i in range(3)]
    with pytest.raises(TargetError, match="has 3 pods to evict, more than max_pods 2"):
        _drain_choice(many, DrainParams(node="n1", max_pods=2))


def test_delete_pod_deletes_a_bare_pod_only_when_named() -> None:
    delete_pod = REGISTRY.get("kubernetes.delete_pod")
    delete_pod.parse({"name": "lonely", "allow_bare": True})
    with pytest.raises(InvalidParams, match="'allow_bare' needs 'name'"):
        delete_pod.parse({"selector": "app=x", "allow_bare": True})


def test_a_budget_refusal_names_the_budget() -> None:
    cause = "The disruption budget web-pdb needs 2 healthy pods and has 2 currently"
    body = {
        "kind": "Status",
        "message": "Cannot evict pod as it would violate the pod's disruption budget.",
        "reason": "TooManyRequests",
        "details": {"causes": [{"reason": "DisruptionBudget", "message": cause}]},
        "code": 429,
    }
    path = "/api/v1/namespaces/prod/pods/web-0/eviction"
    error = _api_error("POST", path, ApiException(status=429, reason="x", body=json.dumps(body)))

    assert isinstance(error, KubernetesTooManyRequests) and error.causes == [cause]
    assert (
        _budget_named(error) == f"PodDisruptionBudget 'web-pdb' allows no disruption now ({cause})"
    )
