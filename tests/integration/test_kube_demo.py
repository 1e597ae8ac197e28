"""The Kubernetes demos' cluster side (``devstack/demo/kubernetes.py``) on a real kube-apiserver
and controller-manager: each scenario's Deployment is prepared on the demo's simulated node, its
fault shows in the API as the alert it posts says, and a cluster with nodes of its own is
refused. (``tests/e2e/test_dev_kubernetes_demo.py`` heals one through ``selfheal dev``.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from selfheal.core.settings import KubernetesSettings, Settings
from selfheal.devstack.demo.kubernetes import (
    APP,
    KUBE_SCENARIOS,
    NAMESPACE,
    NODE,
    KubeDemo,
    KubeDemoError,
    alert_body,
    live_pods,
    restarts,
    running_and_ready,
)
from tests.integration.k8s_cluster import Cluster

pytestmark = pytest.mark.integration


@pytest.fixture
async def demo(k8s_cluster: Cluster) -> AsyncIterator[KubeDemo]:
    settings = Settings(kubernetes=KubernetesSettings(kubeconfig=k8s_cluster.kubeconfig))
    demo = KubeDemo.connect(settings)
    try:
        yield demo
    finally:
        errors = list(demo.agent.errors) if demo.agent is not None else []
        try:
            if demo.agent is not None:
                await demo.delete_workload()  # while the node runs: it confirms the deletions
        finally:
            demo.stop()
    assert errors == []


async def test_a_bad_rollout_crash_loops_and_the_alert_names_the_pod(demo: KubeDemo) -> None:
    scenario = KUBE_SCENARIOS["k8s-bad-rollout"]
    await demo.prepare(scenario)
    assert await demo.healthy(5) is not None
    before = await demo.kube.get(demo.deployment_path)
    assert before["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    # the pods select the demo's node, and run there
    pods = await live_pods(demo.kube, NAMESPACE, APP)
    assert {p["spec"]["nodeName"] for p in pods} == {NODE}

    labels = await demo.bring_fault(scenario)

    after = await demo.kube.get(demo.deployment_path)
    assert after["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    pod = await demo.kube.get(f"/api/v1/namespaces/{NAMESPACE}/pods/{labels['pod']}")
    [container] = pod["status"]["containerStatuses"]
    assert container["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert labels["reason"] == "CrashLoopBackOff" and labels["container"] == "app"
    [alert] = alert_body(scenario, labels)["alerts"]
    assert alert["labels"]["alertname"] == "KubePodCrashLooping"
    assert alert["labels"]["namespace"] == NAMESPACE and alert["labels"]["pod"] == labels["pod"]
    assert await demo.healthy(0.5) is None


async def test_oom_kills_show_from_the_start(demo: KubeDemo) -> None:
    scenario = KUBE_SCENARIOS["k8s-oom"]
    await demo.prepare(scenario)
    labels = await demo.bring_fault(scenario)
    pod = await demo.kube.get(f"/api/v1/namespaces/{NAMESPACE}/pods/{labels['pod']}")
    [container] = pod["status"]["containerStatuses"]
    assert container["lastState"]["terminated"]["reason"] == "OOMKilled"
    assert labels["reason"] == "OOMKilled"


async def test_a_stuck_pod_is_one_pod_not_ready_without_a_rollout(demo: KubeDemo) -> None:
    scenario = KUBE_SCENARIOS["k8s-stuck-pod"]
    await demo.prepare(scenario)
    labels = await demo.bring_fault(scenario)
    pods = {p["metadata"]["name"]: p for p in await live_pods(demo.kube, NAMESPACE, APP)}
    assert not running_and_ready(pods.pop(labels["pod"]))
    assert all(running_and_ready(p) and restarts(p) == 0 for p in pods.values())
    found = await demo.kube.get(demo.deployment_path)
    assert found["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"


async def test_a_cluster_with_nodes_of_its_own_is_refused(demo: KubeDemo) -> None:
    node = "a-real-node"
    await demo.kube.create("/api/v1/nodes", {"metadata": {"name": node}})
    # a kubelet's: Ready (a bare Node object, such as other tests leave, is not refused)
    ready = {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ok"}
    await demo.kube.request(
        "PATCH",
        f"/api/v1/nodes/{node}/status",
        body={"status": {"conditions": [ready]}},
        content_type="application/strategic-merge-patch+json",
    )
    try:
        with pytest.raises(KubeDemoError, match="1 node\\(s\\) of its own \\(a-real-node\\)"):
            await demo.prepare(KUBE_SCENARIOS["k8s-stuck-pod"])
        assert demo.agent is None
        nodes = (await demo.kube.get("/api/v1/nodes"))["items"]
        assert NODE not in [n["metadata"]["name"] for n in nodes]  # no simulated node registered
    finally:
        await demo.kube.request("DELETE", f"/api/v1/nodes/{node}")


def test_a_kubeconfig_that_is_no_file_is_named(tmp_path: Path) -> None:
    from selfheal.devstack.demo.kubernetes import kubeconfig_problem

    problem = kubeconfig_problem(tmp_path / "missing")
    assert problem is not None and problem.startswith("--kubeconfig: ")
    assert str(tmp_path / "missing") in problem
