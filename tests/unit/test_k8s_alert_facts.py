"""The Kubernetes provider's facts that the kube-prometheus alerts' rules read: waiting reasons,
replicas, a stuck rollout, the pod the alert names, a node target, the room to scale out. Pure:
API objects as the API's JSON dicts, no cluster."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from selfheal.activities.evidence.base import EvidenceRequest
from selfheal.activities.evidence.kubernetes import (
    Observed,
    Window,
    assess,
    scale_to,
    workload_of,
)
from selfheal.core.catalog import ServiceCatalog, ServiceSpec, TargetSpec
from selfheal.domain import Fault

Obj = dict[str, Any]
AT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
WINDOW = Window(
    at=AT, since=AT - timedelta(minutes=15), until=AT + timedelta(minutes=2), rollout_s=1800
)


def ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def container(name: str = "web", *, waiting: str | None = None, restarts: int = 0) -> Obj:
    state: Obj = {"waiting": {"reason": waiting}} if waiting else {"running": {}}
    return {"name": name, "ready": waiting is None, "restartCount": restarts, "state": state}


def pod(name: str, *containers: Obj, ready: bool = True, phase: str = "Running") -> Obj:
    return {
        "metadata": {"name": name},
        "status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": list(containers) or [container()],
        },
    }


def deployment(desired: int | None = 3, conditions: list[Obj] | None = None, **status: int) -> Obj:
    spec: Obj = {} if desired is None else {"replicas": desired}
    return {
        "kind": "Deployment",
        "spec": spec,
        "status": {**status, "conditions": conditions or []},
    }


def facts(observed: Observed) -> dict[str, Any]:
    return assess(observed, service="shop", window=WINDOW).facts


def test_waiting_reasons_are_counted() -> None:
    pods = [
        pod("a", container(waiting="CrashLoopBackOff", restarts=4), container("side")),
        pod("b", container(waiting="CrashLoopBackOff"), {"name": "x", "state": {"waiting": {}}}),
        pod("c", container(waiting="ImagePullBackOff")),
    ]
    found = facts(Observed(pods=pods))
    assert {k: v for k, v in found.items() if "waiting" in k} == {
        "k8s.waiting.CrashLoopBackOff": 2,
        "k8s.waiting.ImagePullBackOff": 1,
        "k8s.waiting.Unknown": 1,
        "k8s.containers.waiting": 4,
    }
    assert not any("waiting" in k for k in facts(Observed(pods=[pod("a")])))


def test_replicas_of_a_workload() -> None:
    workload = deployment(3, readyReplicas=2, availableReplicas=1, updatedReplicas=3)
    found = facts(Observed(kind="deployment", workload=workload))
    assert found["k8s.kind"] == "deployment"
    assert {k: v for k, v in found.items() if k.startswith("k8s.replicas.")} == {
        "k8s.replicas.desired": 3,
        "k8s.replicas.ready": 2,
        "k8s.replicas.available": 1,
        "k8s.replicas.updated": 3,
        "k8s.replicas.missing": 2,
    }
    # unset replicas mean 1; a StatefulSet that reports no available count: its ready one
    sts = facts(Observed(kind="statefulset", workload=deployment(None, readyReplicas=1)))
    assert (sts["k8s.replicas.desired"], sts["k8s.replicas.available"]) == (1, 1)
    assert sts["k8s.replicas.missing"] == 0
    over = facts(Observed(workload=deployment(2, readyReplicas=3, availableReplicas=3)))
    assert over["k8s.replicas.missing"] == 0


def test_room_to_scale_out_to_the_catalogs_count() -> None:
    workload = deployment(4, readyReplicas=4, availableReplicas=4)
    assert facts(Observed(workload=workload, scale_to=6))["k8s.replicas.room"] == 2
    assert facts(Observed(workload=workload, scale_to=3))["k8s.replicas.room"] == -1
    assert "k8s.replicas.room" not in facts(Observed(workload=workload))
    assert [scale_to(v) for v in ("6", "0", "-1", "six", None)] == [6, 0, None, None, None]


def test_a_rollout_past_its_progress_deadline_is_stuck() -> None:
    def progressing(status: str, reason: str) -> Obj:
        return deployment(conditions=[{"type": "Progressing", "status": status, "reason": reason}])

    stuck = progressing("False", "ProgressDeadlineExceeded")
    assert facts(Observed(workload=stuck))["k8s.rollout.stuck"] is True
    for fine in (progressing("True", "NewReplicaSetAvailable"), progressing("True", "x")):
        assert facts(Observed(workload=fine))["k8s.rollout.stuck"] is False
    assert "k8s.rollout.stuck" not in facts(Observed(workload=deployment()))


def test_the_pod_the_alert_names() -> None:
    pods = [
        pod("web-1"),
        pod("web-2", container(waiting="ContainerCreating", restarts=2), ready=False),
    ]
    stuck = facts(Observed(pods=pods, pod="web-2"))
    assert {k: v for k, v in stuck.items() if k.startswith("k8s.pod.")} == {
        "k8s.pod.found": True,
        "k8s.pod.phase": "Running",
        "k8s.pod.ready": False,
        "k8s.pod.restarts": 2,
        "k8s.pod.waiting": "ContainerCreating",
    }
    fine = facts(Observed(pods=pods, pod="web-1"))
    assert fine["k8s.pod.ready"] is True and "k8s.pod.waiting" not in fine
    assert {k: v for k, v in facts(Observed(pods=pods, pod="web-9")).items() if "pod." in k} == {
        "k8s.pod.found": False
    }


def node(ready: str, since: datetime, unschedulable: bool = False) -> Obj:
    return {
        "metadata": {"name": "worker-1"},
        "spec": {"unschedulable": True} if unschedulable else {},
        "status": {
            "conditions": [
                {"type": "Ready", "status": ready, "lastTransitionTime": ts(since)},
                {"type": "MemoryPressure", "status": "False"},
            ]
        },
    }


def test_a_node_target() -> None:
    down = Observed(kind="node", nodes=[node("Unknown", AT - timedelta(minutes=7))])
    gathered = assess(down, service="nodes", window=WINDOW)
    assert gathered.facts == {
        "k8s.kind": "node",
        "k8s.node.unschedulable": False,
        "k8s.node.ready": False,
        "k8s.node.not_ready_s": 420.0,
        "k8s.nodes.not_ready": 1,
        "k8s.nodes.conditions": ["worker-1:NotReady"],
    }
    [finding] = gathered.findings
    assert (finding.kind, finding.component, finding.strength) == ("node_not_ready", "nodes", 0.9)
    cordoned = facts(Observed(kind="node", nodes=[node("True", AT - timedelta(days=1), True)]))
    assert cordoned["k8s.node.ready"] is True and cordoned["k8s.node.unschedulable"] is True
    assert "k8s.node.not_ready_s" not in cordoned
    assert cordoned["k8s.nodes.not_ready"] == 0


def test_a_node_target_is_read_as_a_node() -> None:
    worker = TargetSpec(name="worker-1", kind="node")
    spec = ServiceSpec(name="nodes", targets=[worker])
    request = EvidenceRequest(
        fault=Fault(service="nodes", type="KubeNodeNotReady", target="worker-1"),
        at=AT,
        window_before_s=900,
        window_after_s=120,
        service=spec,
        catalog=ServiceCatalog(services=[spec]),
    )
    found = workload_of(request)
    assert found is not None
    assert (found.kind, found.name, found.selector) == ("node", "worker-1", None)
