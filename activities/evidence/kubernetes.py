"""The Kubernetes provider: what the cluster says about the faulted workload.

For a service whose target is a Deployment, StatefulSet or Pod (``services.yaml``), it reads the
workload, its pods (the workload's selector, or ``evidence.kubernetes.selector``), the events of
those objects within the window, the rollout history, and the conditions of the nodes the pods
run on; for a Node target, the node and its events. ``assess`` turns what was read into
``k8s.*`` facts and findings (pure, tested without a cluster). Any other target kind gets no
Kubernetes evidence (nothing to look at, not a failure).

What the alert named is looked at too: the pod of the fault's ``pod`` label (kept by the
catalog only when it is one of the workload's) gives ``k8s.pod.*``, and the target's catalog
label ``scale_to`` gives the room a scale-out has (``k8s.replicas.room``).

Bounded: every list asks for at most ``MAX_*`` objects (``limit=``), every call runs in a thread
with the client's request timeout, and the fan-out's own timeout bounds the whole. Events are
listed per namespace and matched to the workload, its ReplicaSets and its pods here, because the
API cannot select "events of these objects" in one call. Nodes are cluster-scoped: a worker that
may not read them still gets everything else (logged), since node access is often withheld.

Reused from the actions: the API client (``kubernetes_client``), the JSON-dict API (``KubeApi``)
and its one error translation (``TargetError`` naming the call).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from kubernetes.client import ApiClient

from selfheal.activities.actions.kubernetes import (
    KubeApi,
    _apps,
    _controller,
    _core,
    _is_ready,
    _revision,
    _selector_string,
    kubernetes_client,
)
from selfheal.activities.evidence.base import EvidenceRequest, Gathered
from selfheal.core.catalog import SCALE_TO_LABEL
from selfheal.core.settings import EvidenceSettings, KubernetesSettings
from selfheal.diagnosis.rules import Facts
from selfheal.domain import Finding, TargetError

log = structlog.get_logger(__name__)

Obj = dict[str, Any]

WORKLOAD_KINDS = ("deployment", "statefulset", "pod")
TARGET_KINDS = (*WORKLOAD_KINDS, "node")
MAX_PODS = 100
MAX_EVENTS = 500
MAX_REPLICA_SETS = 100
MAX_NODES = 20
SOURCE = "kubernetes"
# Conditions that are bad when True (Ready is bad when it is not True).
NODE_PRESSURES = ("MemoryPressure", "DiskPressure", "PIDPressure", "NetworkUnavailable")
MOUNT_REASONS = ("FailedMount", "FailedAttachVolume")
# A Deployment whose rollout made no progress within its progressDeadlineSeconds.
PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
# Kubelets record a node's events in this namespace.
NODE_EVENTS_NAMESPACE = "default"
_LONG_AGO = datetime.min.replace(tzinfo=UTC)


# --- what was read, and the pure assessment --------------------------------------------------


@dataclass(frozen=True)
class Rollout:
    revision: int
    at: datetime
    """when this revision came to be (its ReplicaSet or ControllerRevision was created)"""


@dataclass(frozen=True)
class Window:
    at: datetime
    """the fault's time"""
    since: datetime
    until: datetime
    rollout_s: float
    """a rollout this recent before ``at`` is suspect"""


@dataclass
class Observed:
    pods: list[Obj] = field(default_factory=list)
    events: list[Obj] = field(default_factory=list)
    """events of the namespace; ``assess`` keeps those of the pods and of ``owners``"""
    owners: list[tuple[str, str]] = field(default_factory=list)
    """(kind, name) of the workload and its ReplicaSets, whose events count too"""
    nodes: list[Obj] = field(default_factory=list)
    rollout: Rollout | None = None
    kind: str = ""
    """the target's kind (deployment, statefulset, pod, node); empty: unknown"""
    workload: Obj | None = None
    """the Deployment or StatefulSet itself (its replicas and conditions)"""
    pod: str | None = None
    """the pod the fault names (its ``pod`` label), looked at among ``pods``"""
    scale_to: int | None = None
    """the catalog's ``scale_to`` label of the target"""


@dataclass(frozen=True)
class Termination:
    pod: str
    container: str
    reason: str
    exit_code: int | None
    finished_at: datetime | None


def assess(observed: Observed, *, service: str, window: Window) -> Gathered:
    """The ``k8s.*`` facts and findings for ``service`` from what was read."""
    gathered = Gathered()
    facts = gathered.facts
    if observed.kind:
        facts["k8s.kind"] = observed.kind
    if observed.kind == "node":
        facts.update(node_target_facts(observed.nodes, window))
    else:
        facts.update(pod_facts(observed.pods))
        facts.update(waiting_facts(observed.pods))
    if observed.workload is not None:
        facts.update(replica_facts(observed.workload, observed.scale_to))
        facts.update(progress_facts(observed.workload))
    if observed.pod is not None:
        facts.update(named_pod_facts(observed.pods, observed.pod))
    terminations = last_terminations(observed.pods)
    if terminations:
        last = terminations[0]
        facts["k8s.last_termination.reason"] = last.reason
        if last.exit_code is not None:
            facts["k8s.last_termination.exit_code"] = last.exit_code
    events = event_counts(_events_of(observed), window)
    for reason, count in sorted(events.items()):
        facts[f"k8s.events.{reason}"] = count
    facts.update(rollout_facts(observed.rollout, window))
    facts.update(node_facts(observed.nodes))

    def found(kind: str, strength: float, detail: str, **extra: Any) -> None:
        gathered.findings.append(
            Finding(
                source=SOURCE,
                kind=kind,
                component=service,
                strength=round(min(max(strength, 0.0), 1.0), 4),
                detail=detail,
                facts=extra,
            )
        )

    oom = next(
        (
            t
            for t in terminations
            if t.reason == "OOMKilled" and (t.finished_at is None or t.finished_at >= window.since)
        ),
        None,
    )
    if oom is not None:
        found(
            "oom_killed",
            0.9,
            f"container {oom.container} of pod {oom.pod} was OOMKilled"
            + (f" (exit code {oom.exit_code})" if oom.exit_code is not None else ""),
            pod=oom.pod,
            container=oom.container,
        )
    crash_looping = waiting_in(observed.pods, "CrashLoopBackOff")
    restarts = int(facts.get("k8s.restarts", 0))
    if restarts > 0 and (crash_looping or events.get("BackOff", 0) > 0):
        where = (
            f"; waiting in CrashLoopBackOff: {', '.join(crash_looping)}" if crash_looping else ""
        )
        found(
            "crash_loop",
            0.8,
            f"{restarts} container restarts, {events.get('BackOff', 0)} BackOff events{where}",
            restarts=restarts,
        )
    if facts.get("k8s.rollout.recent"):
        age = float(facts["k8s.rollout.age_s"])
        found(
            "recent_rollout",
            0.9 - 0.4 * (age / window.rollout_s),
            f"revision {facts['k8s.rollout.revision']} rolled out {age:.0f}s before the fault",
            revision=facts["k8s.rollout.revision"],
            age_s=age,
        )
    unschedulable = [p for p in observed.pods if _unschedulable(p)]
    if events.get("FailedScheduling", 0) > 0 or unschedulable:
        found(
            "failed_scheduling",
            0.7,
            f"{events.get('FailedScheduling', 0)} FailedScheduling events, "
            f"{len(unschedulable)} unschedulable pods",
        )
    mounts = sum(events.get(reason, 0) for reason in MOUNT_REASONS)
    if mounts > 0:
        found("failed_mount", 0.7, f"{mounts} FailedMount/FailedAttachVolume events")
    not_ready = [_name(n) for n in observed.nodes if node_not_ready(n)]
    if not_ready:
        on_them = sum(1 for p in observed.pods if p.get("spec", {}).get("nodeName") in not_ready)
        share = on_them / len(observed.pods) if observed.pods else 1.0
        found(
            "node_not_ready",
            0.5 + 0.4 * share,
            f"node(s) {', '.join(not_ready)} not ready, running {on_them} of "
            f"{len(observed.pods)} pods",
            nodes=not_ready,
        )
    return gathered


def pod_facts(pods: list[Obj]) -> Facts:
    ready = sum(1 for p in pods if _is_ready(p))
    restarts = sum(int(s.get("restartCount") or 0) for p in pods for s in _container_statuses(p))
    return {
        "k8s.pods": len(pods),
        "k8s.ready": ready,
        "k8s.not_ready": len(pods) - ready,
        "k8s.restarts": restarts,
    }


def waiting_facts(pods: list[Obj]) -> Facts:
    """``k8s.waiting.<Reason>``: containers waiting with that reason (``CrashLoopBackOff``,
    ``ImagePullBackOff``, ``CreateContainerConfigError``, ``ContainerCreating``...), and
    ``k8s.containers.waiting`` their total; absent when no container waits."""
    reasons: Counter[str] = Counter(
        str(waiting.get("reason") or "Unknown")
        for pod in pods
        for status in _container_statuses(pod)
        if (waiting := (status.get("state") or {}).get("waiting")) is not None
    )
    if not reasons:
        return {}
    facts: Facts = {f"k8s.waiting.{reason}": count for reason, count in sorted(reasons.items())}
    facts["k8s.containers.waiting"] = sum(reasons.values())
    return facts


def replica_facts(workload: Obj, scale_to: int | None = None) -> Facts:
    """A Deployment's or StatefulSet's replicas: ``desired`` (spec, 1 when unset), ``ready``,
    ``available`` (ready for a StatefulSet that does not report it), ``updated``, ``missing``
    (desired not available, at least 0) and, with the catalog's ``scale_to``, ``room`` (how
    many replicas a scale-out to it adds; 0 or less: none)."""
    spec = workload.get("spec") or {}
    status = workload.get("status") or {}
    desired = int(spec["replicas"]) if isinstance(spec.get("replicas"), int) else 1
    ready = int(status.get("readyReplicas") or 0)
    available = status.get("availableReplicas")
    available = int(available) if isinstance(available, int) else ready
    facts: Facts = {
        "k8s.replicas.desired": desired,
        "k8s.replicas.ready": ready,
        "k8s.replicas.available": available,
        "k8s.replicas.updated": int(status.get("updatedReplicas") or 0),
        "k8s.replicas.missing": max(desired - available, 0),
    }
    if scale_to is not None:
        facts["k8s.replicas.scale_to"] = scale_to
        facts["k8s.replicas.room"] = scale_to - desired
    return facts


def progress_facts(workload: Obj) -> Facts:
    """``k8s.rollout.stuck``: a Deployment's Progressing condition is False for
    ``ProgressDeadlineExceeded`` (what ``KubeDeploymentRolloutStuck`` watches); absent when the
    workload reports no Progressing condition (a StatefulSet)."""
    progressing = next((c for c in _conditions(workload) if c.get("type") == "Progressing"), None)
    if progressing is None:
        return {}
    stuck = (
        progressing.get("status") == "False"
        and progressing.get("reason") == PROGRESS_DEADLINE_EXCEEDED
    )
    return {"k8s.rollout.stuck": stuck}


def named_pod_facts(pods: list[Obj], name: str) -> Facts:
    """The pod the fault names: ``k8s.pod.found`` (among the workload's pods), and when found
    ``.phase``, ``.ready``, ``.restarts`` and ``.waiting`` (the reason its first waiting
    container gives; absent when none waits)."""
    pod = next((p for p in pods if _name(p) == name), None)
    if pod is None:
        return {"k8s.pod.found": False}
    statuses = _container_statuses(pod)
    facts: Facts = {
        "k8s.pod.found": True,
        "k8s.pod.phase": str((pod.get("status") or {}).get("phase") or "Unknown"),
        "k8s.pod.ready": _is_ready(pod),
        "k8s.pod.restarts": sum(int(s.get("restartCount") or 0) for s in statuses),
    }
    waiting = next(
        (w for s in statuses if (w := (s.get("state") or {}).get("waiting")) is not None), None
    )
    if waiting is not None:
        facts["k8s.pod.waiting"] = str(waiting.get("reason") or "Unknown")
    return facts


def node_target_facts(nodes: list[Obj], window: Window) -> Facts:
    """A Node target: ``k8s.node.ready`` (its Ready condition is True; absent when it reports
    none), ``k8s.node.unschedulable`` (cordoned), ``k8s.node.not_ready_s`` (how long Ready has
    not been True at the fault's time, from the condition's last transition)."""
    if not nodes:
        return {}
    node = nodes[0]
    facts: Facts = {"k8s.node.unschedulable": bool((node.get("spec") or {}).get("unschedulable"))}
    ready = next((c for c in _conditions(node) if c.get("type") == "Ready"), None)
    if ready is None:
        return facts
    facts["k8s.node.ready"] = ready.get("status") == "True"
    since = parse_time(ready.get("lastTransitionTime"))
    if not facts["k8s.node.ready"] and since is not None:
        facts["k8s.node.not_ready_s"] = round(max((window.at - since).total_seconds(), 0.0), 1)
    return facts


def last_terminations(pods: list[Obj]) -> list[Termination]:
    """Every container's latest termination (current or last state), newest first."""
    found: list[Termination] = []
    for pod in pods:
        for status in _container_statuses(pod):
            terminated = (status.get("state") or {}).get("terminated") or (
                status.get("lastState") or {}
            ).get("terminated")
            if not terminated or not terminated.get("reason"):
                continue
            code = terminated.get("exitCode")
            found.append(
                Termination(
                    pod=_name(pod),
                    container=str(status.get("name", "")),
                    reason=str(terminated["reason"]),
                    exit_code=int(code) if isinstance(code, int) else None,
                    finished_at=parse_time(terminated.get("finishedAt")),
                )
            )
    found.sort(key=lambda t: t.finished_at or _LONG_AGO, reverse=True)
    return found


def waiting_in(pods: list[Obj], reason: str) -> list[str]:
    """``pod/container`` of every container waiting with ``reason``."""
    return [
        f"{_name(pod)}/{status.get('name', '')}"
        for pod in pods
        for status in _container_statuses(pod)
        if ((status.get("state") or {}).get("waiting") or {}).get("reason") == reason
    ]


def event_counts(events: Iterable[Obj], window: Window) -> Counter[str]:
    """Occurrences per reason of the events last seen within the window."""
    counts: Counter[str] = Counter()
    for event in events:
        seen = event_time(event)
        reason = event.get("reason")
        if not reason or seen is None or not (window.since <= seen <= window.until):
            continue
        series = event.get("series") or {}
        counts[str(reason)] += int(series.get("count") or event.get("count") or 1)
    return counts


def event_time(event: Obj) -> datetime | None:
    """When the event was last seen (core/v1 fields, newest API first, then creation)."""
    series = event.get("series") or {}
    for raw in (
        series.get("lastObservedTime"),
        event.get("lastTimestamp"),
        event.get("eventTime"),
        event.get("metadata", {}).get("creationTimestamp"),
    ):
        if (parsed := parse_time(raw)) is not None:
            return parsed
    return None


def rollout_facts(rollout: Rollout | None, window: Window) -> Facts:
    """A first revision is no rollout: nothing came before it to blame or to go back to."""
    if rollout is None:
        return {}
    age = (window.at - rollout.at).total_seconds()
    recent = rollout.revision > 1 and window.rollout_s > 0 and 0 <= age <= window.rollout_s
    return {
        "k8s.rollout.revision": rollout.revision,
        "k8s.rollout.age_s": round(age, 1),
        "k8s.rollout.recent": recent,
    }


def deployment_rollout(deployment: Obj, replica_sets: list[Obj]) -> Rollout | None:
    """The deployment's current revision: its ReplicaSet of that revision (the newest if the
    deployment has not yet recorded one), and when that ReplicaSet was created."""
    uid = deployment.get("metadata", {}).get("uid")
    owned = [rs for rs in replica_sets if (_controller(rs) or {}).get("uid") == uid]
    if not owned:
        return None
    wanted = _revision(deployment)
    current = next((rs for rs in owned if _revision(rs) == wanted and wanted > 0), None)
    if current is None:
        current = max(owned, key=_revision)
    created = parse_time(current.get("metadata", {}).get("creationTimestamp"))
    return None if created is None else Rollout(revision=_revision(current), at=created)


def revision_rollout(controller_revision: Obj) -> Rollout | None:
    """A StatefulSet's (or DaemonSet's) current revision, from its ControllerRevision."""
    created = parse_time(controller_revision.get("metadata", {}).get("creationTimestamp"))
    revision = controller_revision.get("revision")
    if created is None or not isinstance(revision, int):
        return None
    return Rollout(revision=revision, at=created)


def node_facts(nodes: list[Obj]) -> Facts:
    if not nodes:
        return {}
    conditions: list[str] = []
    not_ready = 0
    for node in nodes:
        if node_not_ready(node):
            not_ready += 1
            conditions.append(f"{_name(node)}:NotReady")
        for condition in _conditions(node):
            if condition.get("type") in NODE_PRESSURES and condition.get("status") == "True":
                conditions.append(f"{_name(node)}:{condition['type']}")
    return {"k8s.nodes.not_ready": not_ready, "k8s.nodes.conditions": conditions}


def node_not_ready(node: Obj) -> bool:
    """Ready is False or Unknown; a node that reports no Ready condition is not judged."""
    ready = next((c for c in _conditions(node) if c.get("type") == "Ready"), None)
    return ready is not None and ready.get("status") != "True"


def parse_time(raw: Any) -> datetime | None:
    if not isinstance(raw, str) or not raw:
        return None
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _events_of(observed: Observed) -> list[Obj]:
    pods = {_name(p) for p in observed.pods}
    owners = set(observed.owners)
    kept = []
    for event in observed.events:
        involved = event.get("involvedObject") or {}
        kind, name = involved.get("kind"), involved.get("name")
        if (kind == "Pod" and name in pods) or (kind, name) in owners:
            kept.append(event)
    return kept


def _container_statuses(pod: Obj) -> list[Obj]:
    status = pod.get("status") or {}
    return list(status.get("initContainerStatuses") or []) + list(
        status.get("containerStatuses") or []
    )


def _unschedulable(pod: Obj) -> bool:
    return any(
        c.get("type") == "PodScheduled"
        and c.get("status") == "False"
        and c.get("reason") == "Unschedulable"
        for c in _conditions(pod)
    )


def _conditions(obj: Obj) -> list[Obj]:
    return list((obj.get("status") or {}).get("conditions") or [])


def _name(obj: Obj) -> str:
    return str(obj.get("metadata", {}).get("name", ""))


# --- which workload, and reading it ----------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    kind: str
    """deployment, statefulset, pod or node"""
    name: str
    namespace: str
    selector: str | None
    """``evidence.kubernetes.selector``; None: the workload's own"""


def workload_of(request: EvidenceRequest) -> Workload | None:
    """The faulted service's target when it is a Kubernetes workload or node, else None."""
    service = request.service
    if service is None:
        return None
    target = service.target(request.fault.target)
    if target is None or target.kind not in TARGET_KINDS:
        return None
    if target.kind == "node":
        return Workload(kind="node", name=target.name, namespace="", selector=None)
    wanted = service.evidence.kubernetes
    return Workload(
        kind=target.kind,
        name=target.name,
        namespace=wanted.namespace or target.namespace or "default",
        selector=wanted.selector,
    )


class KubernetesProvider:
    name = SOURCE

    def __init__(self, api: ApiClient, *, rollout_window_s: float = 1800.0) -> None:
        self._kube = KubeApi(api)
        self._rollout_window_s = rollout_window_s

    async def gather(self, request: EvidenceRequest) -> Gathered:
        workload = workload_of(request)
        if workload is None:
            return Gathered()
        at = request.at
        window = Window(
            at=at,
            since=at - timedelta(seconds=request.window_before_s),
            until=at + timedelta(seconds=request.window_after_s),
            rollout_s=self._rollout_window_s,
        )
        observed = await self.observe(workload)
        if workload.kind != "node":
            observed.pod = request.fault.labels.get("pod")
            observed.scale_to = scale_to(request.fault.labels.get(SCALE_TO_LABEL))
        return assess(observed, service=request.fault.service, window=window)

    async def observe(self, workload: Workload) -> Observed:
        """Read the workload, its pods, events, rollout and nodes (failures raise
        ``TargetError``, except reading nodes); for a node, the node and its events."""
        if workload.kind == "node":
            return await self._node(workload.name)
        ns = workload.namespace
        observed, listed = await asyncio.gather(
            self._workload(workload), self._kube.get(_core(ns, "events"), limit=str(MAX_EVENTS))
        )
        observed.events = list(listed.get("items") or [])
        observed.nodes = await self._nodes(observed.pods)
        return observed

    async def _node(self, name: str) -> Observed:
        node, listed = await asyncio.gather(
            self._kube.find(f"/api/v1/nodes/{name}"),
            self._kube.get(_core(NODE_EVENTS_NAMESPACE, "events"), limit=str(MAX_EVENTS)),
        )
        if node is None:
            raise TargetError(f"node {name!r} not found")
        return Observed(
            kind="node",
            nodes=[node],
            owners=[("Node", name)],
            events=list(listed.get("items") or []),
        )

    async def _workload(self, workload: Workload) -> Observed:
        ns, name = workload.namespace, workload.name
        observed = Observed(kind=workload.kind)
        selector = workload.selector
        if workload.kind == "pod":
            if selector is None:
                observed.pods = [await self._kube.get(_core(ns, "pods", name))]
                return observed
        else:
            plural = f"{workload.kind}s"
            obj = await self._kube.get(_apps(ns, plural, name))
            own = _selector_string(obj.get("spec", {}).get("selector") or {})
            selector = selector or own
            kind = str(obj.get("kind") or workload.kind.title())
            observed.owners.append((kind, name))
            observed.workload = obj
            if workload.kind == "deployment":
                listed = await self._kube.get(
                    _apps(ns, "replicasets"), labelSelector=own, limit=str(MAX_REPLICA_SETS)
                )
                replica_sets = list(listed.get("items") or [])
                observed.rollout = deployment_rollout(obj, replica_sets)
                observed.owners.extend(("ReplicaSet", _name(rs)) for rs in replica_sets)
            else:
                observed.rollout = await self._statefulset_rollout(ns, obj)
        if not selector:
            raise TargetError(f"{workload.kind} {name!r} in {ns!r} selects no pods")
        listed = await self._kube.get(
            _core(ns, "pods"), labelSelector=selector, limit=str(MAX_PODS)
        )
        observed.pods = list(listed.get("items") or [])
        return observed

    async def _statefulset_rollout(self, ns: str, statefulset: Obj) -> Rollout | None:
        update = (statefulset.get("status") or {}).get("updateRevision")
        if not update:
            return None
        revision = await self._kube.find(_apps(ns, "controllerrevisions", str(update)))
        return None if revision is None else revision_rollout(revision)

    async def _nodes(self, pods: list[Obj]) -> list[Obj]:
        names = sorted({n for p in pods if (n := p.get("spec", {}).get("nodeName"))})
        try:
            found = await asyncio.gather(
                *(self._kube.find(f"/api/v1/nodes/{n}") for n in names[:MAX_NODES])
            )
        except TargetError as exc:
            log.warning("kubernetes evidence without nodes", reason=str(exc))
            return []
        return [node for node in found if node is not None]


def scale_to(raw: str | None) -> int | None:
    """The catalog's ``scale_to`` label as a replica count; None when unset or not a count."""
    try:
        count = int(raw) if raw is not None else None
    except ValueError:
        return None
    return count if count is not None and count >= 0 else None


def kubernetes_provider(
    kubernetes: KubernetesSettings, evidence: EvidenceSettings | None = None
) -> KubernetesProvider | None:
    """The provider for the cluster the settings name; None when none is configured (no
    kubeconfig and not in-cluster), as for the actions."""
    api = kubernetes_client(kubernetes)
    if api is None:
        return None
    window = (evidence or EvidenceSettings()).rollout_window_s
    return KubernetesProvider(api, rollout_window_s=window)
