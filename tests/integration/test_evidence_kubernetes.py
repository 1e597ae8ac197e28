"""The Kubernetes evidence provider against a real kube-apiserver and controller-manager.

There is no kubelet or scheduler, so the test plays them: it binds the pod to a Node it created,
writes the pod's and the node's status through their status subresources, and records the
events a kubelet would (BackOff). The rollout is real: the deployment controller makes a new
ReplicaSet when the template changes, and the controllers record their own events.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient

from selfheal.activities.actions.kubernetes import KubeApi
from selfheal.activities.evidence.base import EvidenceProviders, EvidenceRequest, Gathered
from selfheal.activities.evidence.kubernetes import KubernetesProvider, kubernetes_provider
from selfheal.core.catalog import ServiceCatalog, ServiceSpec, TargetSpec
from selfheal.core.settings import EvidenceSettings, KubernetesSettings
from selfheal.devstack.processes import free_port
from selfheal.domain import Fault

Obj = dict[str, Any]
WAIT_S = 30.0


@pytest.fixture
async def ns(admin_api: ApiClient) -> AsyncIterator[str]:
    name = f"ev-{uuid.uuid4().hex[:8]}"
    await KubeApi(admin_api).create("/api/v1/namespaces", {"metadata": {"name": name}})
    yield name


async def eventually(what: str, check: Callable[[], Awaitable[Any]]) -> Any:
    deadline = time.monotonic() + WAIT_S
    while not (result := await check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)
    return result


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def request(ns: str, target: TargetSpec, at: datetime | None = None) -> EvidenceRequest:
    spec = ServiceSpec(name="shop", targets=[target])
    return EvidenceRequest(
        fault=Fault(service="shop", type="health_check_failed"),
        at=at or datetime.now(UTC),
        window_before_s=900,
        window_after_s=120,
        service=spec,
        catalog=ServiceCatalog(services=[spec]),
    )


async def create_node(kube: KubeApi, name: str) -> None:
    await kube.create("/api/v1/nodes", {"metadata": {"name": name}})
    conditions = [
        {"type": "Ready", "status": "False", "reason": "KubeletNotReady"},
        {"type": "MemoryPressure", "status": "True", "reason": "KubeletHasInsufficientMemory"},
        {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure"},
    ]
    await kube.merge_patch(f"/api/v1/nodes/{name}/status", {"status": {"conditions": conditions}})


async def roll_out(kube: KubeApi, ns: str) -> Obj:
    """Deployment ``shop`` at revision 2 (a changed template); returns its one pod."""
    deployments = f"/apis/apps/v1/namespaces/{ns}/deployments"
    body = {
        "metadata": {"name": "shop"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "shop"}},
            # Recreate: with no kubelet no pod becomes available for a rolling update.
            "strategy": {"type": "Recreate"},
            "template": {
                "metadata": {"labels": {"app": "shop"}},
                "spec": {"containers": [{"name": "app", "image": "shop:1"}]},
            },
        },
    }
    await kube.create(deployments, body)
    await eventually("a pod of revision 1", lambda: pods_of_revision(kube, ns, "1"))
    template = {"spec": {"containers": [{"name": "app", "image": "shop:2"}]}}
    await kube.merge_patch(f"{deployments}/shop", {"spec": {"template": template}})
    [pod] = await eventually("a pod of revision 2", lambda: pods_of_revision(kube, ns, "2"))
    return pod  # type: ignore[no-any-return]


async def pods_of_revision(kube: KubeApi, ns: str, revision: str) -> list[Obj]:
    sets = await kube.get(f"/apis/apps/v1/namespaces/{ns}/replicasets", labelSelector="app=shop")
    hashes = {
        rs["metadata"]["labels"]["pod-template-hash"]
        for rs in sets["items"]
        if rs["metadata"]["annotations"].get("deployment.kubernetes.io/revision") == revision
    }
    listed = await kube.get(f"/api/v1/namespaces/{ns}/pods", labelSelector="app=shop")
    pods = [p for p in listed["items"] if not p["metadata"].get("deletionTimestamp")]
    if len(pods) != 1 or pods[0]["metadata"]["labels"].get("pod-template-hash") not in hashes:
        return []
    return pods


async def crash_loop(kube: KubeApi, ns: str, pod: str, node: str, now: datetime) -> None:
    """What a scheduler and a kubelet would write for a container OOMKilled four times."""
    binding = {"metadata": {"name": pod}, "target": {"kind": "Node", "name": node}}
    await kube.create(f"/api/v1/namespaces/{ns}/pods/{pod}/binding", binding)
    container = {
        "name": "app",
        "image": "shop:2",
        "imageID": "",
        "ready": False,
        "restartCount": 4,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
        "lastState": {
            "terminated": {
                "reason": "OOMKilled",
                "exitCode": 137,
                "startedAt": stamp(now - timedelta(seconds=30)),
                "finishedAt": stamp(now - timedelta(seconds=5)),
            }
        },
    }
    status = {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady"}],
        "containerStatuses": [container],
    }
    await kube.merge_patch(f"/api/v1/namespaces/{ns}/pods/{pod}/status", {"status": status})


async def record_event(
    kube: KubeApi, ns: str, pod: str, reason: str, *, at: datetime, count: int = 1
) -> None:
    body = {
        "metadata": {"name": f"{pod}.{uuid.uuid4().hex[:10]}"},
        "involvedObject": {"kind": "Pod", "name": pod, "namespace": ns, "apiVersion": "v1"},
        "reason": reason,
        "message": f"{reason} (test)",
        "type": "Warning",
        "count": count,
        "firstTimestamp": stamp(at - timedelta(seconds=60)),
        "lastTimestamp": stamp(at),
        "source": {"component": "kubelet"},
    }
    await kube.create(f"/api/v1/namespaces/{ns}/events", body)


async def test_a_crash_looping_oom_killed_pod_after_a_rollout_on_a_bad_node(
    admin_api: ApiClient, ns: str
) -> None:
    kube = KubeApi(admin_api)
    node = f"node-{uuid.uuid4().hex[:8]}"
    await create_node(kube, node)
    pod = (await roll_out(kube, ns))["metadata"]["name"]
    now = datetime.now(UTC)
    await crash_loop(kube, ns, pod, node, now)
    await record_event(kube, ns, pod, "BackOff", at=now, count=5)
    await record_event(kube, ns, pod, "FailedMount", at=now - timedelta(hours=2))
    await record_event(kube, ns, "someone-else", "FailedScheduling", at=now)

    provider = KubernetesProvider(admin_api, rollout_window_s=1800)
    deployment = TargetSpec(name="shop", kind="deployment", namespace=ns)

    async def with_controller_events() -> Gathered | None:
        # The controllers record their events asynchronously.
        gathered = await provider.gather(request(ns, deployment))
        return gathered if "k8s.events.SuccessfulCreate" in gathered.facts else None

    gathered: Gathered = await eventually("the controllers' events", with_controller_events)
    facts = gathered.facts
    assert {k: facts[k] for k in ("k8s.pods", "k8s.ready", "k8s.not_ready", "k8s.restarts")} == {
        "k8s.pods": 1,
        "k8s.ready": 0,
        "k8s.not_ready": 1,
        "k8s.restarts": 4,
    }
    assert facts["k8s.last_termination.reason"] == "OOMKilled"
    assert facts["k8s.last_termination.exit_code"] == 137
    assert facts["k8s.events.BackOff"] == 5
    assert facts["k8s.events.ScalingReplicaSet"] >= 2  # the deployment's: up, down, up
    assert "k8s.events.FailedMount" not in facts  # before the window
    assert "k8s.events.FailedScheduling" not in facts  # another pod's
    assert facts["k8s.rollout.revision"] == 2
    assert facts["k8s.rollout.recent"] is True
    assert 0 <= facts["k8s.rollout.age_s"] < 120
    assert facts["k8s.nodes.not_ready"] == 1
    assert facts["k8s.nodes.conditions"] == [f"{node}:NotReady", f"{node}:MemoryPressure"]
    assert {f.kind for f in gathered.findings} == {
        "oom_killed",
        "crash_loop",
        "recent_rollout",
        "node_not_ready",
    }
    assert {(f.source, f.component) for f in gathered.findings} == {("kubernetes", "shop")}

    # Two hours later the rollout is no longer recent, the events and the OOM kill are out of
    # the window; the container still waits in CrashLoopBackOff.
    later = await provider.gather(
        request(ns, deployment, at=datetime.now(UTC) + timedelta(hours=2))
    )
    assert later.facts["k8s.rollout.recent"] is False
    assert not any(k.startswith("k8s.events.") for k in later.facts)
    assert {f.kind for f in later.findings} == {"crash_loop", "node_not_ready"}

    # The pod itself as the target: the same pod facts, no rollout.
    alone = await provider.gather(request(ns, TargetSpec(name=pod, kind="pod", namespace=ns)))
    assert alone.facts["k8s.pods"] == 1
    assert alone.facts["k8s.events.BackOff"] == 5
    assert "k8s.rollout.revision" not in alone.facts
    assert {f.kind for f in alone.findings} == {"oom_killed", "crash_loop", "node_not_ready"}


async def test_a_missing_workload_is_missing_evidence(admin_api: ApiClient, ns: str) -> None:
    providers = EvidenceProviders([KubernetesProvider(admin_api)], timeout_s=10)
    target = TargetSpec(name="ghost", kind="deployment", namespace=ns)
    collected = await providers.collect(request(ns, target), ["kubernetes"])
    [missing] = collected.missing
    assert missing.source == "kubernetes"
    assert "not found" in missing.reason
    assert collected.facts == {}


async def test_an_unreachable_cluster_is_missing_evidence(tmp_path: Path) -> None:
    assert kubernetes_provider(KubernetesSettings()) is None  # no cluster configured
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        f"""apiVersion: v1
kind: Config
clusters: [{{name: gone, cluster: {{server: "https://127.0.0.1:{free_port()}",
  insecure-skip-tls-verify: true}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: gone, context: {{cluster: gone, user: u}}}}]
current-context: gone
"""
    )
    provider = kubernetes_provider(KubernetesSettings(kubeconfig=kubeconfig), EvidenceSettings())
    assert provider is not None
    started = time.monotonic()
    collected = await EvidenceProviders([provider], timeout_s=10).collect(
        request("default", TargetSpec(name="shop", kind="deployment")), ["kubernetes"]
    )
    [missing] = collected.missing
    assert missing.source == "kubernetes"
    assert "unreachable" in missing.reason
    assert time.monotonic() - started < 10
    # A target that is no workload asks nothing of the cluster: no evidence, no failure.
    process = request("default", TargetSpec(name="shop", kind="process"))
    assert await provider.gather(process) == Gathered()
