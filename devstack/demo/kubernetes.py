"""The Kubernetes demos: ``selfheal dev --kubeconfig PATH --demo k8s-bad-rollout`` (and
``k8s-oom``, ``k8s-stuck-pod``) heal a workload on a real API server.

Each demo owns namespace ``selfheal-demo`` and Deployment ``web`` in it (recreated at every run),
declared in the dev stack's service catalog as service ``demo-web``. The API server may have no
kubelet (the test control plane, ``.ci/k8s/start-apiserver``): the demo runs its own simulated
node (``devstack/kube_agent.py``, the kubelet's part played through the API) serving that
namespace only, and the Deployment's pods select that node, so that the fault the demo brings
comes from the pod template (a rollout) or the pod (an annotation) exactly as the node agent
reads them. It refuses a cluster with nodes of its own: registering a simulated node there is
not something a demo should do.

A demo brings its fault, waits until the API shows it (a crash-looping pod, an OOM-killed pod,
a pod not ready), posts the kube-prometheus alert to the stack's intake as Alertmanager posts
it (``/v1/alertmanager``, the ingest token), and follows the healing; at the end the Deployment
must be rolled out with every pod ready and none restarting.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from selfheal.activities.actions.kubernetes import KubeApi, kubernetes_client
from selfheal.core.catalog import ServiceSpec
from selfheal.core.settings import KubernetesSettings, Settings
from selfheal.devstack.demo.scenarios import Scenario
from selfheal.devstack.kube_agent import (
    AGENT_LABEL,
    BEHAVIOR,
    CRASHLOOP,
    MEMORY_NEED,
    UNREADY,
    NodeAgent,
)
from selfheal.domain import TargetError

Obj = dict[str, Any]

NAMESPACE = "selfheal-demo"
APP = "web"
SERVICE = "demo-web"
NODE = f"{NAMESPACE}-node"
REPLICAS = 2
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
KSM_LABELS = {"job": "kube-state-metrics", "service": "kube-state-metrics"}
SHOW_FAULT_S = 30.0
HOSTNAME_LABEL = "kubernetes.io/hostname"


class KubeDemoError(Exception):
    """The cluster cannot run the demo, or the fault did not show; the message says why."""


@dataclass(frozen=True)
class KubeScenario(Scenario):
    alert: str = ""
    """the kube-prometheus alert posted once the fault shows"""
    memory_limit: str | None = None
    memory_need: str | None = None

    def inject(self, base_url: str, *, timeout_s: float = 5.0) -> None:
        raise KubeDemoError(f"{self.name} is injected through the Kubernetes API: see run_fault")


KUBE_SCENARIOS: dict[str, KubeScenario] = {
    s.name: s
    for s in (
        KubeScenario(
            name="k8s-bad-rollout",
            description=f"a rollout of Deployment {NAMESPACE}/{APP} brings a pod template whose "
            "containers crash on start; KubePodCrashLooping fires",
            root_cause="bad_rollout",
            component=SERVICE,
            heals_by="kubernetes.rollback to the previous revision (high risk: approval)",
            alert="KubePodCrashLooping",
        ),
        KubeScenario(
            name="k8s-oom",
            description=f"Deployment {NAMESPACE}/{APP} needs 180Mi but is limited to 128Mi: "
            "its containers are OOM-killed; KubePodOOMKilled fires",
            root_cause="oom_killed",
            component=SERVICE,
            heals_by="kubernetes.set_resources raising the memory limit by 1.5x (restored if "
            "the raise does not heal)",
            alert="KubePodOOMKilled",
            memory_limit="128Mi",
            memory_need="180Mi",
        ),
        KubeScenario(
            name="k8s-stuck-pod",
            description=f"one pod of Deployment {NAMESPACE}/{APP} stops being ready, with no "
            "rollout; KubePodNotReady fires",
            root_cause="pod_stuck",
            component=SERVICE,
            heals_by="kubernetes.delete_pod: its ReplicaSet starts a fresh one",
            alert="KubePodNotReady",
        ),
    )
}


def demo_service() -> ServiceSpec:
    """The catalog's entry for the demo's Deployment."""
    return ServiceSpec.model_validate(
        {
            "name": SERVICE,
            "targets": [{"name": APP, "kind": "deployment", "namespace": NAMESPACE}],
            "allowed_actions": ["kubernetes.*", "wait"],
            "allowed_namespaces": [NAMESPACE],
            "max_pods_per_step": REPLICAS,
            "cooldown_s": 0,
            "guards": [],
        }
    )


def deployment_body(
    name: str,
    replicas: int,
    *,
    annotations: dict[str, str] | None = None,
    memory_limit: str | None = None,
    node_selector: dict[str, str] | None = None,
) -> Obj:
    """A Deployment of one container ``app`` whose pods carry label ``app=<name>``."""
    container: Obj = {"name": "app", "image": f"{name}:1"}
    if memory_limit is not None:
        container["resources"] = {"limits": {"memory": memory_limit}}
    pod_spec: Obj = {"containers": [container]}
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations or {}},
                "spec": pod_spec,
            },
        },
    }


async def rolled_out(kube: KubeApi, ns: str, name: str, replicas: int) -> Obj | None:
    """The Deployment once its controller counts ``replicas`` updated, ready, available pods
    and no others, for its current generation; else None."""
    found = await kube.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{name}")
    status = found.get("status", {})
    fields = ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas")
    done = [status.get(k) for k in fields] == [replicas] * len(fields)
    current = found["metadata"]["generation"] == status.get("observedGeneration")
    return found if done and current else None


async def live_pods(kube: KubeApi, ns: str, app: str) -> list[Obj]:
    """The app's pods, but not those being deleted."""
    listed = await kube.get(f"/api/v1/namespaces/{ns}/pods", labelSelector=f"app={app}")
    return [p for p in listed["items"] if not p["metadata"].get("deletionTimestamp")]


def restarts(pod: Obj) -> int:
    return sum(
        c.get("restartCount", 0) for c in pod.get("status", {}).get("containerStatuses") or []
    )


def running_and_ready(pod: Obj) -> bool:
    status = pod.get("status", {})
    containers = status.get("containerStatuses") or []
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    return (
        status.get("phase") == "Running"
        and bool(containers)
        and all(c.get("ready") and "running" in c.get("state", {}) for c in containers)
        and ready
    )


async def _until(what: str, check: Callable[[], Awaitable[Any]], timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (found := await check()):
        if time.monotonic() > deadline:
            raise KubeDemoError(f"timed out after {timeout_s:g}s waiting for {what}")
        await asyncio.sleep(0.25)
    return found


@dataclass
class KubeDemo:
    """The demo's namespace, node and Deployment on the cluster of ``settings.kubernetes``."""

    kube: KubeApi
    agent: NodeAgent | None = None

    @classmethod
    def connect(cls, settings: Settings) -> KubeDemo:
        try:
            api = kubernetes_client(settings.kubernetes)
        except TargetError as exc:
            raise KubeDemoError(str(exc)) from None
        if api is None:
            raise KubeDemoError(
                "the Kubernetes demos need a cluster: give selfheal dev --kubeconfig PATH"
            )
        return cls(KubeApi(api))

    @property
    def deployment_path(self) -> str:
        return f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{APP}"

    async def prepare(self, scenario: KubeScenario) -> None:
        """Check the cluster, create the namespace if missing, start the simulated node and
        (re)create the Deployment healthy (or, for ``k8s-oom``, short of memory from the
        start), then wait for it to roll out (OOM: for its first kill)."""
        await self._refuse_real_nodes()
        if await self.kube.find(f"/api/v1/namespaces/{NAMESPACE}") is None:
            await self.kube.create("/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
        self.agent = NodeAgent(self.kube.api, NODE, namespaces=[NAMESPACE]).start()
        await self.delete_workload()
        annotations = {MEMORY_NEED: scenario.memory_need} if scenario.memory_need else {}
        body = deployment_body(
            APP,
            REPLICAS,
            annotations=annotations,
            memory_limit=scenario.memory_limit or "256Mi",
            node_selector={HOSTNAME_LABEL: NODE},
        )
        await self.kube.create(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments", body)
        if scenario.memory_need is None:
            await _until(
                f"Deployment {NAMESPACE}/{APP} to roll out",
                lambda: rolled_out(self.kube, NAMESPACE, APP, REPLICAS),
                SHOW_FAULT_S,
            )

    async def _refuse_real_nodes(self) -> None:
        nodes = (await self.kube.get("/api/v1/nodes"))["items"]
        real = [
            n["metadata"]["name"]
            for n in nodes
            if AGENT_LABEL not in n["metadata"].get("labels", {}) and _ready(n)
        ]

        if real:
            raise KubeDemoError(
                f"this cluster has {len(real)} node(s) of its own ({', '.join(real[:3])}): the "
                "Kubernetes demos simulate their node and run on a control plane without "
                "kubelets (.ci/k8s/start-apiserver); against a real cluster, run selfheal dev "
                "--kubeconfig without --demo and let its Alertmanager post to the intake"
            )

    async def delete_workload(self) -> None:
        """Delete the demo's Deployment, its ReplicaSets and pods, and wait until no pod of it
        is left running. Each is deleted explicitly: a control plane without the garbage
        collector (the test one) would leave the ReplicaSets making pods."""
        if await self.kube.find(self.deployment_path) is not None:
            await self.kube.request("DELETE", self.deployment_path)
        selector = {"labelSelector": f"app={APP}"}
        await self.kube.request(
            "DELETE", f"/apis/apps/v1/namespaces/{NAMESPACE}/replicasets", query=selector
        )
        # the simulated node confirms the pods' deletion
        await self.kube.request("DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods", query=selector)

        async def gone() -> bool:
            if await self.kube.find(self.deployment_path) is not None:
                return False
            return not await live_pods(self.kube, NAMESPACE, APP)

        await _until(f"the previous Deployment {NAMESPACE}/{APP} to go", gone, SHOW_FAULT_S)

    async def bring_fault(self, scenario: KubeScenario) -> dict[str, str]:
        """Bring the scenario's fault and wait until the API shows it; the alert's labels."""
        if scenario.name == "k8s-bad-rollout":
            await self.kube.request(
                "PATCH",
                self.deployment_path,
                body={"spec": {"template": {"metadata": {"annotations": {BEHAVIOR: CRASHLOOP}}}}},
                content_type=STRATEGIC_MERGE_PATCH,
            )
            pod = await _until("a pod crash-looping", self._crash_looping, SHOW_FAULT_S)
            return {"pod": pod, "container": "app", "reason": "CrashLoopBackOff"}
        if scenario.name == "k8s-oom":
            pod = await _until("a pod OOM-killed", self._oom_killed, SHOW_FAULT_S)
            return {"pod": pod, "container": "app", "reason": "OOMKilled"}
        pods = await live_pods(self.kube, NAMESPACE, APP)
        pod = sorted(p["metadata"]["name"] for p in pods)[0]
        await self.kube.request(
            "PATCH",
            f"/api/v1/namespaces/{NAMESPACE}/pods/{pod}",
            body={"metadata": {"annotations": {BEHAVIOR: UNREADY}}},
            content_type=STRATEGIC_MERGE_PATCH,
        )

        async def unready() -> bool:
            found = await self.kube.get(f"/api/v1/namespaces/{NAMESPACE}/pods/{pod}")
            return not running_and_ready(found)

        await _until(f"pod {pod} to be not ready", unready, SHOW_FAULT_S)
        return {"pod": pod}

    async def _crash_looping(self) -> str | None:
        for pod in await live_pods(self.kube, NAMESPACE, APP):
            for status in pod.get("status", {}).get("containerStatuses") or []:
                waiting = status.get("state", {}).get("waiting", {}).get("reason")
                if waiting == "CrashLoopBackOff" and status.get("restartCount", 0) >= 1:
                    return str(pod["metadata"]["name"])
        return None

    async def _oom_killed(self) -> str | None:
        for pod in await live_pods(self.kube, NAMESPACE, APP):
            for status in pod.get("status", {}).get("containerStatuses") or []:
                last = status.get("lastState", {}).get("terminated", {})
                if last.get("reason") == "OOMKilled":
                    return str(pod["metadata"]["name"])
        return None

    async def healthy(self, timeout_s: float) -> str | None:
        """A line saying the Deployment is rolled out, every pod ready and none restarting,
        once it is (within ``timeout_s``); None if it is not."""
        try:
            await _until("the Deployment to be healthy", self._healthy, timeout_s)
        except KubeDemoError:
            return None
        return f"Deployment {NAMESPACE}/{APP}: {REPLICAS}/{REPLICAS} ready, none restarting"

    async def _healthy(self) -> bool:
        if await rolled_out(self.kube, NAMESPACE, APP, REPLICAS) is None:
            return False
        pods = await live_pods(self.kube, NAMESPACE, APP)
        return len(pods) == REPLICAS and all(
            running_and_ready(p) and restarts(p) == 0 for p in pods
        )

    async def state(self) -> str:
        """What the Deployment looks like now, on one line."""
        found = await self.kube.get(self.deployment_path)
        status = found.get("status", {})
        pods = await live_pods(self.kube, NAMESPACE, APP)
        return (
            f"Deployment {NAMESPACE}/{APP}: {status.get('readyReplicas', 0)}/{REPLICAS} ready, "
            f"restarts {sum(restarts(p) for p in pods)}"
        )

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.stop()
            self.agent = None


def _ready(node: Obj) -> bool:
    """A node a kubelet keeps Ready (a Node object nothing runs on is not a node of the
    cluster's: nothing would run the demo's pods there)."""
    conditions = node.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def alert_body(scenario: KubeScenario, labels: dict[str, str]) -> Obj:
    """The scenario's alert as Alertmanager's webhook posts it (one firing alert)."""
    alert: Obj = {
        "status": "firing",
        "labels": {
            "alertname": scenario.alert,
            "severity": "warning",
            "namespace": NAMESPACE,
            **KSM_LABELS,
            **labels,
        },
        "annotations": {"summary": f"{scenario.alert} in {NAMESPACE}"},
        "startsAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": uuid.uuid4().hex[:16],
    }
    return {"version": "4", "status": "firing", "receiver": "selfheal", "alerts": [alert]}


async def post_alert(intake_url: str, token: str, body: Obj) -> str:
    """Post ``body`` to the intake as Alertmanager would; the healing's workflow id."""
    async with httpx.AsyncClient(timeout=10.0) as http:
        response = await http.post(
            f"{intake_url}/v1/alertmanager",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        )
    if response.status_code != httpx.codes.OK:
        raise KubeDemoError(
            f"the intake answered HTTP {response.status_code}: {response.text[:300]}"
        )
    result = response.json()
    started = result.get("started") or result.get("signalled") or []
    if not started:
        raise KubeDemoError(f"the intake started no healing: {result}")
    return str(started[0])


def kubeconfig_problem(path: Path, context: str | None = None) -> str | None:
    """Why ``path`` cannot be the dev stack's kubeconfig (not a file, or not one the Kubernetes
    client can load), or None: checked before anything starts."""
    if not path.is_file():
        return (
            f"--kubeconfig: {path} is not a file; expected a kubeconfig (e.g. the one "
            ".ci/k8s/start-apiserver writes)"
        )
    try:
        kubernetes_client(KubernetesSettings(kubeconfig=path, context=context))
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"--kubeconfig: {path} is not a kubeconfig the Kubernetes client can load: {reason}"
    return None
