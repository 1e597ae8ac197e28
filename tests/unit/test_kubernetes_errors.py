"""How Kubernetes API errors become step failures, and how a 409 is retried (pure logic; the
actions themselves run against a real apiserver in tests/integration/test_kubernetes_actions.py).
"""

from __future__ import annotations

import json

import pytest
from kubernetes.client.exceptions import ApiException

from selfheal.activities.actions import default_registry
from selfheal.activities.actions.kubernetes import KubernetesConflict, _api_error, _on_conflict
from selfheal.domain import InvalidParams, TargetError


def api_exception(status: int, message: str) -> ApiException:
    body = {"kind": "Status", "status": "Failure", "message": message, "code": status}
    return ApiException(status=status, reason="x", body=json.dumps(body))


def test_forbidden_names_verb_resource_group_namespace_and_user() -> None:
    message = (
        'deployments.apps "shop" is forbidden: User "bot" cannot patch resource "deployments" '
        'in API group "apps" in the namespace "prod"'
    )
    path = "/apis/apps/v1/namespaces/prod/deployments/shop"
    error = _api_error("PATCH", path, api_exception(403, message))
    assert not error.retryable
    assert (
        "missing permission 'patch' on 'deployments' (API group 'apps') in namespace 'prod' "
        "for user 'bot'" in str(error)
    )


def test_not_found_is_final_and_conflict_is_retryable() -> None:
    path = "/api/v1/namespaces/prod/configmaps/c"
    missing = _api_error("GET", path, api_exception(404, 'configmaps "c" not found'))
    assert not missing.retryable and "in namespace 'prod'" in str(missing)
    conflict = _api_error("PATCH", path, api_exception(409, "the object has been modified"))
    assert isinstance(conflict, KubernetesConflict) and conflict.retryable
    busy = _api_error("GET", path, api_exception(503, "etcd leader changed"))
    assert busy.retryable and not isinstance(busy, KubernetesConflict)
    invalid = _api_error("PATCH", path, api_exception(422, "data key is invalid"))
    assert not invalid.retryable


async def test_a_conflict_rereads_and_reapplies_then_gives_up_retryably() -> None:
    calls: list[int] = []

    async def twice_conflicting() -> str:
        calls.append(1)
        if len(calls) <= 2:
            raise KubernetesConflict("modified")
        return "applied"

    assert await _on_conflict(twice_conflicting) == "applied" and len(calls) == 3

    async def always_conflicting() -> str:
        raise KubernetesConflict("modified")

    with pytest.raises(TargetError) as caught:
        await _on_conflict(always_conflicting)
    assert type(caught.value) is TargetError and caught.value.retryable
    assert "still conflicting" in str(caught.value)


def test_params_name_the_field_and_what_is_expected() -> None:
    registry = default_registry()
    with pytest.raises(InvalidParams, match=r"kubernetes\.scale params: name: String should match"):
        registry.get("kubernetes.scale").parse({"name": "../secrets", "replicas": 1})
    with pytest.raises(InvalidParams, match=r"exactly one of 'name' .* or 'selector'"):
        registry.get("kubernetes.delete_pod").parse({"name": "a", "selector": "app=a"})
    with pytest.raises(InvalidParams, match="replicas: Input should be greater than or equal"):
        registry.get("kubernetes.scale").parse({"name": "shop", "replicas": -1})
