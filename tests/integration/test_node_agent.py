"""The simulated node (devstack/kube_agent.py) against a real kube-apiserver and
controller-manager.

The agent plays the kubelet and the scheduler; the controllers are real: the deployment and
replicaset controllers count the pods the agent made ready, a rollout comes from a changed pod
template, the disruption controller computes a PodDisruptionBudget's status for the Eviction
API, and the statefulset and daemonset controllers create pods the agent places. Each test has a
namespace of its own, deleted at the end while the agents still run (they confirm the pods'
deletion, as kubelets would).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest
from kubernetes.client import ApiClient

from selfheal.activities.actions.kubernetes import KubeApi
from selfheal.devstack.demo.kubernetes import deployment_body as deployment
from selfheal.devstack.demo.kubernetes import live_pods as pods
from selfheal.devstack.demo.kubernetes import rolled_out, running_and_ready
from selfheal.devstack.kube_agent import (
    BEHAVIOR,
    CRASHLOOP,
    MEMORY_NEED,
    NOT_READY_TAINT,
    STUCK_TERMINATING,
    UNREADY,
    NodeAgent,
    _quantity,
)
from selfheal.domain import TargetError

Obj = dict[str, Any]
WAIT_S = 20.0
StartAgent = Callable[..., NodeAgent]


@pytest.fixture
async def kube(admin_api: ApiClient) -> KubeApi:
    return KubeApi(admin_api)


@pytest.fixture
async def ns(kube: KubeApi) -> str:
    name = f"na-{uuid.uuid4().hex[:8]}"
    await kube.create("/api/v1/namespaces", {"metadata": {"name": name}})
    return name


@pytest.fixture
async def nodes(admin_api: ApiClient, kube: KubeApi, ns: str) -> AsyncIterator[StartAgent]:
    """Start node agents for the test's namespace; at the end the namespace is deleted while
    they run, then they stop, and none may have met an unexpected error."""
    started: list[NodeAgent] = []

    def start(**options: Any) -> NodeAgent:
        agent = NodeAgent(admin_api, namespaces=[ns], **options).start()
        started.append(agent)
        return agent

    try:
        yield start
        await delete_namespace(kube, ns)
    finally:
        for agent in started:
            agent.stop()
    assert [error for agent in started for error in agent.errors] == []


async def delete_namespace(kube: KubeApi, ns: str) -> None:
    """Delete the namespace and, without waiting the namespace controller's 5 s grace, its
    pods (no new ones may be created in a terminating namespace): the agents confirm their
    deletion. The namespace controller deletes the rest in the background."""
    await kube.request("DELETE", f"/api/v1/namespaces/{ns}")
    pods = f"/api/v1/namespaces/{ns}/pods"
    await kube.request("DELETE", pods)
    deadline = time.monotonic() + 10
    while (await kube.get(pods))["items"]:
        if time.monotonic() > deadline:
            raise AssertionError(f"pods of namespace {ns} still there 10 s after deleting them")
        await asyncio.sleep(0.2)


async def eventually(what: str, check: Callable[[], Awaitable[Any]]) -> Any:
    deadline = time.monotonic() + WAIT_S
    while not (result := await check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)
    return result


def bare_pod(name: str, **annotations: str) -> Obj:
    return {
        "metadata": {"name": name, "labels": {"app": name}, "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "shop:1"}]},
    }


async def create(kube: KubeApi, ns: str, kind: str, body: Obj) -> Obj:
    group = "/api/v1" if kind == "pods" else "/apis/apps/v1"
    return await kube.create(f"{group}/namespaces/{ns}/{kind}", body)


async def get_deployment(kube: KubeApi, ns: str, name: str) -> Obj:
    return await kube.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{name}")


async def events(kube: KubeApi, ns: str, pod: str, reason: str | None = None) -> list[Obj]:
    selector = f"involvedObject.name={pod}" + (f",reason={reason}" if reason else "")
    listed = await kube.get(f"/api/v1/namespaces/{ns}/events", fieldSelector=selector)
    items: list[Obj] = listed["items"]
    return items


def container(pod: Obj) -> Obj:
    [status] = pod["status"]["containerStatuses"]
    return status  # type: ignore[no-any-return]


def condition(obj: Obj, kind: str) -> Obj:
    return next(c for c in obj["status"].get("conditions") or [] if c["type"] == kind)


async def template_patch(kube: KubeApi, ns: str, name: str, template: Obj) -> None:
    path = f"/apis/apps/v1/namespaces/{ns}/deployments/{name}"
    await kube.merge_patch(path, {"spec": {"template": template}})


async def test_a_deployments_pods_are_bound_run_and_become_ready(
    kube: KubeApi, ns: str, nodes: StartAgent
) -> None:
    agent = nodes()
    node = await kube.get(f"/api/v1/nodes/{agent.name}")
    assert condition(node, "Ready")["status"] == "True"
    assert {k: node["status"]["capacity"][k] for k in ("cpu", "memory", "pods")} == {
        "cpu": "4",
        "memory": "8Gi",
        "pods": "110",
    }
    assert node["status"]["allocatable"]["pods"] == "110"
    first_beat = condition(node, "Ready")["lastHeartbeatTime"]

    await create(kube, ns, "deployments", deployment("shop", 3))

    await eventually("3 ready replicas", lambda: rolled_out(kube, ns, "shop", 3))
    running = await pods(kube, ns, "shop")
    assert len(running) == 3
    for pod in running:
        assert pod["spec"]["nodeName"] == agent.name
        assert running_and_ready(pod)
        assert condition(pod, "PodScheduled")["status"] == "True"
        assert pod["status"]["podIP"].startswith("10.244.")
        assert container(pod)["restartCount"] == 0
        [scheduled] = await events(kube, ns, pod["metadata"]["name"], "Scheduled")
        assert scheduled["source"] == {"component": "default-scheduler"}
        assert scheduled["message"].endswith(f"to {agent.name}")
        [started] = await events(kube, ns, pod["metadata"]["name"], "Started")
        assert started["source"] == {"component": "kubelet", "host": agent.name}
        assert started["involvedObject"]["fieldPath"] == "spec.containers{app}"

    async def beat_again() -> bool:
        node = await kube.get(f"/api/v1/nodes/{agent.name}")
        return bool(condition(node, "Ready")["lastHeartbeatTime"] > first_beat)

    await eventually("a fresher heartbeat", beat_again)


async def test_a_rollout_to_a_crash_looping_template_stalls_with_restarts_rising(
    kube: KubeApi, ns: str, nodes: StartAgent
) -> None:
    agent = nodes(restart_every_s=0.5)
    await create(kube, ns, "deployments", deployment("shop", 2))
    await eventually("2 ready replicas", lambda: rolled_out(kube, ns, "shop", 2))

    await template_patch(kube, ns, "shop", {"metadata": {"annotations": {BEHAVIOR: CRASHLOOP}}})

    async def crashing() -> Obj | None:
        found = [
            p
            for p in await pods(kube, ns, "shop")
            if (p["metadata"].get("annotations") or {}).get(BEHAVIOR) == CRASHLOOP
            and (p["status"].get("containerStatuses") or [{}])[0].get("restartCount", 0) >= 1
        ]
        return found[0] if found else None

    pod = await eventually("a crash-looping pod of the new template", crashing)
    name = pod["metadata"]["name"]
    status = container(pod)
    assert pod["status"]["phase"] == "Running"
    assert status["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert status["lastState"]["terminated"]["exitCode"] == 1
    assert status["lastState"]["terminated"]["reason"] == "Error"
    assert status["ready"] is False
    assert condition(pod, "Ready")["status"] == "False"
    restarts = status["restartCount"]

    async def restarted_twice_more() -> Obj | None:
        [now] = [p for p in await pods(kube, ns, "shop") if p["metadata"]["name"] == name]
        return now if container(now)["restartCount"] >= restarts + 2 else None

    later = await eventually("the restart count to rise", restarted_twice_more)
    assert container(later)["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    [backoff] = await events(kube, ns, name, "BackOff")
    assert backoff["type"] == "Warning"
    assert backoff["message"] == "Back-off restarting failed container"
    assert backoff["source"] == {"component": "kubelet", "host": agent.name}
    assert backoff["count"] >= 2
    # One Event per reason, its count rising: the events stay few.
    reasons = sorted(e["reason"] for e in await events(kube, ns, name))
    assert reasons == ["BackOff", "Created", "Pulled", "Scheduled", "Started"]

    # The rollout is stuck: the old pods keep serving, the new one never becomes available.
    shop = await get_deployment(kube, ns, "shop")
    assert shop["status"]["readyReplicas"] == 2
    assert shop["status"]["updatedReplicas"] == 1
    assert shop["status"]["unavailableReplicas"] == 1


async def test_a_memory_limit_below_the_need_is_oom_killed_and_at_the_need_is_healthy(
    kube: KubeApi, ns: str, nodes: StartAgent
) -> None:
    agent = nodes(restart_every_s=0.5)
    body = deployment("cache", 1, annotations={MEMORY_NEED: "512Mi"}, memory_limit="128Mi")
    await create(kube, ns, "deployments", body)

    async def oom_killed() -> Obj | None:
        found = [
            p
            for p in await pods(kube, ns, "cache")
            if (p["status"].get("containerStatuses") or [{}])[0].get("restartCount", 0) >= 2
        ]
        return found[0] if found else None

    pod = await eventually("an OOM-killed container restarting", oom_killed)
    status = container(pod)
    assert status["lastState"]["terminated"]["reason"] == "OOMKilled"
    assert status["lastState"]["terminated"]["exitCode"] == 137
    assert status["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert status["ready"] is False
    oom = await kube.get("/api/v1/namespaces/default/events", fieldSelector="reason=OOMKilling")
    [kill] = [e for e in oom["items"] if e["involvedObject"]["name"] == agent.name]
    assert pod["metadata"]["name"] in kill["message"]
    assert kill["source"] == {"component": "kubelet", "host": agent.name}
    assert (await events(kube, ns, pod["metadata"]["name"], "BackOff"))[0]["count"] >= 2

    # 0.5Gi is exactly the 512Mi it needs: the new pod runs, the OOM-killed one is replaced.
    containers = [{"name": "app", "image": "cache:1", "resources": {"limits": {"memory": "0.5Gi"}}}]
    await template_patch(kube, ns, "cache", {"spec": {"containers": containers}})
    await eventually("the raised limit rolled out", lambda: rolled_out(kube, ns, "cache", 1))
    [healthy] = await pods(kube, ns, "cache")
    assert healthy["metadata"]["name"] != pod["metadata"]["name"]
    assert running_and_ready(healthy)
    assert container(healthy)["restartCount"] == 0 and not container(healthy)["lastState"]


async def test_an_unready_pod_runs_unready_until_its_annotation_goes(
    kube: KubeApi, ns: str, nodes: StartAgent
) -> None:
    nodes(restart_every_s=0.5)
    await create(kube, ns, "deployments", deployment("shop", 1, annotations={BEHAVIOR: UNREADY}))

    async def unhealthy_twice() -> Obj | None:
        found = await pods(kube, ns, "shop")
        if not found:
            return None
        probes = await events(kube, ns, found[0]["metadata"]["name"], "Unhealthy")
        return found[0] if probes and probes[0]["count"] >= 2 else None

    pod = await eventually("failing readiness probes", unhealthy_twice)
    name = pod["metadata"]["name"]
    [probe] = await events(kube, ns, name, "Unhealthy")
    assert probe["type"] == "Warning"
    assert probe["message"].startswith("Readiness probe failed")
    assert pod["status"]["phase"] == "Running"
    assert "running" in container(pod)["state"] and container(pod)["ready"] is False
    assert condition(pod, "Ready")["status"] == "False"
    assert condition(pod, "Ready")["reason"] == "ContainersNotReady"
    shop = await get_deployment(kube, ns, "shop")
    assert shop["status"].get("readyReplicas", 0) == 0
    assert shop["status"]["unavailableReplicas"] == 1

    # The pod itself (not its template) recovers: annotations are read on every poll.
    await kube.merge_patch(
        f"/api/v1/namespaces/{ns}/pods/{name}", {"metadata": {"annotations": {BEHAVIOR: None}}}
    )
    await eventually("the deployment ready", lambda: rolled_out(kube, ns, "shop", 1))


async def test_deleted_pods_go_except_stuck_terminating_ones(
    kube: KubeApi, ns: str, nodes: StartAgent
) -> None:
    nodes()
    await create(kube, ns, "pods", bare_pod("plain"))
    await create(kube, ns, "pods", bare_pod("stuck", **{BEHAVIOR: STUCK_TERMINATING}))

    async def both_running() -> bool:
        listed = (await kube.get(f"/api/v1/namespaces/{ns}/pods"))["items"]
        return len(listed) == 2 and all(running_and_ready(p) for p in listed)

    await eventually("both pods running", both_running)
    for name in ("plain", "stuck"):
        await kube.request("DELETE", f"/api/v1/namespaces/{ns}/pods/{name}")

    async def plain_gone() -> bool:
        return await kube.find(f"/api/v1/namespaces/{ns}/pods/plain") is None

    await eventually("the plain pod confirmed deleted", plain_gone)
    await asyncio.sleep(1.5)  # several polls of the agent
    stuck = await kube.get(f"/api/v1/namespaces/{ns}/pods/stuck")
    assert stuck["metadata"]["deletionTimestamp"]
    assert stuck["status"]["phase"] == "Running"
    for name in ("plain", "stuck"):
        [killing] = await events(kube, ns, name, "Killing")
        assert killing["message"] == "Stopping container app"

    # Only a forced deletion gets rid of it, as on a cluster.
    await kube.request(
        "DELETE", f"/api/v1/namespaces/{ns}/pods/stuck", body={"gracePeriodSeconds": 0}
    )
    assert await kube.find(f"/api/v1/namespaces/{ns}/pods/stuck") is None


async def test_a_not_ready_node_keeps_its_pods_and_gets_no_new_ones(
    kube: KubeApi, ns: str, nodes: StartAgent
) -> None:
    agent = nodes()
    await create(kube, ns, "pods", bare_pod("before"))
    await eventually(
        "the first pod running",
        lambda: _pod_is(kube, ns, "before", running_and_ready),
    )

    agent.set_ready(False)

    node = await kube.get(f"/api/v1/nodes/{agent.name}")
    ready = condition(node, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "KubeletNotReady")
    assert {(t["key"], t["effect"]) for t in node["spec"]["taints"]} == {
        (NOT_READY_TAINT, "NoSchedule")
    }
    await create(kube, ns, "pods", bare_pod("after"))
    await asyncio.sleep(1.0)  # several polls of the agent
    after = await kube.get(f"/api/v1/namespaces/{ns}/pods/after")
    assert "nodeName" not in after["spec"] and after["status"]["phase"] == "Pending"
    assert running_and_ready(await kube.get(f"/api/v1/namespaces/{ns}/pods/before"))

    agent.set_ready(True)

    node = await kube.get(f"/api/v1/nodes/{agent.name}")
    assert condition(node, "Ready")["status"] == "True"
    assert not node["spec"].get("taints")
    await eventually("the new pod running", lambda: _pod_is(kube, ns, "after", running_and_ready))


async def _pod_is(kube: KubeApi, ns: str, name: str, check: Callable[[Obj], bool]) -> bool:
    pod = await kube.find(f"/api/v1/namespaces/{ns}/pods/{name}")
    return pod is not None and check(pod)


async def test_two_nodes_share_the_pods_and_a_drain_respects_the_disruption_budget(
    kube: KubeApi, ns: str, nodes: StartAgent
) -> None:
    first, second = nodes(), nodes()
    await create(kube, ns, "deployments", deployment("shop", 4))
    await eventually("4 ready replicas", lambda: rolled_out(kube, ns, "shop", 4))
    placed = sorted(p["spec"]["nodeName"] for p in await pods(kube, ns, "shop"))
    assert placed == sorted([first.name, first.name, second.name, second.name])

    budget = {
        "metadata": {"name": "shop"},
        "spec": {"minAvailable": 3, "selector": {"matchLabels": {"app": "shop"}}},
    }
    budgets = f"/apis/policy/v1beta1/namespaces/{ns}/poddisruptionbudgets"
    await kube.create(budgets, budget)

    async def allowed(count: int) -> bool:
        status = (await kube.get(f"{budgets}/shop")).get("status", {})
        return bool(status.get("currentHealthy") == 4 and status.get("disruptionsAllowed") == count)

    await eventually("the disruption controller's status", lambda: allowed(1))

    # A drain of the first node: cordon, then evict its pods one at a time.
    await kube.merge_patch(f"/api/v1/nodes/{first.name}", {"spec": {"unschedulable": True}})
    on_first = [p for p in await pods(kube, ns, "shop") if p["spec"]["nodeName"] == first.name]
    evictions = [await evict(kube, ns, p["metadata"]["name"]) for p in on_first]
    assert evictions[0] == "evicted"
    # The budget allows one at a time: the second is refused (HTTP 429) until a replacement runs.
    assert evictions[1].startswith("refused:")
    assert "would violate the pod's disruption budget" in evictions[1]

    await eventually("a replacement ready elsewhere", lambda: allowed(1))
    assert await evict(kube, ns, on_first[1]["metadata"]["name"]) == "evicted"

    async def all_on_second() -> bool:
        listed = await pods(kube, ns, "shop")
        return len(listed) == 4 and all(
            p["spec"].get("nodeName") == second.name and running_and_ready(p) for p in listed
        )

    await eventually("every pod on the second node", all_on_second)


async def evict(kube: KubeApi, ns: str, pod: str) -> str:
    body = {"apiVersion": "policy/v1beta1", "kind": "Eviction", "metadata": {"name": pod}}
    try:
        await kube.create(f"/api/v1/namespaces/{ns}/pods/{pod}/eviction", body)
    except TargetError as exc:
        return f"refused: {exc}"
    return "evicted"


async def test_statefulsets_and_daemonsets_run_on_the_agents_nodes(
    kube: KubeApi, ns: str, nodes: StartAgent
) -> None:
    first, second = nodes(), nodes()
    template = {
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": "web:1"}]},
    }
    selector = {"matchLabels": {"app": "web"}}
    await create(
        kube,
        ns,
        "statefulsets",
        {
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "serviceName": "web",
                "selector": selector,
                "template": template,
            },
        },
    )
    agents_template = {**template, "metadata": {"labels": {"app": "agent"}}}
    daemon = {"selector": {"matchLabels": {"app": "agent"}}, "template": agents_template}
    await create(kube, ns, "daemonsets", {"metadata": {"name": "agent"}, "spec": daemon})

    async def web_ready() -> bool:
        found = await kube.get(f"/apis/apps/v1/namespaces/{ns}/statefulsets/web")
        return bool(found.get("status", {}).get("readyReplicas") == 2)

    await eventually("the statefulset's 2 ready replicas, one after the other", web_ready)
    assert sorted(p["metadata"]["name"] for p in await pods(kube, ns, "web")) == ["web-0", "web-1"]

    async def one_per_node() -> bool:
        # Other tests' nodes (no agent) get a daemon pod too, which stays Pending.
        placed = [
            p["spec"].get("nodeName") for p in await pods(kube, ns, "agent") if running_and_ready(p)
        ]
        return sorted(placed) == sorted([first.name, second.name])

    await eventually("a daemon pod running on each agent's node", one_per_node)


async def test_an_unknown_behavior_is_reported_and_the_node_goes_with_its_agent(
    admin_api: ApiClient, kube: KubeApi, ns: str
) -> None:
    with NodeAgent(admin_api, namespaces=[ns]) as agent:
        await create(kube, ns, "pods", bare_pod("typo", **{BEHAVIOR: "crashlop"}))
        await eventually(
            "the pod running as healthy", lambda: _pod_is(kube, ns, "typo", running_and_ready)
        )
        assert any("crashlop" in e and BEHAVIOR in e for e in agent.errors)
        await delete_namespace(kube, ns)
    assert await kube.find(f"/api/v1/nodes/{agent.name}") is None


def test_memory_quantities_compare_across_units() -> None:
    assert _quantity("0.5Gi") == _quantity("512Mi") == Decimal(512 * 2**20)
    assert _quantity("300Mi") > _quantity("300M")
    assert _quantity("1G") == _quantity("1e9") == _quantity("1000M") == Decimal(10**9)
    assert _quantity("256Ki") * 4 == _quantity("1Mi")
    with pytest.raises(ValueError, match="expected a Kubernetes quantity such as 300Mi"):
        _quantity("lots")
