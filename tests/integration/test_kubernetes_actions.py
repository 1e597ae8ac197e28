"""The kubernetes.* actions as steps (run_step / compensate_step in Temporal's
ActivityEnvironment) against a real kube-apiserver and controller-manager.

There is no kubelet: pods stay Pending, so the tests watch API objects (pods, ReplicaSets,
Deployment status) rather than readiness. Each test works in a namespace of its own.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from selfheal.activities.actions import default_registry
from selfheal.activities.actions.kubernetes import (
    KUBERNETES,
    KubeApi,
    kubernetes_client,
    kubernetes_services,
)
from selfheal.activities.steps import StepActivities
from selfheal.core.settings import KubernetesSettings
from selfheal.domain import Fault, RecoveryStep, StepResult, StepStatus
from selfheal.domain.payloads import CompensateStepInput, RunStepInput
from tests.integration.k8s_cluster import LIMITED_USER, ROOT, Cluster

Obj = dict[str, Any]
WAIT_S = 20.0


@pytest.fixture(scope="module")
def admin_api(k8s_cluster: Cluster) -> ApiClient:
    api = kubernetes_client(KubernetesSettings(kubeconfig=k8s_cluster.kubeconfig))
    assert api is not None
    return api


@pytest.fixture(scope="module")
def steps(admin_api: ApiClient) -> StepActivities:
    return StepActivities(default_registry(), {KUBERNETES: admin_api})


@pytest.fixture
async def ns(admin_api: ApiClient) -> AsyncIterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    await KubeApi(admin_api).create("/api/v1/namespaces", {"metadata": {"name": name}})
    yield name


def kube(api: ApiClient) -> KubeApi:
    return KubeApi(api)


async def eventually(what: str, check: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


def deployment(name: str, replicas: int, image: str = "shop:1", **labels: str) -> Obj:
    pod_labels = {"app": name, **labels}
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            # Recreate: with no kubelet no pod ever becomes available, and a rolling update
            # would wait forever for one.
            "strategy": {"type": "Recreate"},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


async def create_deployment(api: ApiClient, ns: str, body: Obj) -> Obj:
    path = f"/apis/apps/v1/namespaces/{ns}/deployments"
    created = await kube(api).create(path, body)
    replicas = body["spec"]["replicas"]
    await eventually(
        f"{replicas} pods of {body['metadata']['name']}",
        lambda: _has_pods(api, ns, body["metadata"]["name"], replicas),
    )
    return created


async def pods(api: ApiClient, ns: str, app: str) -> list[Obj]:
    listed = await kube(api).get(f"/api/v1/namespaces/{ns}/pods", labelSelector=f"app={app}")
    return [p for p in listed["items"] if not p["metadata"].get("deletionTimestamp")]


async def _has_pods(api: ApiClient, ns: str, app: str, count: int) -> bool:
    return len(await pods(api, ns, app)) == count


async def replica_sets(api: ApiClient, ns: str, app: str) -> list[Obj]:
    path = f"/apis/apps/v1/namespaces/{ns}/replicasets"
    items: list[Obj] = (await kube(api).get(path, labelSelector=f"app={app}"))["items"]
    return items


async def get_deployment(api: ApiClient, ns: str, name: str) -> Obj:
    return await kube(api).get(f"/apis/apps/v1/namespaces/{ns}/deployments/{name}")


def step(action: str, **params: Any) -> RecoveryStep:
    return RecoveryStep(action=f"kubernetes.{action}", params=params)


def run_input(recovery: RecoveryStep, workflow_id: str = "heal-k8s") -> RunStepInput:
    fault = Fault(service="shop", type="pod_crashloop", target="shop")
    return RunStepInput(workflow_id=workflow_id, candidate=0, order=0, step=recovery, fault=fault)


async def run(steps: StepActivities, forward: RunStepInput) -> StepResult:
    result: StepResult = await ActivityEnvironment().run(steps.run_step, forward)
    assert result.status is StepStatus.SUCCEEDED
    return result


async def compensate(steps: StepActivities, forward: RunStepInput, result: StepResult) -> Obj:
    undo = CompensateStepInput(
        workflow_id=forward.workflow_id,
        candidate=forward.candidate,
        order=forward.order,
        step=forward.step,
        fault=forward.fault,
        result=result,
    )
    done: StepResult = await ActivityEnvironment().run(steps.compensate_step, undo)
    assert done.status is StepStatus.COMPENSATED and done.compensation
    return done.output


async def failure(steps: StepActivities, forward: RunStepInput) -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(steps.run_step, forward)
    return caught.value


async def test_deleted_pod_is_replaced_by_its_replica_set_once_per_key(
    admin_api: ApiClient, steps: StepActivities, ns: str
) -> None:
    await create_deployment(admin_api, ns, deployment("shop", 2))
    before = {p["metadata"]["name"] for p in await pods(admin_api, ns, "shop")}
    forward = run_input(step("delete_pod", namespace=ns, selector="app=shop"))

    result = await run(steps, forward)

    deleted = result.output["deleted"]
    assert len(deleted) == 1 and deleted[0] in before
    after = {p["metadata"]["name"] for p in await pods(admin_api, ns, "shop")}
    assert len(after) == 2 and deleted[0] not in after
    assert before - {deleted[0]} <= after

    # The worker crashed after the delete: the retry deletes the same pod, not another one.
    again = await run(steps, forward)
    assert again.output["replayed"] is True and again.output["deleted"] == deleted
    assert {p["metadata"]["name"] for p in await pods(admin_api, ns, "shop")} == after

    # Not compensable: the step says so instead of pretending.
    assert (await compensate(steps, forward, result)) == {"skipped": "not compensable"}


async def test_delete_pod_by_name_counts_a_gone_pod_as_done(
    admin_api: ApiClient, steps: StepActivities, ns: str
) -> None:
    await create_deployment(admin_api, ns, deployment("shop", 1))
    (pod,) = await pods(admin_api, ns, "shop")
    name = pod["metadata"]["name"]
    forward = run_input(step("delete_pod", namespace=ns, name=name))

    result = await run(steps, forward)
    assert result.output["deleted"] == [name]
    replacement = await pods(admin_api, ns, "shop")
    assert len(replacement) == 1 and replacement[0]["metadata"]["name"] != name

    again = await run(steps, forward)
    assert again.output["already_gone"] is True
    assert await pods(admin_api, ns, "shop") == replacement


async def test_scale_and_its_compensation_restore_the_original_count(
    admin_api: ApiClient, steps: StepActivities, ns: str
) -> None:
    await create_deployment(admin_api, ns, deployment("shop", 1))
    forward = run_input(step("scale", namespace=ns, name="shop", replicas=3))

    result = await run(steps, forward)
    assert result.output["found"] == 1
    assert len(await pods(admin_api, ns, "shop")) == 3

    # A retry finds 3 replicas, yet remembers the 1 the first attempt found.
    again = await run(steps, forward)
    assert again.output["found"] == 1 and again.output["replayed"] is True

    await compensate(steps, forward, again)
    assert (await get_deployment(admin_api, ns, "shop"))["spec"]["replicas"] == 1
    assert len(await pods(admin_api, ns, "shop")) == 1


async def test_rollout_restart_makes_one_new_replica_set_per_key(
    admin_api: ApiClient, steps: StepActivities, ns: str
) -> None:
    await create_deployment(admin_api, ns, deployment("shop", 2))
    (first,) = await replica_sets(admin_api, ns, "shop")
    forward = run_input(step("rollout_restart", namespace=ns, name="shop"))

    result = await run(steps, forward)

    new_rs = result.output["replica_set"]
    assert new_rs != first["metadata"]["name"]
    assert {rs["metadata"]["name"] for rs in await replica_sets(admin_api, ns, "shop")} == {
        first["metadata"]["name"],
        new_rs,
    }
    again = await run(steps, forward)
    assert again.output["replayed"] is True and again.output["replica_set"] == new_rs
    assert len(await replica_sets(admin_api, ns, "shop")) == 2


async def test_waiting_for_a_rollout_that_cannot_complete_times_out_retryably(
    admin_api: ApiClient, steps: StepActivities, ns: str
) -> None:
    await create_deployment(admin_api, ns, deployment("shop", 1))
    forward = run_input(
        step("rollout_restart", namespace=ns, name="shop", wait_for="complete", timeout_s=1)
    )

    error = await failure(steps, forward)

    # No kubelet: no pod ever becomes available.
    assert error.type == "TargetError" and not error.non_retryable
    assert "timed out after 1s waiting for Deployment 'shop'" in error.message


async def test_rollback_restores_the_previous_template_and_compensation_rolls_forward(
    admin_api: ApiClient, steps: StepActivities, ns: str
) -> None:
    await create_deployment(admin_api, ns, deployment("shop", 1, image="shop:1"))
    path = f"/apis/apps/v1/namespaces/{ns}/deployments/shop"
    bad = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "shop:2"}]}}}}
    await kube(admin_api).request(
        "PATCH", path, body=bad, content_type="application/strategic-merge-patch+json"
    )

    async def at_revision_2() -> bool:
        current = await get_deployment(admin_api, ns, "shop")
        revision: str | None = current["metadata"]["annotations"].get(
            "deployment.kubernetes.io/revision"
        )
        return revision == "2"

    await eventually("revision 2", at_revision_2)
    forward = run_input(step("rollback", namespace=ns, name="shop"))

    result = await run(steps, forward)

    assert (result.output["from_revision"], result.output["to_revision"]) == (2, 1)
    assert image(await get_deployment(admin_api, ns, "shop")) == "shop:1"
    assert result.output["replaced_template"]["spec"]["containers"][0]["image"] == "shop:2"

    # A retry must not roll back again (that would return to shop:2).
    again = await run(steps, forward)
    assert again.output["replayed"] is True
    assert again.output["replaced_template"] == result.output["replaced_template"]
    assert image(await get_deployment(admin_api, ns, "shop")) == "shop:1"

    await compensate(steps, forward, again)
    assert image(await get_deployment(admin_api, ns, "shop")) == "shop:2"


def image(deployment: Obj) -> str:
    image: str = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    return image


async def test_configmap_patch_and_restore_including_absent_keys(
    admin_api: ApiClient, steps: StepActivities, ns: str
) -> None:
    path = f"/api/v1/namespaces/{ns}/configmaps"
    body = {"metadata": {"name": "shop"}, "data": {"pool_size": "10", "mode": "fast"}}
    await kube(admin_api).create(path, body)
    data = {"pool_size": "50", "mode": None, "feature_x": "off"}
    forward = run_input(step("patch_configmap", namespace=ns, name="shop", data=data))

    result = await run(steps, forward)

    assert (await kube(admin_api).get(f"{path}/shop"))["data"] == {
        "pool_size": "50",
        "feature_x": "off",
    }
    expected_previous = {"pool_size": "10", "mode": "fast", "feature_x": None}
    assert result.output["previous"] == expected_previous
    again = await run(steps, forward)
    assert again.output["previous"] == expected_previous

    await compensate(steps, forward, again)
    assert (await kube(admin_api).get(f"{path}/shop"))["data"] == body["data"]


async def test_cordon_and_uncordon_are_each_others_compensation(
    admin_api: ApiClient, steps: StepActivities
) -> None:
    node = f"node-{uuid.uuid4().hex[:6]}"
    await kube(admin_api).create("/api/v1/nodes", {"metadata": {"name": node}})

    async def unschedulable() -> bool:
        current = await kube(admin_api).get(f"/api/v1/nodes/{node}")
        return bool(current["spec"].get("unschedulable"))

    cordon = run_input(step("cordon", node=node), workflow_id="heal-cordon")
    result = await run(steps, cordon)
    assert await unschedulable() and result.output["was_unschedulable"] is False
    again = await run(steps, cordon)
    assert again.output["was_unschedulable"] is False and again.output["replayed"] is True
    await compensate(steps, cordon, again)
    assert not await unschedulable()

    await run(steps, cordon.model_copy(update={"workflow_id": "heal-cordon-2"}))
    uncordon = run_input(step("uncordon", node=node), workflow_id="heal-uncordon")
    result = await run(steps, uncordon)
    assert not await unschedulable() and result.output["was_unschedulable"] is True
    await compensate(steps, uncordon, result)
    assert await unschedulable()


async def test_service_switches_to_the_backup_and_back(
    admin_api: ApiClient, steps: StepActivities, ns: str
) -> None:
    await create_deployment(admin_api, ns, deployment("backup", 1))
    path = f"/api/v1/namespaces/{ns}/services"
    service = {
        "metadata": {"name": "shop"},
        "spec": {"selector": {"app": "shop", "tier": "web"}, "ports": [{"port": 80}]},
    }
    await kube(admin_api).create(path, service)
    forward = run_input(
        step("switch_service", namespace=ns, name="shop", selector={"app": "backup"})
    )

    result = await run(steps, forward)

    assert (await kube(admin_api).get(f"{path}/shop"))["spec"]["selector"] == {"app": "backup"}
    assert result.output["previous_selector"] == {"app": "shop", "tier": "web"}
    again = await run(steps, forward)
    assert again.output["previous_selector"] == {"app": "shop", "tier": "web"}

    await compensate(steps, forward, again)
    assert (await kube(admin_api).get(f"{path}/shop"))["spec"]["selector"] == {
        "app": "shop",
        "tier": "web",
    }

    nowhere = run_input(step("switch_service", namespace=ns, name="shop", selector={"app": "x"}))
    error = await failure(steps, nowhere)
    assert error.non_retryable and "no pod in namespace" in error.message


async def test_missing_permission_and_missing_object_are_clear_and_final(
    admin_api: ApiClient,
    k8s_cluster: Cluster,
    ns: str,
) -> None:
    limited = StepActivities(
        default_registry(),
        kubernetes_services(KubernetesSettings(kubeconfig=k8s_cluster.limited_kubeconfig)),
    )
    await create_deployment(admin_api, ns, deployment("shop", 1))

    denied = await failure(limited, run_input(step("scale", namespace=ns, name="shop", replicas=2)))

    assert denied.non_retryable and denied.type == "TargetError"
    assert (
        f"missing permission 'get' on 'deployments' (API group 'apps') in namespace {ns!r} "
        f"for user {LIMITED_USER!r}" in denied.message
    )
    node_denied = await failure(limited, run_input(step("cordon", node="n1")))
    assert "missing permission 'get' on 'nodes' (API group 'core') cluster-wide" in (
        node_denied.message
    )

    admin = StepActivities(default_registry(), {KUBERNETES: admin_api})
    missing = await failure(admin, run_input(step("scale", namespace=ns, name="nope", replicas=2)))
    assert missing.non_retryable
    assert f'not found: deployments.apps "nope" not found in namespace {ns!r}' in missing.message


async def test_shipped_rbac_is_enough_for_every_action(
    admin_api: ApiClient,
    k8s_cluster: Cluster,
    ns: str,
) -> None:
    """deploy/kubernetes/rbac.yaml's roles, bound to the otherwise powerless user, suffice."""
    docs = list(yaml.safe_load_all((ROOT / "deploy/kubernetes/rbac.yaml").read_text()))
    api = kube(admin_api)
    user = [{"kind": "User", "name": LIMITED_USER, "apiGroup": "rbac.authorization.k8s.io"}]
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    for doc in docs:
        if doc["kind"] == "ClusterRole":
            if await api.find(f"{rbac}/clusterroles/{doc['metadata']['name']}") is None:
                await api.create(f"{rbac}/clusterroles", doc)
        elif doc["kind"] == "RoleBinding":
            binding = {**doc, "metadata": {"name": doc["metadata"]["name"]}, "subjects": user}
            await api.create(f"{rbac}/namespaces/{ns}/rolebindings", binding)
        elif doc["kind"] == "ClusterRoleBinding":
            name = f"{doc['metadata']['name']}-{ns}"
            await api.create(
                f"{rbac}/clusterrolebindings",
                {**doc, "metadata": {"name": name}, "subjects": user},
            )
    limited = StepActivities(
        default_registry(),
        kubernetes_services(KubernetesSettings(kubeconfig=k8s_cluster.limited_kubeconfig)),
    )
    await create_deployment(admin_api, ns, deployment("shop", 1, image="shop:1"))
    await kube(admin_api).create(
        f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "c"}, "data": {"k": "1"}}
    )
    await kube(admin_api).create(
        f"/api/v1/namespaces/{ns}/services",
        {"metadata": {"name": "s"}, "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]}},
    )
    node = f"node-{ns}"
    await kube(admin_api).create("/api/v1/nodes", {"metadata": {"name": node}})

    plan = [
        step("delete_pod", namespace=ns, selector="app=shop"),
        step("rollout_restart", namespace=ns, name="shop"),
        step("rollback", namespace=ns, name="shop"),
        step("scale", namespace=ns, name="shop", replicas=2),
        step("patch_configmap", namespace=ns, name="c", data={"k": "2"}),
        step("switch_service", namespace=ns, name="s", selector={"app": "shop"}),
        step("cordon", node=node),
        step("uncordon", node=node),
    ]
    for order, recovery in enumerate(plan):
        forward = run_input(recovery).model_copy(update={"order": order})
        result = await run(limited, forward)
        if default_registry().get(recovery.action).compensate is not None:
            await compensate(limited, forward, result)


def test_shipped_rbac_grants_no_write_beyond_the_actions() -> None:
    docs = list(yaml.safe_load_all((ROOT / "deploy/kubernetes/rbac.yaml").read_text()))
    verbs = {
        (resource, verb)
        for doc in docs
        if doc["kind"] == "ClusterRole"
        for rule in doc["rules"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert not {v for _, v in verbs} & {"create", "deletecollection", "escalate", "bind", "*"}
    assert {r for r, v in verbs if v == "delete"} == {"pods"}
    assert not any(r in ("secrets", "pods/exec", "*") for r, _ in verbs)


def test_worker_runs_as_the_service_account_rbac_yaml_grants() -> None:
    worker = yaml.safe_load((ROOT / "deploy/kubernetes/worker.yaml").read_text())
    docs = list(yaml.safe_load_all((ROOT / "deploy/kubernetes/rbac.yaml").read_text()))
    account = next(d for d in docs if d["kind"] == "ServiceAccount")["metadata"]["name"]
    assert worker["spec"]["template"]["spec"]["serviceAccountName"] == account
    subjects = [s for d in docs if d["kind"].endswith("Binding") for s in d["subjects"]]
    assert subjects and all(s["name"] == account for s in subjects)


def test_no_settings_no_client(tmp_path: Path) -> None:
    assert kubernetes_services(KubernetesSettings()) == {}
