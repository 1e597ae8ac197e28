"""The kubernetes.* actions as steps (run_step / compensate_step in Temporal's
ActivityEnvironment) against a real kube-apiserver and controller-manager (its deployment,
replicaset, statefulset, daemonset and disruption controllers).

There is no kubelet or scheduler: pods stay Pending, so the tests watch API objects (pods,
ReplicaSets, Deployment status) rather than readiness. Where a pod must run on a node (drain),
the test plays the scheduler and the kubelet through the API: it binds the pod and writes its
status. Each test works in a namespace of its own, and nodes of its own.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
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


def statefulset(
    name: str, replicas: int, containers: list[Obj] | None = None, *, grace_s: int = 0
) -> Obj:
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            # All pods at once: with no kubelet, none becomes ready for the next to start.
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": containers or [{"name": "app", "image": f"{name}:1"}],
                    # 0: a bound pod is deleted at once; otherwise it stays terminating, as no
                    # kubelet confirms that it stopped.
                    "terminationGracePeriodSeconds": grace_s,
                },
            },
        },
    }


def daemonset(name: str, node_label: str) -> Obj:
    """A DaemonSet of the nodes labelled ``selfheal.test/node=<node_label>`` only: the test's
    own node, whatever other nodes the session's tests created."""
    return {
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "nodeSelector": {"selfheal.test/node": node_label},
                    "containers": [{"name": "agent", "image": f"{name}:1"}],
                    "terminationGracePeriodSeconds": 0,
                },
            },
        },
    }


async def create_workload(api: ApiClient, ns: str, plural: str, body: Obj, pods_wanted: int) -> Obj:
    """A StatefulSet or DaemonSet, once its controller made its pods."""
    created = await kube(api).create(f"/apis/apps/v1/namespaces/{ns}/{plural}", body)
    name = body["metadata"]["name"]
    await eventually(f"{pods_wanted} pods of {name}", lambda: _has_pods(api, ns, name, pods_wanted))
    return created


async def create_node(api: ApiClient, name: str) -> None:
    body = {"metadata": {"name": name, "labels": {"selfheal.test/node": name}}}
    await kube(api).create("/api/v1/nodes", body)
    # The apiserver taints a new node not-ready (NoSchedule) until a kubelet reports it Ready,
    # and no DaemonSet places a pod there meanwhile: lift the taint as a node coming up would.
    # The node stays without a Ready condition (no kubelet posts one).
    await kube(api).merge_patch(f"/api/v1/nodes/{name}", {"spec": {"taints": None}})


async def run_on(api: ApiClient, ns: str, pod: str, node: str) -> None:
    """Play the scheduler and the kubelet: bind the pod to the node, report it running, ready."""
    binding = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": pod},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    }
    await kube(api).create(f"/api/v1/namespaces/{ns}/pods/{pod}/binding", binding)
    status = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    await kube(api).merge_patch(f"/api/v1/namespaces/{ns}/pods/{pod}/status", {"status": status})


async def find_pod(api: ApiClient, ns: str, name: str) -> Obj | None:
    return await kube(api).find(f"/api/v1/namespaces/{ns}/pods/{name}")


async def unschedulable(api: ApiClient, node: str) -> bool:
    return bool((await kube(api).get(f"/api/v1/nodes/{node}"))["spec"].get("unschedulable"))


def failed(forward: RunStepInput, error: str = "failed") -> StepResult:
    """The step as the workflow records it when its activity failed after changing something:
    no output. Its compensation must still undo what the step did."""
    now = datetime.now(UTC)
    return StepResult.for_step(
        forward.step,
        candidate=forward.candidate,
        order=forward.order,
        status=StepStatus.FAILED,
        error=error,
        started_at=now,
        ended_at=now,
    )


async def test_deleted_pod_is_replaced_by_its_replica_set_once_per_key(
    admin_api: ApiClient, steps: StepActivities, ns: str
) -> None:
    await create_deployment(admin_api, ns, deployment("shop", 2))
    before = {p["metadata"]["name"] for p in await pods(admin_api, ns, "shop")}
    forward = run_input(step("delete_pod", namespace=ns, selector="app=shop"))

    result = await run(steps, forward)

    deleted = result.output["deleted"]
    assert len(deleted) == 1 and deleted[0] in before
    assert result.output["workloads"] == ["Deployment/shop"]
    assert result.output["owners"][0].startswith("ReplicaSet/shop-")
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


# --- delete_pod: the owning controller -------------------------------------------------------


async def test_delete_pod_of_a_statefulset_or_daemonset_waits_for_its_controller(
    admin_api: ApiClient, steps: StepActivities, ns: str
) -> None:
    await create_workload(admin_api, ns, "statefulsets", statefulset("db", 2), 2)
    old = await find_pod(admin_api, ns, "db-0")
    assert old is not None
    forward = run_input(step("delete_pod", namespace=ns, name="db-0"))

    result = await run(steps, forward)

    assert result.output["deleted"] == ["db-0"]
    assert result.output["owners"] == result.output["workloads"] == ["StatefulSet/db"]
    # The StatefulSet put back a pod of the same name: a new pod.
    new = await find_pod(admin_api, ns, "db-0")
    assert new is not None and new["metadata"]["uid"] != old["metadata"]["uid"]
    # A retry finds the same name again, yet deletes nothing more (its record names the uid).
    again = await run(steps, forward)
    assert again.output["replayed"] is True and again.output["deleted"] == ["db-0"]
    assert (await find_pod(admin_api, ns, "db-0") or {})["metadata"]["uid"] == new["metadata"][
        "uid"
    ]

    node = f"node-{ns}"
    await create_node(admin_api, node)
    await create_workload(admin_api, ns, "daemonsets", daemonset("agent", node), 1)
    (agent,) = await pods(admin_api, ns, "agent")
    forward = run_input(step("delete_pod", namespace=ns, selector="app=agent"), "heal-ds")

    result = await run(steps, forward)

    assert result.output["deleted"] == [agent["metadata"]["name"]]
    assert result.output["owners"] == ["DaemonSet/agent"]
    (replacement,) = await pods(admin_api, ns, "agent")
    assert replacement["metadata"]["uid"] != agent["metadata"]["uid"]


async def test_delete_pod_refuses_pods_nothing_would_replace(
    admin_api: ApiClient, steps: StepActivities, ns: str
) -> None:
    path = f"/api/v1/namespaces/{ns}/pods"
    spec = {"containers": [{"name": "app", "image": "x"}]}
    await kube(admin_api).create(
        path, {"metadata": {"name": "lonely", "labels": {"app": "lonely"}}, "spec": spec}
    )
    job_owned = {
        "name": "batch-1",
        "labels": {"app": "batch"},
        "ownerReferences": [
            {"apiVersion": "batch/v1", "kind": "Job", "name": "batch", "uid": str(uuid.uuid4()),
             "controller": True}
        ],
    }  # fmt: skip
    await kube(admin_api).create(path, {"metadata": job_owned, "spec": spec})

    bare = await failure(steps, run_input(step("delete_pod", namespace=ns, selector="app=lonely")))
    assert bare.non_retryable
    assert f"pod 'lonely' in namespace {ns!r} is not managed by a controller (a bare pod)" in (
        bare.message
    )
    job = await failure(steps, run_input(step("delete_pod", namespace=ns, name="batch-1")))
    assert job.non_retryable and "is managed by Job/batch" in job.message
    assert await find_pod(admin_api, ns, "lonely") and await find_pod(admin_api, ns, "batch-1")

    allowed = run_input(step("delete_pod", namespace=ns, name="lonely", allow_bare=True))
    result = await run(steps, allowed)
    assert result.output["bare"] == ["lonely"] and result.output["owners"] == []
    assert await find_pod(admin_api, ns, "lonely") is None


# --- set_resources ---------------------------------------------------------------------------


def with_resources(body: Obj, resources: Obj) -> Obj:
    body["spec"]["template"]["spec"]["containers"][0]["resources"] = resources
    return body


def container_resources(workload: Obj, index: int = 0) -> Obj:
    found: Obj = workload["spec"]["template"]["spec"]["containers"][index].get("resources") or {}
    return found


async def test_set_resources_raises_memory_once_per_key_and_compensation_restores_it(
    admin_api: ApiClient, steps: StepActivities, ns: str
) -> None:
    resources = {
        "limits": {"memory": "512Mi", "cpu": "500m"},
        "requests": {"memory": "256Mi", "cpu": "100m"},
    }
    await create_deployment(admin_api, ns, with_resources(deployment("shop", 1), resources))
    found = container_resources(await get_deployment(admin_api, ns, "shop"))
    forward = run_input(step("set_resources", namespace=ns, name="shop"))

    result = await run(steps, forward)

    assert result.output["previous"] == found
    assert (result.output["memory_limit"], result.output["memory_request"]) == ("768Mi", "384Mi")
    raised = container_resources(await get_deployment(admin_api, ns, "shop"))
    assert raised == {
        "limits": {"memory": "768Mi", "cpu": "500m"},
        "requests": {"memory": "384Mi", "cpu": "100m"},
    }
    # The change rolls out: a new ReplicaSet with the new limit.
    assert len(await replica_sets(admin_api, ns, "shop")) == 2

    # A retry re-applies the same values: 1.5 x 512Mi, not 1.5 x 768Mi.
    again = await run(steps, forward)
    assert again.output["replayed"] is True and again.output["previous"] == found
    assert container_resources(await get_deployment(admin_api, ns, "shop")) == raised
    assert len(await replica_sets(admin_api, ns, "shop")) == 2

    undone = await compensate(steps, forward, again)
    assert undone["restored"] == found
    assert container_resources(await get_deployment(admin_api, ns, "shop")) == found


async def test_set_resources_stops_at_the_ceiling(
    admin_api: ApiClient, steps: StepActivities, ns: str
) -> None:
    resources = {"limits": {"memory": "3Gi"}, "requests": {"memory": "1Gi"}}
    await create_deployment(admin_api, ns, with_resources(deployment("shop", 1), resources))

    first = await run(
        steps, run_input(step("set_resources", namespace=ns, name="shop", memory_factor=2))
    )

    assert (first.output["memory_limit"], first.output["memory_request"]) == ("4Gi", "2Gi")
    at_ceiling = await failure(
        steps, run_input(step("set_resources", namespace=ns, name="shop"), "heal-again")
    )
    assert at_ceiling.non_retryable
    assert "has a memory limit of 4Gi, already at or above the ceiling 4Gi" in at_ceiling.message
    above = await failure(
        steps, run_input(step("set_resources", namespace=ns, name="shop", memory_limit="8Gi"))
    )
    assert above.non_retryable and "memory_limit 8Gi is above the ceiling 4Gi" in above.message
    limits = container_resources(await get_deployment(admin_api, ns, "shop"))["limits"]
    assert limits == {"memory": "4Gi"}


async def test_a_rollout_past_its_progress_deadline_fails_the_step_at_once(
    admin_api: ApiClient, steps: StepActivities, ns: str
) -> None:
    """No kubelet: the raised limit's pods never become available, and after
    progressDeadlineSeconds the deployment controller says so (Progressing=False,
    ProgressDeadlineExceeded). A step waiting for the rollout to complete fails then, not
    at its timeout, and not retryably: waiting again cannot help."""
    body = with_resources(deployment("shop", 1), {"limits": {"memory": "256Mi"}})
    body["spec"]["progressDeadlineSeconds"] = 1
    await create_deployment(admin_api, ns, body)
    forward = run_input(
        step("set_resources", namespace=ns, name="shop", wait_for="complete", timeout_s=600)
    )

    stalled = await failure(steps, forward)

    assert stalled.non_retryable, stalled.message
    assert "exceeded its progress deadline (ProgressDeadlineExceeded" in stalled.message
    limits = container_resources(await get_deployment(admin_api, ns, "shop"))["limits"]
    assert limits == {"memory": "384Mi"}  # applied; the workflow compensates the failed step


async def test_set_resources_of_a_statefulset_container_and_undo_after_a_failed_step(
    admin_api: ApiClient, steps: StepActivities, ns: str
) -> None:
    containers = [
        {"name": "app", "image": "db:1", "resources": {"limits": {"memory": "1Gi"}}},
        {"name": "sidecar", "image": "log:1", "resources": {"limits": {"memory": "64Mi"}}},
    ]
    await create_workload(admin_api, ns, "statefulsets", statefulset("db", 1, containers), 1)
    path = f"/apis/apps/v1/namespaces/{ns}/statefulsets/db"
    before = await kube(admin_api).get(path)
    forward = run_input(
        step(
            "set_resources",
            namespace=ns,
            name="db",
            kind="statefulset",
            container="sidecar",
            memory_limit="128Mi",
        )
    )

    result = await run(steps, forward)

    after = await kube(admin_api).get(path)
    assert container_resources(after, 1)["limits"] == {"memory": "128Mi"}
    assert container_resources(after, 0) == container_resources(before, 0)
    assert result.output["previous"] == container_resources(before, 1)

    # The step failed after its write (say, while waiting): no output, yet its record on the
    # StatefulSet lets the compensation restore what it found.
    await compensate(steps, forward, failed(forward))
    assert container_resources(await kube(admin_api).get(path), 1) == container_resources(before, 1)


# --- drain -----------------------------------------------------------------------------------


async def test_drain_evicts_the_node_s_pods_but_daemonset_ones_and_compensation_uncordons(
    admin_api: ApiClient, steps: StepActivities, ns: str
) -> None:
    node = f"node-{ns}"
    await create_node(admin_api, node)
    await create_workload(admin_api, ns, "statefulsets", statefulset("db", 3), 3)
    await create_workload(admin_api, ns, "statefulsets", statefulset("slow", 1, grace_s=30), 1)
    await create_workload(admin_api, ns, "daemonsets", daemonset("agent", node), 1)
    (agent,) = await pods(admin_api, ns, "agent")
    for pod in ("db-0", "db-1", "slow-0", agent["metadata"]["name"]):
        await run_on(admin_api, ns, pod, node)
    await create_node(admin_api, f"{node}-b")
    await run_on(admin_api, ns, "db-2", f"{node}-b")
    bound = {
        n: (await find_pod(admin_api, ns, n) or {})["metadata"]["uid"] for n in ("db-0", "db-1")
    }
    forward = run_input(step("drain", node=node), "heal-drain")

    result = await run(steps, forward)

    assert result.output["evicted"] == [f"{ns}/db-0", f"{ns}/db-1", f"{ns}/slow-0"]
    assert result.output["cordoned"] is True and await unschedulable(admin_api, node)
    # The node is not ready (no kubelet posts its status): slow-0, with 30 s to stop, stays
    # terminating, and counts as gone.
    assert result.output["terminating"] == [f"{ns}/slow-0"]
    slow = await find_pod(admin_api, ns, "slow-0")
    assert slow is not None and slow["metadata"].get("deletionTimestamp")
    assert [s.split(" ")[0] for s in result.output["skipped"]] == [
        f"{ns}/{agent['metadata']['name']}"
    ]
    for name, uid in bound.items():  # gone: the StatefulSet made new pods, on no node yet
        replacement = await find_pod(admin_api, ns, name)
        assert replacement is None or replacement["metadata"]["uid"] != uid
    assert (await find_pod(admin_api, ns, agent["metadata"]["name"])) is not None
    assert ((await find_pod(admin_api, ns, "db-2")) or {})["spec"]["nodeName"] == f"{node}-b"

    again = await run(steps, forward)
    assert again.output["replayed"] is True and again.output["evicted"] == result.output["evicted"]
    assert again.output["cordoned"] is True

    await compensate(steps, forward, again)
    assert not await unschedulable(admin_api, node)

    # A node cordoned before the drain stays cordoned after its compensation.
    await run(steps, run_input(step("cordon", node=node), "heal-cordon-first"))
    before = run_input(step("drain", node=node), "heal-drain-cordoned")
    result = await run(steps, before)
    assert result.output["cordoned"] is False and result.output["evicted"] == []
    assert len(result.output["skipped"]) == 2  # the DaemonSet's pod, and slow-0 terminating
    await compensate(steps, before, result)
    assert await unschedulable(admin_api, node)


async def policy_version(api: ApiClient) -> str:
    group = await kube(api).get("/apis/policy")
    version: str = group["preferredVersion"]["groupVersion"]
    return version


async def test_drain_keeps_a_pod_disruption_budget_and_fails_naming_it(
    admin_api: ApiClient, steps: StepActivities, ns: str
) -> None:
    node = f"node-{ns}"
    await create_node(admin_api, node)
    await create_workload(admin_api, ns, "statefulsets", statefulset("db", 1), 1)
    await run_on(admin_api, ns, "db-0", node)
    pdbs = f"/apis/{await policy_version(admin_api)}/namespaces/{ns}/poddisruptionbudgets"
    budget = {
        "metadata": {"name": "db-pdb"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "db"}}},
    }
    await kube(admin_api).create(pdbs, budget)

    async def budget_counted() -> bool:
        status = (await kube(admin_api).get(f"{pdbs}/db-pdb")).get("status") or {}
        return int(status.get("currentHealthy") or 0) == 1

    # The disruption controller sees the one healthy pod: no disruption allowed.
    await eventually("the budget to count db-0", budget_counted)
    forward = run_input(step("drain", node=node, timeout_s=2), "heal-drain-pdb")
    started = time.monotonic()

    error = await failure(steps, forward)

    assert time.monotonic() - started >= 1.5
    assert error.non_retryable
    assert f"could not evict pod 'db-0' in namespace {ns!r} from node {node!r} within 2s" in (
        error.message
    )
    assert "PodDisruptionBudget 'db-pdb' allows no disruption now" in error.message
    assert await find_pod(admin_api, ns, "db-0") is not None
    # The failed step had cordoned the node: its compensation uncordons it.
    assert await unschedulable(admin_api, node)
    undone = await compensate(steps, forward, failed(forward, error.message))
    assert undone["uncordoned"] is True and not await unschedulable(admin_api, node)

    # Once the budget allows a disruption, the same drain goes through.
    await kube(admin_api).merge_patch(f"{pdbs}/db-pdb", {"spec": {"minAvailable": 0}})
    result = await run(steps, run_input(step("drain", node=node), "heal-drain-allowed"))
    assert result.output["evicted"] == [f"{ns}/db-0"]


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
    resize_denied = await failure(
        limited, run_input(step("set_resources", namespace=ns, name="shop", memory_limit="1Gi"))
    )
    assert resize_denied.non_retryable
    assert f"missing permission 'get' on 'deployments' (API group 'apps') in namespace {ns!r}" in (
        resize_denied.message
    )
    drain_denied = await failure(limited, run_input(step("drain", node="n1")))
    assert drain_denied.non_retryable
    assert "missing permission 'get' on 'nodes' (API group 'core') cluster-wide" in (
        drain_denied.message
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
    await create_node(admin_api, node)
    db = [{"name": "app", "image": "db:1", "resources": {"limits": {"memory": "256Mi"}}}]
    await create_workload(admin_api, ns, "statefulsets", statefulset("db", 1, db), 1)
    await run_on(admin_api, ns, "db-0", node)
    await create_workload(admin_api, ns, "daemonsets", daemonset("agent", node), 1)

    plan = [
        step("delete_pod", namespace=ns, selector="app=shop"),
        step("rollout_restart", namespace=ns, name="shop"),
        step("rollback", namespace=ns, name="shop"),
        step("scale", namespace=ns, name="shop", replicas=2),
        step("patch_configmap", namespace=ns, name="c", data={"k": "2"}),
        step("switch_service", namespace=ns, name="s", selector={"app": "shop"}),
        step("cordon", node=node),
        step("uncordon", node=node),
        step("drain", node=node),
        step("delete_pod", namespace=ns, name="db-0"),
        step("delete_pod", namespace=ns, selector="app=agent"),
        step("set_resources", namespace=ns, name="shop", memory_limit="512Mi"),
        step("set_resources", namespace=ns, name="db", kind="statefulset", memory_factor=2),
    ]
    results: list[StepResult] = []
    for order, recovery in enumerate(plan):
        forward = run_input(recovery).model_copy(update={"order": order})
        results.append(await run(limited, forward))
        if default_registry().get(recovery.action).compensate is not None:
            await compensate(limited, forward, results[-1])
    # The drain evicted db-0 (pods/eviction), not just cordoned.
    assert results[8].output["evicted"] == [f"{ns}/db-0"]


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
    # The one create is an eviction: the Eviction API deletes a pod only if its budget allows.
    assert {r for r, v in verbs if v == "create"} == {"pods/eviction"}
    assert not {v for _, v in verbs} & {"deletecollection", "escalate", "bind", "*"}
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
