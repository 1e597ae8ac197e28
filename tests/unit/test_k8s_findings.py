"""The Kubernetes provider's pure part: API objects (as the API's JSON dicts) into ``k8s.*``
facts and findings, and which target is a workload. No cluster."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from selfheal.activities.evidence.base import EvidenceRequest
from selfheal.activities.evidence.kubernetes import (
    Observed,
    Rollout,
    Window,
    assess,
    deployment_rollout,
    revision_rollout,
    workload_of,
)
from selfheal.core.catalog import (
    EvidenceSpec,
    KubernetesEvidence,
    ServiceCatalog,
    ServiceSpec,
    TargetSpec,
)
from selfheal.domain import Fault

Obj = dict[str, Any]
AT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
WINDOW = Window(
    at=AT, since=AT - timedelta(minutes=15), until=AT + timedelta(minutes=2), rollout_s=1800
)


def ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def pod(
    name: str,
    *,
    ready: bool = True,
    node: str | None = None,
    restarts: int = 0,
    last: Obj | None = None,
    waiting: str | None = None,
    conditions: list[Obj] | None = None,
) -> Obj:
    state: Obj = {"waiting": {"reason": waiting}} if waiting else {"running": {}}
    status: Obj = {
        "name": "app",
        "ready": ready,
        "restartCount": restarts,
        "state": state,
        "lastState": {"terminated": last} if last else {},
    }
    ready_condition = {"type": "Ready", "status": "True" if ready else "False"}
    return {
        "metadata": {"name": name},
        "spec": {"nodeName": node} if node else {},
        "status": {
            "phase": "Running",
            "conditions": [ready_condition, *(conditions or [])],
            "containerStatuses": [status],
        },
    }


def event(reason: str, involved: tuple[str, str], *, at: datetime = AT, count: int = 1) -> Obj:
    kind, name = involved
    return {
        "metadata": {"name": f"{name}.{reason}"},
        "involvedObject": {"kind": kind, "name": name},
        "reason": reason,
        "count": count,
        "lastTimestamp": ts(at),
    }


def node(name: str, **conditions: str) -> Obj:
    return {
        "metadata": {"name": name},
        "status": {"conditions": [{"type": t, "status": s} for t, s in conditions.items()]},
    }


def kinds(observed: Observed) -> dict[str, float]:
    return {f.kind: f.strength for f in assess(observed, service="shop", window=WINDOW).findings}


def test_healthy_pods_give_counts_and_no_findings() -> None:
    gathered = assess(Observed(pods=[pod("a"), pod("b")]), service="shop", window=WINDOW)
    assert gathered.facts == {
        "k8s.pods": 2,
        "k8s.ready": 2,
        "k8s.not_ready": 0,
        "k8s.restarts": 0,
    }
    assert gathered.findings == []


def test_oom_kill_is_the_last_termination_and_a_finding() -> None:
    older = {"reason": "Error", "exitCode": 1, "finishedAt": ts(AT - timedelta(minutes=5))}
    oom = {"reason": "OOMKilled", "exitCode": 137, "finishedAt": ts(AT - timedelta(minutes=1))}
    observed = Observed(
        pods=[pod("a", ready=False, restarts=4, last=oom), pod("b", restarts=1, last=older)]
    )
    gathered = assess(observed, service="shop", window=WINDOW)
    assert gathered.facts["k8s.restarts"] == 5
    assert gathered.facts["k8s.not_ready"] == 1
    assert gathered.facts["k8s.last_termination.reason"] == "OOMKilled"
    assert gathered.facts["k8s.last_termination.exit_code"] == 137
    [finding] = gathered.findings
    assert (finding.kind, finding.component, finding.source) == ("oom_killed", "shop", "kubernetes")
    assert "pod a" in finding.detail


def test_an_oom_kill_before_the_window_is_a_fact_but_no_finding() -> None:
    old = {"reason": "OOMKilled", "exitCode": 137, "finishedAt": ts(AT - timedelta(hours=3))}
    gathered = assess(Observed(pods=[pod("a", restarts=1, last=old)]), service="s", window=WINDOW)
    assert gathered.facts["k8s.last_termination.reason"] == "OOMKilled"
    assert gathered.findings == []


def test_crash_loop_needs_restarts_and_backoff_or_waiting() -> None:
    backing_off = Observed(
        pods=[pod("a", restarts=3)], events=[event("BackOff", ("Pod", "a"), count=6)]
    )
    assert "crash_loop" in kinds(backing_off)
    assert assess(backing_off, service="s", window=WINDOW).facts["k8s.events.BackOff"] == 6
    waiting = Observed(pods=[pod("a", restarts=2, waiting="CrashLoopBackOff")])
    assert "crash_loop" in kinds(waiting)
    # Restarts alone (a single past restart) are not a crash loop.
    assert "crash_loop" not in kinds(Observed(pods=[pod("a", restarts=2)]))


def test_only_events_of_our_objects_within_the_window_count() -> None:
    observed = Observed(
        pods=[pod("shop-1")],
        owners=[("Deployment", "shop"), ("ReplicaSet", "shop-abc")],
        events=[
            event("Unhealthy", ("Pod", "shop-1"), count=2),
            event("FailedMount", ("Pod", "shop-1"), at=AT - timedelta(hours=2)),
            event("FailedScheduling", ("Pod", "other-1")),
            event("ScalingReplicaSet", ("Deployment", "shop")),
            event("SuccessfulCreate", ("ReplicaSet", "shop-abc")),
            event("SuccessfulCreate", ("ReplicaSet", "other-abc")),
        ],
    )
    facts = assess(observed, service="shop", window=WINDOW).facts
    events = {k: v for k, v in facts.items() if k.startswith("k8s.events.")}
    assert events == {
        "k8s.events.Unhealthy": 2,
        "k8s.events.ScalingReplicaSet": 1,
        "k8s.events.SuccessfulCreate": 1,
    }
    assert "failed_mount" not in kinds(observed)
    assert "failed_scheduling" not in kinds(observed)


def test_scheduling_and_mount_failures() -> None:
    unschedulable = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}
    assert "failed_scheduling" in kinds(Observed(pods=[pod("a", conditions=[unschedulable])]))
    mounting = Observed(pods=[pod("a")], events=[event("FailedMount", ("Pod", "a"))])
    assert set(kinds(mounting)) == {"failed_mount"}


def test_recent_rollout_is_suspect_and_stronger_when_newer() -> None:
    def rollout(age_s: float, revision: int = 3) -> Observed:
        return Observed(rollout=Rollout(revision=revision, at=AT - timedelta(seconds=age_s)))

    facts = assess(rollout(120), service="s", window=WINDOW).facts
    assert facts["k8s.rollout.recent"] is True
    assert facts["k8s.rollout.revision"] == 3
    assert facts["k8s.rollout.age_s"] == 120.0
    assert kinds(rollout(60))["recent_rollout"] > kinds(rollout(1500))["recent_rollout"]
    # Too old, after the fault, or a first revision: not a suspect.
    for observed in (rollout(7200), rollout(-60), rollout(60, revision=1)):
        assert assess(observed, service="s", window=WINDOW).facts["k8s.rollout.recent"] is False
        assert "recent_rollout" not in kinds(observed)


def test_current_revision_of_a_deployment() -> None:
    deployment = {
        "metadata": {"uid": "d1", "annotations": {"deployment.kubernetes.io/revision": "2"}}
    }

    def rs(name: str, revision: str, created: datetime, owner: str = "d1") -> Obj:
        return {
            "metadata": {
                "name": name,
                "creationTimestamp": ts(created),
                "annotations": {"deployment.kubernetes.io/revision": revision},
                "ownerReferences": [{"uid": owner, "controller": True}],
            }
        }

    sets = [
        rs("old", "1", AT - timedelta(days=3)),
        rs("new", "2", AT - timedelta(minutes=5)),
        rs("stranger", "9", AT, owner="other"),
    ]
    assert deployment_rollout(deployment, sets) == Rollout(2, AT - timedelta(minutes=5))
    assert deployment_rollout(deployment, sets[2:]) is None
    controller_revision = {"revision": 4, "metadata": {"creationTimestamp": ts(AT)}}
    assert revision_rollout(controller_revision) == Rollout(4, AT)


def test_not_ready_nodes_and_pressures() -> None:
    observed = Observed(
        pods=[pod("a", node="n1"), pod("b", node="n2")],
        nodes=[
            node("n1", Ready="False", MemoryPressure="True"),
            node("n2", Ready="True", DiskPressure="False", PIDPressure="True"),
        ],
    )
    gathered = assess(observed, service="shop", window=WINDOW)
    assert gathered.facts["k8s.nodes.not_ready"] == 1
    assert gathered.facts["k8s.nodes.conditions"] == [
        "n1:NotReady",
        "n1:MemoryPressure",
        "n2:PIDPressure",
    ]
    [finding] = gathered.findings
    assert finding.kind == "node_not_ready"
    assert finding.facts["nodes"] == ["n1"]
    assert finding.strength == 0.7  # half the pods run there
    unknown = Observed(pods=[pod("a", node="n1")], nodes=[node("n1", Ready="Unknown")])
    assert kinds(unknown) == {"node_not_ready": 0.9}


def request(target: TargetSpec, evidence: EvidenceSpec | None = None) -> EvidenceRequest:
    spec = ServiceSpec(name="shop", targets=[target], evidence=evidence or EvidenceSpec())
    return EvidenceRequest(
        fault=Fault(service="shop", type="health_check_failed"),
        at=AT,
        window_before_s=900,
        window_after_s=120,
        service=spec,
        catalog=ServiceCatalog(services=[spec]),
    )


def test_which_targets_are_workloads() -> None:
    deployment = workload_of(request(TargetSpec(name="web", kind="deployment", namespace="prod")))
    assert deployment is not None
    assert (deployment.kind, deployment.name, deployment.namespace) == ("deployment", "web", "prod")
    assert deployment.selector is None
    overridden = workload_of(
        request(
            TargetSpec(name="db", kind="statefulset"),
            EvidenceSpec(kubernetes=KubernetesEvidence(namespace="data", selector="app=db")),
        )
    )
    assert overridden is not None
    assert (overridden.namespace, overridden.selector) == ("data", "app=db")
    assert workload_of(request(TargetSpec(name="p", kind="process"))) is None
