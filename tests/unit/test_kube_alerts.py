"""The kube-prometheus alerts, as Alertmanager posts them, through the intake's parser and the
service catalog to the fault that is healed; then the shipped rules over the Kubernetes
provider's facts for each, to the plan of runbooks/solutions/kubernetes.yaml. Pure: no cluster,
no Temporal (tests/integration and the Kubernetes end-to-end tests run the real thing)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from selfheal.activities.actions import default_registry
from selfheal.activities.diagnosis import fault_facts
from selfheal.activities.evidence.kubernetes import Observed, Rollout, Window, assess
from selfheal.core.catalog import (
    ServiceCatalog,
    ServiceSpec,
    TargetSpec,
    load_services,
    resolve_fault,
)
from selfheal.detection.parsers import AlertSignal, PayloadError, parse_alertmanager
from selfheal.diagnosis.hypotheses import close_call, rank
from selfheal.diagnosis.rules import RuleSet, load_rules
from selfheal.domain import Fault, SolutionSpec, render_params
from selfheal.domain.fault import fingerprint_of
from selfheal.models.catalog import load_catalog

RUNBOOKS = Path(__file__).resolve().parents[2] / "runbooks"
AT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
WINDOW = Window(
    at=AT, since=AT - timedelta(minutes=15), until=AT + timedelta(minutes=2), rollout_s=1800
)
KSM = {  # what kube-state-metrics' scrape adds to the series it exports (honorLabels)
    "job": "kube-state-metrics",
    "service": "kube-prometheus-stack-kube-state-metrics",
    "endpoint": "http",
    "instance": "10.0.3.7:8080",
    "prometheus": "monitoring/kube-prometheus-stack-prometheus",
}
KSM_POD = {"pod": "kube-prometheus-stack-kube-state-metrics-6d8c9f7b5-q7x2m"}
KSM_CONTAINER = {"container": "kube-state-metrics"}
WEB_POD = "shop-web-7d9f8b6c5d-x2x4z"
FINGERPRINT = "3f0b1c2d4e5a6978"


def catalog() -> ServiceCatalog:
    return ServiceCatalog(
        services=[
            ServiceSpec(
                name="shop-web",
                targets=[
                    TargetSpec(
                        name="shop-web",
                        kind="deployment",
                        namespace="shop",
                        labels={"scale_to": "6"},
                    )
                ],
                max_pods_per_step=3,
            ),
            ServiceSpec(
                name="db",
                targets=[TargetSpec(name="db", kind="statefulset", namespace="data")],
            ),
            ServiceSpec(
                name="nodes",
                targets=[TargetSpec(name=n, kind="node") for n in ("worker-1", "worker-2")],
                max_pods_per_step=10,
            ),
        ]
    )


def alert(name: str, *, state: str = "firing", **labels: str) -> dict[str, Any]:
    return {
        "status": state,
        "labels": {"alertname": name, "severity": "warning", **labels},
        "annotations": {
            "description": f"{name} as kube-prometheus describes it",
            "runbook_url": f"https://runbooks.prometheus-operator.dev/runbooks/kubernetes/{name}",
            "summary": f"{name} summary",
        },
        "startsAt": "2026-11-30T12:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=...",
        "fingerprint": FINGERPRINT,
    }


def webhook(*alerts: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "version": "4",
            "groupKey": '{}:{namespace="shop"}',
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "selfheal",
            "groupLabels": {"namespace": "shop"},
            "commonLabels": {},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093",
            "alerts": list(alerts),
        }
    ).encode()


# The alerts as the kube-prometheus rules make them: what each expression keeps of its series.
ALERTS: dict[str, dict[str, Any]] = {
    # max_over_time(kube_pod_container_status_waiting_reason{reason="CrashLoopBackOff"}[5m])
    "KubePodCrashLooping": alert(
        "KubePodCrashLooping",
        **KSM,
        namespace="shop",
        pod=WEB_POD,
        container="web",
        reason="CrashLoopBackOff",
        uid="c0ffee00-0000-4000-8000-000000000001",
    ),
    # sum by (namespace, pod, cluster) (...kube_pod_status_phase...): nothing else survives
    "KubePodNotReady": alert("KubePodNotReady", namespace="shop", pod=WEB_POD),
    # kube_deployment_spec_replicas > kube_deployment_status_replicas_available ...
    "KubeDeploymentReplicasMismatch": alert(
        "KubeDeploymentReplicasMismatch",
        **KSM,
        **KSM_POD,
        **KSM_CONTAINER,
        namespace="shop",
        deployment="shop-web",
    ),
    # kube_deployment_status_condition{condition="Progressing", status="false"} != 0
    "KubeDeploymentRolloutStuck": alert(
        "KubeDeploymentRolloutStuck",
        **KSM,
        **KSM_POD,
        **KSM_CONTAINER,
        namespace="shop",
        deployment="shop-web",
        condition="Progressing",
        status="false",
    ),
    # sum by (namespace, pod, container, reason, cluster) (kube_pod_container_status_waiting_reason)
    "KubeContainerWaiting": alert(
        "KubeContainerWaiting",
        namespace="shop",
        pod=WEB_POD,
        container="web",
        reason="ContainerCreating",
    ),
    # kube_node_status_condition{condition="Ready", status="true"} == 0: the exporter's pod and
    # namespace come along
    "KubeNodeNotReady": alert(
        "KubeNodeNotReady",
        **KSM,
        **KSM_POD,
        **KSM_CONTAINER,
        namespace="monitoring",
        node="worker-1",
        condition="Ready",
        status="true",
    ),
    # kube_pod_container_status_last_terminated_reason{reason="OOMKilled"} == 1 (a site rule)
    "KubePodOOMKilled": alert(
        "KubePodOOMKilled",
        **KSM,
        namespace="shop",
        pod=WEB_POD,
        container="web",
        reason="OOMKilled",
        uid="c0ffee00-0000-4000-8000-000000000001",
    ),
}


def signal_of(payload: dict[str, Any]) -> AlertSignal:
    [signal] = parse_alertmanager(webhook(payload), catalog())
    return signal


def admitted(name: str) -> Fault:
    """The fault the door heals for alert ``name``: parsed, then resolved like ``admit``."""
    fault = signal_of(ALERTS[name]).fault
    assert fault is not None
    return resolve_fault(fault, catalog())


# ----------------------------------------------------------------------- alert → workload


@pytest.mark.parametrize(
    ("name", "service", "target", "kept"),
    [
        ("KubePodCrashLooping", "shop-web", "shop-web", {"pod": WEB_POD, "container": "web"}),
        ("KubePodNotReady", "shop-web", "shop-web", {"pod": WEB_POD}),
        ("KubeDeploymentReplicasMismatch", "shop-web", "shop-web", {}),
        ("KubeDeploymentRolloutStuck", "shop-web", "shop-web", {}),
        ("KubeContainerWaiting", "shop-web", "shop-web", {"pod": WEB_POD, "container": "web"}),
        ("KubeNodeNotReady", "nodes", "worker-1", {"node": "worker-1"}),
        ("KubePodOOMKilled", "shop-web", "shop-web", {"pod": WEB_POD, "container": "web"}),
    ],
)
def test_each_alert_resolves_to_its_catalog_target(
    name: str, service: str, target: str, kept: dict[str, str]
) -> None:
    fault = admitted(name)
    assert (fault.service, fault.target, fault.type) == (service, target, name)
    assert fault.source == "alertmanager"
    # the upstream fingerprint, scoped to the catalog's target: one healing per target
    assert fault.fingerprint == f"{FINGERPRINT}-{target}"
    objects = {k: v for k, v in fault.labels.items() if k in ("pod", "container", "node")}
    assert objects == kept  # the exporter's pod and container never reach a plan
    if service == "shop-web":
        assert fault.labels["namespace"] == "shop"
        assert fault.labels["scale_to"] == "6"
    else:
        assert "namespace" not in fault.labels  # a node is cluster-scoped


def test_a_statefulsets_pod_resolves_to_the_statefulset() -> None:
    crash = {**ALERTS["KubePodCrashLooping"]}
    crash["labels"] = {**crash["labels"], "namespace": "data", "pod": "db-1", "container": "pg"}
    fault = signal_of(crash).fault
    assert fault is not None
    resolved = resolve_fault(fault, catalog())
    assert (resolved.service, resolved.target, resolved.labels["pod"]) == ("db", "db", "db-1")


def test_the_resolved_alert_names_the_same_healing() -> None:
    firing = admitted("KubePodCrashLooping")
    resolved = signal_of({**ALERTS["KubePodCrashLooping"], "status": "resolved"})
    assert not resolved.firing and resolved.fault is not None
    assert resolve_fault(resolved.fault, catalog()).workflow_id == firing.workflow_id


@pytest.mark.parametrize(
    ("labels", "reason"),
    [
        (
            {"namespace": "staging", "pod": WEB_POD},
            "no target of the service catalog matches pod "
            "'shop-web-7d9f8b6c5d-x2x4z' in namespace 'staging'",
        ),
        (
            {"namespace": "shop", "deployment": "cart"},
            "no target of the service catalog matches deployment 'cart' in namespace 'shop'",
        ),
        ({"node": "worker-9"}, "no target of the service catalog matches node 'worker-9'"),
        (
            {**KSM, "namespace": "kube-system", "pod": "coredns-5d78c9869d-abcde"},
            "unknown service 'kube-prometheus-stack-kube-state-metrics', and no target of the "
            "service catalog matches pod 'coredns-5d78c9869d-abcde' in namespace 'kube-system'",
        ),
    ],
)
def test_an_alert_naming_no_catalog_target_is_refused(labels: dict[str, str], reason: str) -> None:
    signal = signal_of(alert("KubePodCrashLooping", **labels))
    assert signal.fault is None and signal.firing
    assert signal.refused.startswith(reason), signal.refused
    assert signal.fingerprint == FINGERPRINT


def test_one_refused_alert_leaves_the_others_of_its_webhook() -> None:
    stranger = alert("KubePodNotReady", namespace="shop", pod="cart-6b7c8d9f5b-bcdfg")
    signals = parse_alertmanager(webhook(ALERTS["KubePodNotReady"], stranger), catalog())
    assert [s.fault is not None for s in signals] == [True, False]


def test_a_service_label_of_the_catalog_confines_the_match_to_it() -> None:
    """An application alert (scraped through a ServiceMonitor) names its service and the pod:
    the pod resolves to that service's workload; a pod that is not its falls back to the
    service's own check at the door, as before."""
    ours = signal_of(alert("HighErrorRate", service="shop-web", namespace="shop", pod=WEB_POD))
    assert ours.fault is not None
    assert (ours.fault.service, ours.fault.target) == ("shop-web", "shop-web")
    foreign = signal_of(alert("HighErrorRate", service="shop-web", namespace="data", pod="db-0"))
    assert foreign.fault is not None
    assert (foreign.fault.service, foreign.fault.target) == ("shop-web", "db-0")


def test_without_a_catalog_the_parser_reads_labels_as_before() -> None:
    [signal] = parse_alertmanager(webhook(ALERTS["KubeDeploymentReplicasMismatch"]))
    assert signal.fault is not None
    fault = signal.fault
    assert (fault.service, fault.target) == (KSM["service"], "shop-web")
    with pytest.raises(PayloadError, match=r"labels\.service"):
        parse_alertmanager(webhook(ALERTS["KubePodNotReady"]))


def test_a_target_label_is_not_second_guessed() -> None:
    explicit = alert("X", target="worker-2", namespace="shop", pod=WEB_POD)
    with pytest.raises(PayloadError, match=r"labels\.service"):
        parse_alertmanager(webhook(explicit), catalog())


# ------------------------------------------------------------------ alert → diagnosis → plan


def ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def container(
    *,
    waiting: str | None = None,
    restarts: int = 0,
    last: str | None = None,
    exit_code: int = 1,
) -> dict[str, Any]:
    state: dict[str, Any] = {"waiting": {"reason": waiting}} if waiting else {"running": {}}
    terminated = {
        "reason": last,
        "exitCode": exit_code,
        "finishedAt": ts(AT - timedelta(minutes=1)),
    }
    return {
        "name": "web",
        "ready": waiting is None,
        "restartCount": restarts,
        "state": state,
        "lastState": {"terminated": terminated} if last else {},
    }


def pod(name: str, *, ready: bool = True, node: str = "worker-2", **state: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"nodeName": node},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [container(**state)],
        },
    }


def healthy(count: int) -> list[dict[str, Any]]:
    return [pod(f"shop-web-7d9f8b6c5d-{'bcdfg'[i] * 5}") for i in range(count)]


def deployment(
    desired: int = 3, available: int = 3, *, stuck: bool = False, revision: int = 2
) -> dict[str, Any]:
    progressing = (
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
        if stuck
        else {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}
    )
    return {
        "kind": "Deployment",
        "metadata": {"annotations": {"deployment.kubernetes.io/revision": str(revision)}},
        "spec": {"replicas": desired},
        "status": {
            "readyReplicas": available,
            "availableReplicas": available,
            "updatedReplicas": desired,
            "conditions": [progressing],
        },
    }


def event(reason: str, kind: str, name: str, count: int = 1) -> dict[str, Any]:
    return {
        "involvedObject": {"kind": kind, "name": name},
        "reason": reason,
        "count": count,
        "lastTimestamp": ts(AT - timedelta(minutes=2)),
    }


def node(ready: str) -> dict[str, Any]:
    since = ts(AT - timedelta(minutes=10))
    condition = {"type": "Ready", "status": ready, "lastTransitionTime": since}
    return {"metadata": {"name": "worker-1"}, "spec": {}, "status": {"conditions": [condition]}}


RECENT = Rollout(revision=2, at=AT - timedelta(minutes=4))
LONG_AGO = Rollout(revision=2, at=AT - timedelta(days=3))


@dataclass
class Case:
    alert: str
    observed: Observed
    root_cause: str
    solution: str | None
    extra: dict[str, Any] = field(default_factory=dict)
    """facts of the other providers (metrics)"""


def workload(*pods: dict[str, Any], rollout: Rollout, **fields: Any) -> Observed:
    return Observed(
        kind="deployment",
        pods=list(pods),
        owners=[("Deployment", "shop-web")],
        rollout=rollout,
        **{"workload": deployment(), **fields},
    )


CRASHING = pod(WEB_POD, ready=False, waiting="CrashLoopBackOff", restarts=6, last="Error")
BACKOFF = event("BackOff", "Pod", WEB_POD, count=9)

CASES: dict[str, Case] = {
    "crash loop after a rollout": Case(
        "KubePodCrashLooping",
        workload(CRASHING, *healthy(2), rollout=RECENT, events=[BACKOFF], pod=WEB_POD),
        "bad_rollout",
        "rollback-bad-rollout",
    ),
    "crash loop, nothing changed": Case(
        "KubePodCrashLooping",
        workload(CRASHING, *healthy(2), rollout=LONG_AGO, events=[BACKOFF], pod=WEB_POD),
        "pod_crash_looping",
        None,  # no plan: a human looks
    ),
    "not ready after a rollout": Case(
        "KubePodNotReady",
        workload(
            pod(WEB_POD, ready=False),
            *healthy(2),
            rollout=RECENT,
            events=[event("Unhealthy", "Pod", WEB_POD, 30)],
            pod=WEB_POD,
            workload=deployment(3, 2),
        ),
        "bad_rollout",
        "rollback-bad-rollout",
    ),
    "a pod stuck not ready": Case(
        "KubePodNotReady",
        workload(
            pod(WEB_POD, ready=False),
            *healthy(2),
            rollout=LONG_AGO,
            pod=WEB_POD,
            workload=deployment(3, 2),
        ),
        "pod_stuck",
        "delete-stuck-pod",
    ),
    "a container stuck creating": Case(
        "KubeContainerWaiting",
        workload(
            pod(WEB_POD, ready=False, waiting="ContainerCreating"),
            *healthy(2),
            rollout=LONG_AGO,
            pod=WEB_POD,
            workload=deployment(3, 2),
        ),
        "pod_stuck",
        "delete-stuck-pod",
    ),
    "an image that cannot be pulled": Case(
        "KubeContainerWaiting",
        workload(
            pod(WEB_POD, ready=False, waiting="ImagePullBackOff"),
            *healthy(2),
            rollout=LONG_AGO,
            pod=WEB_POD,
        ),
        "container_cannot_start",
        None,
    ),
    "a rollout past its deadline": Case(
        "KubeDeploymentRolloutStuck",
        workload(
            pod(WEB_POD, ready=False),
            *healthy(3),
            rollout=Rollout(revision=5, at=AT - timedelta(minutes=45)),
            workload=deployment(3, 3, stuck=True, revision=5),
        ),
        "bad_rollout",
        "rollback-bad-rollout",
    ),
    "replicas short under load": Case(
        "KubeDeploymentReplicasMismatch",
        workload(
            pod(WEB_POD, ready=False),
            *healthy(2),
            rollout=LONG_AGO,
            events=[event("Unhealthy", "Pod", WEB_POD, 12)],
            workload=deployment(3, 2),
            scale_to=6,
        ),
        "workload_saturated",
        "scale-out-saturated-workload",
        {"metrics.saturation.before": 0.55, "metrics.saturation.after": 0.97},
    ),
    "replicas short, no room left to scale": Case(
        "KubeDeploymentReplicasMismatch",
        workload(
            pod(WEB_POD, ready=False),
            *healthy(5),
            rollout=LONG_AGO,
            workload=deployment(6, 5),
            scale_to=6,
        ),
        "saturation",
        None,
        {"metrics.saturation.after": 0.97},
    ),
    "replicas short, nowhere to schedule": Case(
        "KubeDeploymentReplicasMismatch",
        workload(
            pod(WEB_POD, ready=False, waiting="ContainerCreating"),
            *healthy(2),
            rollout=LONG_AGO,
            events=[event("FailedScheduling", "Pod", WEB_POD, 4)],
            workload=deployment(3, 2),
            scale_to=6,
        ),
        "insufficient_capacity",
        None,
    ),
    "a node not ready": Case(
        "KubeNodeNotReady",
        Observed(kind="node", nodes=[node("Unknown")], owners=[("Node", "worker-1")]),
        "node_not_ready",
        "cordon-and-drain-node",
    ),
    "an OOM kill": Case(
        "KubePodOOMKilled",
        workload(
            pod(WEB_POD, restarts=3, last="OOMKilled", exit_code=137),
            *healthy(2),
            rollout=LONG_AGO,
            pod=WEB_POD,
        ),
        "oom_killed",
        "raise-memory-limit",
    ),
    "OOM kills in a crash loop after a rollout": Case(
        "KubePodCrashLooping",
        workload(
            pod(WEB_POD, ready=False, waiting="CrashLoopBackOff", restarts=5, last="OOMKilled"),
            *healthy(2),
            rollout=RECENT,
            events=[BACKOFF],
            pod=WEB_POD,
        ),
        "oom_killed",
        "raise-memory-limit",
    ),
}


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return load_rules(RUNBOOKS / "rules.yaml")


@pytest.fixture(scope="module")
def solutions() -> dict[str, SolutionSpec]:
    return {s.name: s for s in load_catalog(RUNBOOKS / "solutions" / "kubernetes.yaml")}


def test_every_shipped_alert_has_cases() -> None:
    assert {case.alert for case in CASES.values()} == set(ALERTS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_evidence_of_each_alert_points_to_its_plan(
    name: str, rules: RuleSet, solutions: dict[str, SolutionSpec]
) -> None:
    case = CASES[name]
    fault = admitted(case.alert)
    gathered = assess(case.observed, service=fault.service, window=WINDOW)
    facts = {**fault_facts(fault), **gathered.facts, **case.extra}
    ranked = rank(rules.matches(facts), gathered.findings)
    assert ranked, name
    top = ranked[0]
    assert (top.root_cause, top.component) == (case.root_cause, fault.service), ranked
    assert not close_call(ranked, margin=0.1), ranked
    if case.solution is not None:
        assert top.confidence >= 0.7  # confident enough to act without a human
    planned = [s.name for s in solutions.values() if s.pattern == case.root_cause]
    assert planned == ([case.solution] if case.solution else [])


def test_the_alert_alone_is_enough_to_diagnose_most(rules: RuleSet) -> None:
    """Without a cluster to read (no Kubernetes evidence), the alert's own name and labels
    still diagnose: the plans then rest on them alone."""
    expected = {
        "KubePodCrashLooping": "pod_crash_looping",
        "KubePodNotReady": "pod_stuck",
        "KubeContainerWaiting": "pod_stuck",
        "KubeNodeNotReady": "node_not_ready",
        "KubePodOOMKilled": "oom_killed",
    }
    for name, root_cause in expected.items():
        assert rules.diagnose(fault_facts(admitted(name))).root_cause == root_cause, name


def test_no_scale_out_beyond_or_below_the_catalogs_count(rules: RuleSet) -> None:
    fault = admitted("KubeDeploymentReplicasMismatch")
    saturated = {**fault_facts(fault), "metrics.saturation.after": 0.97, "k8s.replicas.missing": 1}
    for room in (0, -2):
        facts = saturated | {"k8s.replicas.room": room}
        assert "workload_saturated" not in {m.rule.root_cause for m in rules.matches(facts)}
    assert rules.diagnose(saturated | {"k8s.replicas.room": 3}).root_cause == "workload_saturated"


# --------------------------------------------------------------------- the plans themselves


def test_every_kubernetes_solution_validates_what_it_claims(
    solutions: dict[str, SolutionSpec],
) -> None:
    kinds = {name: [c.kind for c in spec.validation] for name, spec in solutions.items()}
    assert kinds == {
        "rollback-bad-rollout": ["rollout"],
        "raise-memory-limit": ["rollout"],
        "delete-stuck-pod": ["rollout"],
        "scale-out-saturated-workload": ["rollout"],
        "cordon-and-drain-node": ["alert_resolved"],
    }
    steps = {name: [s.action for s in spec.steps] for name, spec in solutions.items()}
    assert steps["cordon-and-drain-node"] == ["kubernetes.cordon", "kubernetes.drain"]


@pytest.mark.parametrize(
    ("solution", "alert", "expected"),
    [
        ("rollback-bad-rollout", "KubePodCrashLooping", {"name": "shop-web", "namespace": "shop"}),
        (
            "raise-memory-limit",
            "KubePodOOMKilled",
            {"name": "shop-web", "namespace": "shop", "container": "web", "memory_factor": 1.5},
        ),
        ("delete-stuck-pod", "KubePodNotReady", {"name": WEB_POD, "namespace": "shop"}),
        ("scale-out-saturated-workload", "KubeDeploymentReplicasMismatch", {"replicas": 6}),
        ("cordon-and-drain-node", "KubeNodeNotReady", {"node": "worker-1"}),
    ],
)
def test_each_plan_acts_on_the_catalogs_objects(
    solution: str, alert: str, expected: dict[str, Any], solutions: dict[str, SolutionSpec]
) -> None:
    """Rendered for the alert's resolved fault, every step's params are what the catalog names
    and parse against the action's params model (once the action is registered)."""
    registry = default_registry()
    fault = admitted(alert)
    for step in solutions[solution].steps:
        params = render_params(step.params, fault)
        if step.action in registry:
            parsed = registry.get(step.action).parse(params).model_dump()
            assert {k: parsed[k] for k in expected if k in parsed} == {
                k: v for k, v in expected.items() if k in parsed
            }
        else:  # the action is being written: the rendered text at least
            assert {k: str(v) for k, v in expected.items() if k in params} == {
                k: str(params[k]) for k in expected if k in params
            }


@pytest.mark.parametrize(
    ("solution", "alert"),
    [
        # the exporter's pod and container were dropped: nothing to delete or resize
        ("delete-stuck-pod", "KubeDeploymentReplicasMismatch"),
        ("raise-memory-limit", "KubeDeploymentRolloutStuck"),
        # a workload has no node label: a NotReady node under its pods is not cordoned
        ("cordon-and-drain-node", "KubePodCrashLooping"),
    ],
)
def test_a_plan_cannot_reach_an_object_its_target_does_not_own(
    solution: str, alert: str, solutions: dict[str, SolutionSpec]
) -> None:
    fault = admitted(alert)
    with pytest.raises(KeyError):
        for step in solutions[solution].steps:
            render_params(step.params, fault)


def test_the_shipped_runbooks_load_and_fit_the_registry() -> None:
    registry = default_registry()
    missing = {
        step.action
        for spec in load_catalog(RUNBOOKS / "solutions" / "kubernetes.yaml")
        for step in spec.steps
        if step.action not in registry
    }
    if missing:  # kubernetes.set_resources and kubernetes.drain land with their own change
        pytest.skip(f"not registered yet: {', '.join(sorted(missing))}")
    names = {s.name for s in load_catalog(RUNBOOKS, registry=registry)}
    assert {
        "rollback-bad-rollout",
        "raise-memory-limit",
        "delete-stuck-pod",
        "scale-out-saturated-workload",
        "cordon-and-drain-node",
    } <= names


def test_the_commented_kubernetes_example_of_services_yaml_loads(tmp_path: Path) -> None:
    text = (RUNBOOKS / "services.yaml").read_text()
    example = text[text.index("#  - name: shop-web") :]
    uncommented = "\n".join(line.removeprefix("#") for line in example.splitlines())
    path = tmp_path / "services.yaml"
    path.write_text("services:\n" + uncommented + "\n")
    loaded = load_services(path)
    shop = loaded.get("shop-web")
    assert shop is not None and shop.evidence.metrics.queries["saturation"].startswith("max(")
    labels = {"alertname": "KubePodNotReady", "namespace": "shop", "pod": WEB_POD}
    payload = {**ALERTS["KubePodNotReady"], "labels": labels}
    [signal] = parse_alertmanager(webhook(payload), loaded)
    assert signal.fault is not None
    assert (signal.fault.service, signal.fault.target) == ("shop-web", "shop-web")
    assert yaml.safe_load(path.read_text())["services"][1]["max_pods_per_step"] == 10


def test_a_derived_fingerprint_follows_the_catalog_target() -> None:
    """Without Alertmanager's fingerprint, the healing is named by service, alert and target."""
    payload = {**ALERTS["KubePodNotReady"], "fingerprint": ""}
    fault = signal_of(payload).fault
    assert fault is not None
    expected = fingerprint_of("shop-web", "KubePodNotReady", "shop-web")
    assert resolve_fault(fault, catalog()).fingerprint == expected
