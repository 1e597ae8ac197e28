"""A simulated node for a control plane without kubelets: the kubelet's part (and the
scheduler's), played through the Kubernetes API only. The Kubernetes tests and the Kubernetes
demos of ``selfheal dev`` (``devstack/demo/kubernetes.py``) run it; never point it at a cluster
with real nodes.

The test control plane (.ci/k8s/start-apiserver) runs etcd, kube-apiserver and the
controller-manager, but no kubelet and no scheduler, so pods stay Pending. ``NodeAgent``
registers a Node and, in a background thread, does what those two would:

- schedules: binds Pending pods that name no node (Binding subresource) and posts the
  scheduler's ``Scheduled`` event. Several agents may run at once; every agent computes the
  same placement (the least-loaded fitting node in the pod's namespace, ties by name), so each
  binds only what falls to its own node. A node fits when it is an agent's (label
  ``selfheal.test/node-agent``), serves the pod's namespace, posted a heartbeat recently, is not
  cordoned and has no untolerated ``NoSchedule``/``NoExecute`` taint, and matches the pod's
  ``nodeSelector`` and required node affinity (so DaemonSet pods land on their own node).
  Resources are not counted.
- runs the pods bound to its node: ``ContainerCreating`` at once, then after ``start_delay_s``
  phase Running with running, ready containers and the Ready condition, and the kubelet's
  events (``Pulled``, ``Created``, ``Started``);
- makes them misbehave when the pod asks, so that a change of a Deployment's pod template (a
  rollout) can bring the fault: annotation ``selfheal.test/behavior`` holds one or more of
  ``crashloop``, ``unready``, ``stuck-terminating`` (comma-separated), and annotation
  ``selfheal.test/memory-need`` (a quantity such as ``300Mi``) OOM-kills every container whose
  memory limit is below it (a container without a limit, or with a limit at or above the need,
  is healthy);
- confirms deletions: a pod with a ``deletionTimestamp`` gets a ``Killing`` event and is deleted
  with grace period 0, as the kubelet does once the containers stopped (never for
  ``stuck-terminating``);
- keeps its node's Ready condition heartbeat fresh; ``set_ready(False)`` makes the node report
  ``Ready=False`` (reason ``KubeletNotReady``) and taints it ``node.kubernetes.io/not-ready``
  (``NoSchedule``) as the node lifecycle controller would, so that nothing new lands there; its
  pods keep running (a kubelet whose network plugin failed), and deletions are still confirmed.

A crash-looping or OOM-killed container shows what a kubelet shows: state waiting
``CrashLoopBackOff``, last state terminated (``Error`` exit code 1, or ``OOMKilled`` exit code
137), the restart count rising every ``restart_every_s``, not ready; the events ``BackOff``
("Back-off restarting failed container") and, on each restart, ``Pulled``/``Created``/
``Started``; an OOM kill also posts the kubelet's node event ``OOMKilling``. An unready
container runs but is not ready, with ``Unhealthy`` events ("Readiness probe failed: ...").
Repeated events are one Event whose ``count`` rises (the kubelet's event correlation), so their
number stays bounded: a few per pod.

Everything is polled (every ``poll_s``): simpler and sturdier than watches, and quick enough for
tests. A failing call is retried on the next poll; what is not a vanished object or a conflict
lands in ``errors`` (and the log), which tests may assert empty. Pass ``namespaces`` to keep the
agent to the test's own namespaces: other tests' Pending pods stay untouched.

    with NodeAgent(api, namespaces=[ns]) as agent:
        ...  # create a Deployment: its pods become Ready on node agent.name
        agent.set_ready(False)
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, Self

import urllib3
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity

from selfheal.activities.actions.kubernetes import KubeApi

Obj = dict[str, Any]

BEHAVIOR = "selfheal.test/behavior"
"""pod annotation: comma-separated ``crashloop``, ``unready``, ``stuck-terminating``"""
MEMORY_NEED = "selfheal.test/memory-need"
"""pod annotation: the memory each container needs; a lower limit gets it OOM-killed"""
AGENT_LABEL = "selfheal.test/node-agent"
"""node label that marks the nodes agents run (value ``"true"``)"""
NAMESPACES_ANNOTATION = "selfheal.test/namespaces"
"""node annotation: the namespaces its agent serves, comma-separated, or ``*``"""

CRASHLOOP = "crashloop"
UNREADY = "unready"
STUCK_TERMINATING = "stuck-terminating"
BEHAVIORS = (CRASHLOOP, UNREADY, STUCK_TERMINATING)

NOT_READY_TAINT = "node.kubernetes.io/not-ready"
UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"
SCHEDULER = "default-scheduler"
KUBELET = "kubelet"
KUBELET_VERSION = "v1.20.2"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
MERGE_PATCH = "application/merge-patch+json"
REQUEST_TIMEOUT_S = 5.0
STALE_HEARTBEAT_S = 10.0
"""another agent's node whose heartbeat is older than this gets no pods (its agent stopped)"""
MAX_ERRORS = 50

log = logging.getLogger(__name__)


class _Api:
    """The API as JSON dicts, synchronously (the agent's own thread): no model round trip
    between a v1.20 server and a much newer client. Errors stay ``ApiException``."""

    def __init__(self, api: ApiClient) -> None:
        self._kube = KubeApi(api)

    def get(self, path: str, **query: str) -> Obj:
        return self.call("GET", path, query=query)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> Obj:
        return self._kube.call_sync(method, path, body, dict(query or {}), content_type)


@dataclass
class _Container:
    """What the agent remembers of one container between polls."""

    started_at: datetime | None = None
    restarts: int = 0
    next_restart: float = 0.0
    """monotonic time of the next restart while it keeps failing"""
    last_termination: Obj | None = None
    failing: bool = False


@dataclass
class _Run:
    """What the agent remembers of one pod bound to its node (by uid)."""

    bound: float
    start_time: str
    pod_ip: str
    started: bool = False
    next_probe: float = 0.0
    containers: dict[str, _Container] = field(default_factory=dict)
    conditions: dict[str, tuple[str, str]] = field(default_factory=dict)
    """condition type -> (status, lastTransitionTime)"""
    last_status: Obj | None = None
    killing_posted: bool = False


@dataclass
class _Posted:
    namespace: str
    name: str
    count: int


@dataclass(frozen=True)
class _Fault:
    reason: str
    exit_code: int


class NodeAgent:
    """One test node: a Node object and the kubelet (and scheduler) part for it (module doc).

    ``start()`` registers the node and starts the agent's thread; ``stop()`` ends it and, unless
    ``remove_node=False``, deletes the node. As a context manager it does both.
    """

    def __init__(
        self,
        api: ApiClient,
        name: str | None = None,
        *,
        namespaces: Iterable[str] | None = None,
        start_delay_s: float = 0.3,
        restart_every_s: float = 1.0,
        poll_s: float = 0.25,
        heartbeat_s: float = 1.0,
        cpu: str = "4",
        memory: str = "8Gi",
        max_pods: int = 110,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name or f"node-{uuid.uuid4().hex[:8]}"
        self.namespaces = sorted(set(namespaces)) if namespaces is not None else None
        self.start_delay_s = start_delay_s
        self.restart_every_s = restart_every_s
        self.poll_s = poll_s
        self.heartbeat_s = heartbeat_s
        self._capacity = {"cpu": cpu, "memory": memory, "pods": str(max_pods)}
        self._labels = dict(labels or {})
        self._api = _Api(api)
        octet = zlib.crc32(self.name.encode()) % 250 + 2
        self._host_ip = f"10.0.0.{octet}"
        self._pod_net = f"10.244.{octet}"
        self._next_ip = 2
        self._ready = True
        self._ready_since = self._registered_at = _now()
        self._node_uid = ""
        self._node_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._runs: dict[str, _Run] = {}
        self._events: dict[tuple[str, ...], _Posted] = {}
        self._errors: deque[str] = deque(maxlen=MAX_ERRORS)
        self._next_heartbeat = 0.0

    # --- public -------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def errors(self) -> list[str]:
        """Unexpected failures so far (at most the last 50): API refusals other than a vanished
        object or a write conflict, and pods whose annotations the agent could not read."""
        return list(self._errors)

    def start(self) -> Self:
        """Register the node (Ready unless ``set_ready(False)`` came first) and start tending
        pods. Raises ``ApiException`` when the node cannot be registered."""
        if self._thread is not None:
            raise RuntimeError(f"node agent {self.name} is already started")
        self._register()
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._loop, name=f"node-agent-{self.name}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, *, remove_node: bool = True) -> None:
        """Stop tending (safe at any moment: the thread finishes its current call) and delete
        the node unless ``remove_node=False``. Pods bound to the node stay as they are."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        thread.join(timeout=self.poll_s + 3 * REQUEST_TIMEOUT_S)
        if thread.is_alive():
            self._error(f"node agent {self.name}: the thread did not stop in time")
        if remove_node:
            self._quietly(lambda: self._api.call("DELETE", f"/api/v1/nodes/{self.name}"))

    def set_ready(self, ready: bool) -> None:
        """Make the node Ready or NotReady now (written before returning, when started)."""
        with self._node_lock:
            if ready != self._ready:
                self._ready, self._ready_since = ready, _now()
            if self._thread is not None:
                self._post_node_status()
                self._set_not_ready_taint(not ready)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # --- the node -----------------------------------------------------------------------------

    def _register(self) -> None:
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            AGENT_LABEL: "true",
            **self._labels,
        }
        served = ",".join(self.namespaces) if self.namespaces is not None else "*"
        annotations = {NAMESPACES_ANNOTATION: served}
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": labels,
                "annotations": annotations,
            },
            "spec": {"podCIDR": f"{self._pod_net}.0/24", "podCIDRs": [f"{self._pod_net}.0/24"]},
        }
        try:
            node = self._api.call("POST", "/api/v1/nodes", body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            # A node of that name exists (an agent restarted): take it over.
            patch = {"metadata": {"labels": labels, "annotations": annotations}}
            path = f"/api/v1/nodes/{self.name}"
            node = self._api.call("PATCH", path, patch, content_type=MERGE_PATCH)
        self._node_uid = str(node["metadata"]["uid"])
        with self._node_lock:
            self._post_node_status()
            self._set_not_ready_taint(not self._ready)

    def _post_node_status(self) -> None:
        """The kubelet's node status: capacity and conditions with a fresh heartbeat."""
        now = _stamp(_now())
        since = _stamp(self._ready_since)
        if self._ready:
            ready = ("True", "KubeletReady", "kubelet is posting ready status")
        else:
            ready = (
                "False",
                "KubeletNotReady",
                "container runtime network not ready: NetworkReady=false "
                "reason:NetworkPluginNotReady message:network plugin is not ready: "
                "cni config uninitialized",
            )
        pressure = [
            ("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory"),
            ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        ]
        conditions = [
            {
                "type": kind,
                "status": "False",
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": now,
                "lastTransitionTime": _stamp(self._registered_at),
            }
            for kind, reason, message in pressure
        ]
        conditions.append(
            {
                "type": "Ready",
                "status": ready[0],
                "reason": ready[1],
                "message": ready[2],
                "lastHeartbeatTime": now,
                "lastTransitionTime": since,
            }
        )
        status = {
            "capacity": self._capacity,
            "allocatable": self._capacity,
            "conditions": conditions,
            "addresses": [
                {"type": "InternalIP", "address": self._host_ip},
                {"type": "Hostname", "address": self.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": hashlib.md5(self.name.encode()).hexdigest(),
                "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, self.name)),
                "bootID": str(uuid.uuid5(uuid.NAMESPACE_URL, self.name)),
                "kernelVersion": "6.1.0",
                "osImage": "selfheal test node agent",
                "containerRuntimeVersion": "containerd://1.4.13",
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": KUBELET_VERSION,
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }
        self._api.call(
            "PATCH",
            f"/api/v1/nodes/{self.name}/status",
            {"status": status},
            content_type=STRATEGIC_MERGE_PATCH,
        )
        self._next_heartbeat = time.monotonic() + self.heartbeat_s

    def _set_not_ready_taint(self, tainted: bool) -> None:
        """Add or remove the not-ready taint, keeping other taints (read-modify-write guarded
        by resourceVersion: a cordon or another writer in between makes it a 409, retried)."""
        for attempt in range(3):
            node = self._api.get(f"/api/v1/nodes/{self.name}")
            taints = [t for t in node["spec"].get("taints") or [] if t["key"] != NOT_READY_TAINT]
            if tainted:
                taints.append(
                    {"key": NOT_READY_TAINT, "effect": "NoSchedule", "timeAdded": _stamp(_now())}
                )
            if taints == (node["spec"].get("taints") or []):
                return
            patch = {
                "metadata": {"resourceVersion": node["metadata"]["resourceVersion"]},
                "spec": {"taints": taints or None},
            }
            try:
                self._api.call(
                    "PATCH", f"/api/v1/nodes/{self.name}", patch, content_type=MERGE_PATCH
                )
                return
            except ApiException as exc:
                if exc.status != 409 or attempt == 2:
                    raise

    # --- the loop -----------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            self._tick()
            if self._stopping.wait(self.poll_s):
                return

    def _tick(self) -> None:
        if time.monotonic() >= self._next_heartbeat:
            self._guard("heartbeat", self._heartbeat)
        self._guard("poll", self._tend_pods)

    def _heartbeat(self) -> None:
        with self._node_lock:
            self._post_node_status()

    def _tend_pods(self) -> None:
        pods = self._list_pods()
        self._schedule(pods)
        seen: set[str] = set()
        for pod in pods:
            if self._stopping.is_set():
                return
            if pod["spec"].get("nodeName") == self.name:
                seen.add(pod["metadata"]["uid"])
                self._guard(_pod_key(pod), self._tend, pod)
        self._forget(set(self._runs) - seen)

    def _list_pods(self) -> list[Obj]:
        if self.namespaces is None:
            items: list[Obj] = self._api.get("/api/v1/pods")["items"]
            return items
        pods: list[Obj] = []
        for namespace in self.namespaces:
            pods.extend(self._api.get(f"/api/v1/namespaces/{namespace}/pods")["items"])
        return pods

    def _forget(self, uids: set[str]) -> None:
        for uid in uids:
            del self._runs[uid]
        for key in [k for k in self._events if k[0] in uids]:
            del self._events[key]

    def _guard(self, what: str, call: Callable[..., None], *args: Any) -> None:
        """Run one step of the loop; a failure is retried on the next poll, and recorded
        unless it is an object that vanished or changed meanwhile."""
        try:
            call(*args)
        except ApiException as exc:
            if exc.status not in (404, 409) and not _namespace_terminating(exc):
                self._error(f"{what}: HTTP {exc.status}: {_message(exc)}")
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            self._error(f"{what}: kubernetes API unreachable: {exc}")
        except Exception as exc:  # the agent's own bug: keep tending the other pods
            log.exception("node agent %s: %s failed", self.name, what)
            self._error(f"{what}: {type(exc).__name__}: {exc}")

    def _quietly(self, call: Callable[[], object]) -> None:
        try:
            call()
        except ApiException as exc:
            if exc.status != 404:
                self._error(f"HTTP {exc.status}: {_message(exc)}")
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            self._error(f"kubernetes API unreachable: {exc}")

    def _error(self, message: str) -> None:
        if message in self._errors:  # the same problem on every poll: once is enough
            return
        log.warning("node agent %s: %s", self.name, message)
        self._errors.append(message)

    # --- the scheduler's part -----------------------------------------------------------------

    def _schedule(self, pods: list[Obj]) -> None:
        pending = sorted(
            (p for p in pods if _unscheduled(p)),
            key=lambda p: (p["metadata"].get("creationTimestamp", ""), p["metadata"]["name"]),
        )
        if not pending:
            return
        nodes = self._api.get("/api/v1/nodes", labelSelector=f"{AGENT_LABEL}=true")["items"]
        live = [n for n in nodes if _heartbeat_fresh(n)]
        load: Counter[tuple[str, str]] = Counter(
            (p["metadata"]["namespace"], p["spec"]["nodeName"])
            for p in pods
            if p["spec"].get("nodeName") and _active(p)
        )
        for pod in pending:
            namespace = pod["metadata"]["namespace"]
            fitting = [n for n in live if _serves(n, namespace) and _fits(pod, n)]
            if not fitting:
                continue
            chosen = _name(min(fitting, key=lambda n: (load[namespace, _name(n)], _name(n))))
            load[namespace, chosen] += 1
            if chosen == self.name:
                self._guard(_pod_key(pod), self._bind, pod)

    def _bind(self, pod: Obj) -> None:
        meta = pod["metadata"]
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"], "uid": meta["uid"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.name},
        }
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/binding"
        self._api.call("POST", path, binding)
        pod["spec"]["nodeName"] = self.name
        self._event(
            pod,
            "Scheduled",
            f"Successfully assigned {meta['namespace']}/{meta['name']} to {self.name}",
            component=SCHEDULER,
        )

    # --- the kubelet's part -------------------------------------------------------------------

    def _tend(self, pod: Obj) -> None:
        uid = pod["metadata"]["uid"]
        run = self._runs.get(uid)
        if run is None:
            run = self._runs[uid] = _Run(
                bound=time.monotonic(), start_time=_stamp(_now()), pod_ip=self._pod_ip()
            )
        behaviors = self._behaviors(pod)
        if pod["metadata"].get("deletionTimestamp"):
            self._terminate(pod, run, behaviors)
            return
        if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            return
        now = time.monotonic()
        if not run.started and now >= run.bound + self.start_delay_s:
            run.started = True
            for container in pod["spec"]["containers"]:
                self._start_container(pod, run, container)
        if run.started:
            self._misbehave(pod, run, behaviors, now)
        status = self._status(pod, run, behaviors)
        if status != run.last_status:
            path = f"/api/v1/namespaces/{pod['metadata']['namespace']}/pods/"
            self._api.call(
                "PATCH",
                path + f"{pod['metadata']['name']}/status",
                {"status": status},
                content_type=STRATEGIC_MERGE_PATCH,
            )
            run.last_status = status

    def _pod_ip(self) -> str:
        address = f"{self._pod_net}.{self._next_ip}"
        self._next_ip = self._next_ip % 253 + 2
        return address

    def _behaviors(self, pod: Obj) -> set[str]:
        annotations = pod["metadata"].get("annotations") or {}
        raw = annotations.get(BEHAVIOR, "")
        asked = {b.strip().lower() for b in raw.split(",") if b.strip()}
        unknown = asked - set(BEHAVIORS)
        if unknown:
            self._error(
                f"{_pod_key(pod)}: annotation {BEHAVIOR} has {', '.join(sorted(unknown))}; "
                f"expected one or more of {', '.join(BEHAVIORS)}, comma-separated "
                "(running it as healthy)"
            )
        return asked & set(BEHAVIORS)

    def _memory_fault(self, pod: Obj, container: Obj) -> bool:
        """True when the pod declares a memory need above the container's memory limit."""
        annotations = pod["metadata"].get("annotations") or {}
        need = annotations.get(MEMORY_NEED)
        limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
        if need is None or limit is None:
            return False
        try:
            return _quantity(str(need)) > _quantity(str(limit))
        except ValueError as exc:
            self._error(f"{_pod_key(pod)}: {exc} (running it as healthy)")
            return False

    def _fault(self, pod: Obj, container: Obj, behaviors: set[str]) -> _Fault | None:
        if self._memory_fault(pod, container):
            return _Fault("OOMKilled", 137)
        if CRASHLOOP in behaviors:
            return _Fault("Error", 1)
        return None

    def _start_container(self, pod: Obj, run: _Run, container: Obj) -> None:
        name = container["name"]
        state = run.containers.setdefault(name, _Container())
        state.started_at = _now()
        path = f"spec.containers{{{name}}}"
        image = container.get("image", "")
        self._event(
            pod, "Pulled", f'Container image "{image}" already present on machine', path=path
        )
        self._event(pod, "Created", f"Created container {name}", path=path)
        self._event(pod, "Started", f"Started container {name}", path=path)

    def _misbehave(self, pod: Obj, run: _Run, behaviors: set[str], now: float) -> None:
        """Advance the faults: restarts of failing containers, failing readiness probes."""
        for container in pod["spec"]["containers"]:
            name = container["name"]
            state = run.containers.setdefault(name, _Container(started_at=_now()))
            fault = self._fault(pod, container, behaviors)
            if fault is None:
                if state.failing:  # the fault went away (annotation removed): it runs again
                    state.failing = False
                    self._start_container(pod, run, container)
                continue
            if state.failing and now < state.next_restart:
                continue
            if state.failing:  # the back-off ended: it starts, and dies again
                self._start_container(pod, run, container)
            state.failing = True
            state.restarts += 1
            state.next_restart = now + self.restart_every_s
            finished = _now()
            state.last_termination = {
                "exitCode": fault.exit_code,
                "reason": fault.reason,
                "startedAt": _stamp(state.started_at or finished),
                "finishedAt": _stamp(finished),
                "containerID": _container_id(pod, name, state.restarts - 1),
            }
            path = f"spec.containers{{{name}}}"
            if fault.reason == "OOMKilled":
                self._oom_event(pod, container)
            self._event(
                pod, "BackOff", "Back-off restarting failed container", path=path, warning=True
            )
        if UNREADY in behaviors and now >= run.next_probe:
            run.next_probe = now + self.restart_every_s
            for container in pod["spec"]["containers"]:
                if not run.containers[container["name"]].failing:
                    self._event(
                        pod,
                        "Unhealthy",
                        "Readiness probe failed: HTTP probe failed with statuscode: 503",
                        path=f"spec.containers{{{container['name']}}}",
                        warning=True,
                    )

    def _status(self, pod: Obj, run: _Run, behaviors: set[str]) -> Obj:
        """The pod status a kubelet would report now (a strategic merge patch: containers
        merge by name and conditions by type; the states not in effect are nulled)."""
        statuses = []
        unready = []
        for container in pod["spec"]["containers"]:
            name = container["name"]
            state = run.containers.get(name)
            ready = False
            if not run.started or state is None:
                current: Obj = {"waiting": {"reason": "ContainerCreating"}}
            elif state.failing:
                message = (
                    f"back-off {min(10 * 2 ** (state.restarts - 1), 300)}s restarting failed "
                    f"container={name} pod={pod['metadata']['name']}_"
                    f"{pod['metadata']['namespace']}({pod['metadata']['uid']})"
                )
                current = {"waiting": {"reason": "CrashLoopBackOff", "message": message}}
            else:
                current = {"running": {"startedAt": _stamp(state.started_at or _now())}}
                ready = UNREADY not in behaviors
            if not ready:
                unready.append(name)
            image = container.get("image", "")
            entry: Obj = {
                "name": name,
                "image": image,
                "imageID": _image_id(image),
                "ready": ready,
                "started": bool(state and not state.failing and run.started),
                "restartCount": state.restarts if state else 0,
                "state": {"waiting": None, "running": None, "terminated": None, **current},
            }
            if run.started:
                restarts = state.restarts if state else 0
                entry["containerID"] = _container_id(pod, name, restarts)
            if state and state.last_termination:
                entry["lastState"] = {
                    "waiting": None,
                    "running": None,
                    "terminated": state.last_termination,
                }
            statuses.append(entry)
        readiness = ("True", "", "")
        if unready:
            message = f"containers with unready status: [{' '.join(unready)}]"
            readiness = ("False", "ContainersNotReady", message)
        conditions = [
            self._condition(run, "Initialized", ("True", "", "")),
            self._condition(run, "Ready", readiness),
            self._condition(run, "ContainersReady", readiness),
        ]
        status: Obj = {
            "phase": "Running" if run.started else "Pending",
            "conditions": conditions,
            "hostIP": self._host_ip,
            "podIP": run.pod_ip,
            "podIPs": [{"ip": run.pod_ip}],
            "startTime": run.start_time,
            "containerStatuses": statuses,
        }
        if pod["spec"].get("initContainers"):
            status["initContainerStatuses"] = [
                {
                    "name": c["name"],
                    "image": c.get("image", ""),
                    "imageID": _image_id(c.get("image", "")),
                    "ready": True,
                    "restartCount": 0,
                    "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
                }
                for c in pod["spec"]["initContainers"]
            ]
        return status

    def _condition(self, run: _Run, kind: str, value: tuple[str, str, str]) -> Obj:
        status, reason, message = value
        previous = run.conditions.get(kind)
        if previous is None or previous[0] != status:
            previous = run.conditions[kind] = (status, _stamp(_now()))
        condition = {
            "type": kind,
            "status": status,
            "lastProbeTime": None,
            "lastTransitionTime": previous[1],
            "reason": reason or None,
            "message": message or None,
        }
        return condition

    def _terminate(self, pod: Obj, run: _Run, behaviors: set[str]) -> None:
        """The kubelet stops the containers and confirms the deletion (grace period 0), unless
        the pod is ``stuck-terminating``."""
        if not run.killing_posted:
            run.killing_posted = True
            for container in pod["spec"]["containers"]:
                name = container["name"]
                self._event(
                    pod, "Killing", f"Stopping container {name}", path=f"spec.containers{{{name}}}"
                )
        if STUCK_TERMINATING in behaviors:
            return
        meta = pod["metadata"]
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            # The same name may already be a new pod (a StatefulSet's): delete only this one.
            "preconditions": {"uid": meta["uid"]},
        }
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        self._api.call("DELETE", path, body)

    # --- events -------------------------------------------------------------------------------

    def _event(
        self,
        pod: Obj,
        reason: str,
        message: str,
        *,
        path: str = "",
        warning: bool = False,
        component: str = KUBELET,
    ) -> None:
        """Post an event about the pod, or count a repeat on the one posted before."""
        meta = pod["metadata"]
        involved = {
            "kind": "Pod",
            "namespace": meta["namespace"],
            "name": meta["name"],
            "uid": meta["uid"],
            "apiVersion": "v1",
        }
        if path:
            involved["fieldPath"] = path
        self._record(
            (meta["uid"], meta["namespace"], reason, path),
            meta["namespace"],
            involved,
            reason,
            message,
            warning=warning,
            component=component,
        )

    def _oom_event(self, pod: Obj, container: Obj) -> None:
        """The kubelet's OOM watcher reports the kernel's kill on the node."""
        involved = {"kind": "Node", "name": self.name, "uid": self._node_uid, "apiVersion": "v1"}
        meta = pod["metadata"]
        limit = container["resources"]["limits"]["memory"]
        message = (
            f"Memory cgroup out of memory: Killed process ({container['name']}) of pod "
            f"{meta['namespace']}/{meta['name']} (memory limit {limit})"
        )
        key = (meta["uid"], "default", "OOMKilling", container["name"])
        self._record(key, "default", involved, "OOMKilling", message, warning=True)

    def _record(
        self,
        key: tuple[str, ...],
        namespace: str,
        involved: Obj,
        reason: str,
        message: str,
        *,
        warning: bool,
        component: str = KUBELET,
    ) -> None:
        now = _stamp(_now())
        posted = self._events.get(key)
        if posted is not None:
            patch = {"count": posted.count + 1, "lastTimestamp": now, "message": message}
            path = f"/api/v1/namespaces/{posted.namespace}/events/{posted.name}"
            try:
                self._api.call("PATCH", path, patch, content_type=MERGE_PATCH)
                posted.count += 1
                return
            except ApiException as exc:
                if exc.status != 404:  # expired (events live an hour): post it anew
                    raise
        name = f"{involved['name']}.{time.time_ns():x}"
        source = {"component": component}
        if component == KUBELET:
            source["host"] = self.name
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": "Warning" if warning else "Normal",
            "source": source,
            "count": 1,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "reportingComponent": component,
            "reportingInstance": self.name if component == KUBELET else "",
        }
        self._api.call("POST", f"/api/v1/namespaces/{namespace}/events", body)
        self._events[key] = _Posted(namespace=namespace, name=name, count=1)


# --- scheduling predicates --------------------------------------------------------------------


def _unscheduled(pod: Obj) -> bool:
    spec = pod["spec"]
    return (
        not spec.get("nodeName")
        and not pod["metadata"].get("deletionTimestamp")
        and pod.get("status", {}).get("phase", "Pending") == "Pending"
        and spec.get("schedulerName", SCHEDULER) == SCHEDULER
    )


def _active(pod: Obj) -> bool:
    return not pod["metadata"].get("deletionTimestamp") and pod.get("status", {}).get(
        "phase"
    ) not in ("Succeeded", "Failed")


def _name(obj: Obj) -> str:
    return str(obj["metadata"]["name"])


def _heartbeat_fresh(node: Obj) -> bool:
    for condition in node.get("status", {}).get("conditions") or []:
        if condition.get("type") == "Ready" and condition.get("lastHeartbeatTime"):
            beat = datetime.fromisoformat(condition["lastHeartbeatTime"].replace("Z", "+00:00"))
            return (_now() - beat).total_seconds() < STALE_HEARTBEAT_S
    return False


def _node_ready(node: Obj) -> bool:
    conditions = node.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _serves(node: Obj, namespace: str) -> bool:
    served = (node["metadata"].get("annotations") or {}).get(NAMESPACES_ANNOTATION, "*")
    return served == "*" or namespace in served.split(",")


def _fits(pod: Obj, node: Obj) -> bool:
    """The scheduler's filters that matter here: cordon, taints, node selector, affinity."""
    spec = pod["spec"]
    tolerations = spec.get("tolerations") or []
    taints = list(node["spec"].get("taints") or [])
    # What the node lifecycle controller would turn into taints (it does not run here).
    if node["spec"].get("unschedulable"):
        taints.append({"key": UNSCHEDULABLE_TAINT, "effect": "NoSchedule"})
    if not _node_ready(node):
        taints.append({"key": NOT_READY_TAINT, "effect": "NoSchedule"})
    for taint in taints:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not any(
            _tolerates(t, taint) for t in tolerations
        ):
            return False
    labels = node["metadata"].get("labels") or {}
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    required = (
        ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution"
        )
        or {}
    ).get("nodeSelectorTerms")
    if required:
        fields = {"metadata.name": _name(node)}
        return any(
            all(_matches(e, labels) for e in term.get("matchExpressions") or [])
            and all(_matches(e, fields) for e in term.get("matchFields") or [])
            for term in required
        )
    return True


def _tolerates(toleration: Obj, taint: Obj) -> bool:
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    if toleration.get("operator") == "Exists":
        return not toleration.get("key") or toleration["key"] == taint.get("key")
    return bool(
        toleration.get("key") == taint.get("key")
        and (toleration.get("value") or "") == (taint.get("value") or "")
    )


def _matches(expression: Obj, values: Mapping[str, str]) -> bool:
    key, operator = expression["key"], expression["operator"]
    wanted = expression.get("values") or []
    if operator == "In":
        return key in values and values[key] in wanted
    if operator == "NotIn":
        return values.get(key) not in wanted
    if operator == "Exists":
        return key in values
    if operator == "DoesNotExist":
        return key not in values
    if operator in ("Gt", "Lt") and key in values:
        try:
            have, bound = int(values[key]), int(wanted[0])
        except (ValueError, IndexError):
            return False
        return have > bound if operator == "Gt" else have < bound
    return False


# --- small helpers ----------------------------------------------------------------------------


def _quantity(value: str) -> Decimal:
    """A Kubernetes quantity (``300Mi``, ``0.5Gi``, ``128M``, ``1e9``) as a number."""
    try:
        parsed = parse_quantity(value)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise ValueError(
            f"{MEMORY_NEED} or the memory limit is {value!r}: expected a Kubernetes quantity "
            "such as 300Mi, 1Gi or 512M"
        ) from exc
    return Decimal(parsed)


def _pod_key(pod: Obj) -> str:
    return f"pod {pod['metadata']['namespace']}/{pod['metadata']['name']}"


def _container_id(pod: Obj, name: str, restarts: int) -> str:
    digest = hashlib.sha256(f"{pod['metadata']['uid']}/{name}/{restarts}".encode()).hexdigest()
    return f"containerd://{digest}"


def _image_id(image: str) -> str:
    return f"{image.split(':')[0]}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"


def _namespace_terminating(exc: ApiException) -> bool:
    return exc.status == 403 and "being terminated" in _message(exc)


def _message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "")
    except ValueError:
        return str(exc.body or exc.reason or "")[:300]
    return str(body.get("message") or exc.reason) if isinstance(body, dict) else str(body)


def _now() -> datetime:
    return datetime.now(UTC)


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
