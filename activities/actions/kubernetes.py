"""Kubernetes actions: delete pods, restart, scale, roll back, raise a memory limit, patch a
ConfigMap, cordon, drain, fail a Service over.

The worker builds one ``ApiClient`` from its settings (``kubernetes_services``) and actions find
it in ``ctx.services["kubernetes"]``. Objects travel as plain JSON dicts (the API's own shape);
blocking client calls run in a thread.

Idempotency. A step retried after a worker crash must apply once, and its compensation must
restore the state found by the *first* attempt, not the state the first attempt left behind. So
each action that records "what it found" writes that record, with the step's idempotency key,
in an annotation ``selfheal.io/<action>`` on the object it changes, in the same write as the
change itself. A retry that finds its own key there replays: it reuses the recorded state and
re-applies the (absolute) change, which is a no-op when it already took effect. Pods are deleted
for good, so ``delete_pod`` writes its record on the pod's controller (ReplicaSet, StatefulSet or
DaemonSet) before deleting, and ``drain`` on the node, with the pods it will evict.

Errors: 403 and 404 are non-retryable and name the missing permission or object; a 409 (someone
else wrote the object between our read and write) re-reads and re-applies; a wait that times out
is retryable. A 429 from the Eviction API (a PodDisruptionBudget allows no disruption now) is
tried again with backoff within the step's ``timeout_s``, then fails naming the pod and budget.

There is no readiness wait: whether the change healed the service is validation's judgement, so
actions wait for the controller to act (pods replaced, a new ReplicaSet, evicted pods gone), not
for pods to become ready, unless asked (``wait_for: complete``).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from decimal import ROUND_CEILING, Decimal
from typing import Annotated, Any, Literal, TypeVar

import urllib3
from kubernetes import config
from kubernetes.client import ApiClient, Configuration
from kubernetes.client.exceptions import ApiException
from kubernetes.utils.quantity import parse_quantity
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from selfheal.activities.actions.registry import Action, ActionContext, Output
from selfheal.core.settings import KubernetesSettings
from selfheal.domain import RiskLevel, TargetError

KUBERNETES = "kubernetes"
WAIT_TIMEOUT = "kubernetes_wait_timeout_s"
DEFAULT_WAIT_TIMEOUT_S = 120.0
LEDGER_PREFIX = "selfheal.io/"
REVISION = "deployment.kubernetes.io/revision"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
POD_TEMPLATE_HASH = "pod-template-hash"
MERGE_PATCH = "application/merge-patch+json"
POLL_S = 0.25
# Below the step heartbeat timeout: a hung API call fails before the step looks dead.
REQUEST_TIMEOUT_S = 10.0
CONFLICT_ATTEMPTS = 5

T = TypeVar("T")
Obj = dict[str, Any]

WaitFor = Literal["started", "complete"]
# Object names go into URL paths: only what Kubernetes itself accepts (DNS subdomain / label).
Name = Annotated[
    str,
    Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),
]
Namespace = Annotated[str, Field(max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]


def kubernetes_client(settings: KubernetesSettings) -> ApiClient | None:
    """The API client the settings describe; None when Kubernetes is not configured.

    A worker's ``~/.kube/config`` is never picked up implicitly: selfheal acts on the cluster
    its settings name (in-cluster service account, or a kubeconfig path and context).
    """
    configuration = Configuration()
    if settings.in_cluster:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    elif settings.kubeconfig is not None:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(settings.kubeconfig),
            context=settings.context,
            client_configuration=configuration,
        )
    else:
        return None
    return ApiClient(configuration)


def kubernetes_services(settings: KubernetesSettings) -> dict[str, Any]:
    """The worker services the Kubernetes actions use (empty when not configured)."""
    api = kubernetes_client(settings)
    if api is None:
        return {}
    return {KUBERNETES: api, WAIT_TIMEOUT: settings.wait_timeout_s}


# --- the API, as JSON dicts ------------------------------------------------------------------


class KubernetesConflict(TargetError):
    """A 409: someone wrote the object between our read and write; ``_on_conflict`` re-reads."""


class KubernetesTooManyRequests(TargetError):
    """A 429. From the Eviction API it means a PodDisruptionBudget allows no disruption now;
    ``causes`` holds the API's reasons (they name the budget)."""

    def __init__(self, message: str, causes: list[str]) -> None:
        super().__init__(message)
        self.causes = causes


class _Missing(Exception):
    """A 404 the caller asked for (``missing_ok``): caught right there."""


class KubeApi:
    """The Kubernetes API as JSON dicts; errors become ``TargetError`` (see module doc)."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api

    async def get(self, path: str, **query: str) -> Obj:
        return await self.request("GET", path, query=query)

    async def merge_patch(self, path: str, body: Obj) -> Obj:
        return await self.request("PATCH", path, body=body, content_type=MERGE_PATCH)

    async def create(self, path: str, body: Obj) -> Obj:
        return await self.request("POST", path, body=body)

    async def find(self, path: str) -> Obj | None:
        """The object, or None when it does not exist."""
        try:
            return await self.request("GET", path, missing_ok=True)
        except _Missing:
            return None

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: dict[str, str] | None = None,
        content_type: str | None = None,
        missing_ok: bool = False,
    ) -> Obj:
        try:
            return await asyncio.to_thread(self.call_sync, method, path, body, query, content_type)
        except ApiException as exc:
            if missing_ok and exc.status == 404:
                raise _Missing from exc
            raise _api_error(method, path, exc) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise TargetError(f"kubernetes API unreachable ({method} {path}): {exc}") from exc

    def call_sync(
        self,
        method: str,
        path: str,
        body: Any,
        query: dict[str, str] | None,
        content_type: str | None,
    ) -> Obj:
        """One call, blocking, as JSON; errors stay ``ApiException`` (``request`` translates)."""
        headers = {"Accept": "application/json"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        request = self.api.param_serialize(
            method,
            path,
            query_params=list((query or {}).items()),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(*request, _request_timeout=REQUEST_TIMEOUT_S)
        response.read()  # type: ignore[no-untyped-call]
        data: Any = self.api.response_deserialize(response, {"2XX": "object"}).data
        return data if isinstance(data, dict) else {}


# "pods \"x\" is forbidden: User \"u\" cannot delete resource \"pods\" in API group \"\" in the
# namespace \"ns\"" (or "at the cluster scope")
_FORBIDDEN = re.compile(
    r'User "(?P<user>[^"]*)" cannot (?P<verb>\S+) resource "(?P<resource>[^"]+)"'
    r'(?: in API group "(?P<group>[^"]*)")?'
    r'(?: in the namespace "(?P<namespace>[^"]+)"| at the cluster scope)?'
)


def _api_error(method: str, path: str, exc: ApiException) -> TargetError:
    status = int(exc.status or 0)
    message = _status_message(exc)
    call = f"{method} {path}"
    if status == 403:
        found = _FORBIDDEN.search(message)
        if found is None:
            return TargetError(f"kubernetes forbade {call}: {message}", retryable=False)
        group = found["group"] or "core"
        scope = f"in namespace {found['namespace']!r}" if found["namespace"] else "cluster-wide"
        return TargetError(
            f"kubernetes forbade {call}: missing permission {found['verb']!r} on "
            f"{found['resource']!r} (API group {group!r}) {scope} for user {found['user']!r}; "
            "grant it to the worker (deploy/kubernetes/rbac.yaml)",
            retryable=False,
        )
    if status == 401:
        return TargetError(
            f"kubernetes rejected the worker's credentials ({call}): {message}", retryable=False
        )
    if status == 404:
        namespace = re.search(r"/namespaces/([^/]+)/", path)
        where = f" in namespace {namespace.group(1)!r}" if namespace else ""
        return TargetError(f"kubernetes object not found: {message}{where}", retryable=False)
    if status == 409:
        return KubernetesConflict(f"kubernetes conflict on {call}: {message}")
    if status == 429:
        causes = _status_causes(exc)
        why = f" ({'; '.join(causes)})" if causes else ""
        return KubernetesTooManyRequests(
            f"kubernetes refused {call} for now: {message}{why}", causes
        )
    retryable = status >= 500 or status == 429
    return TargetError(f"kubernetes refused {call}: HTTP {status}: {message}", retryable=retryable)


def _status_causes(exc: ApiException) -> list[str]:
    try:
        body = json.loads(exc.body or "")
    except ValueError:
        return []
    details = body.get("details") if isinstance(body, dict) else None
    causes = details.get("causes") if isinstance(details, dict) else None
    if not isinstance(causes, list):
        return []
    return [str(c["message"]) for c in causes if isinstance(c, dict) and c.get("message")]


def _status_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "")
    except ValueError:
        return str(exc.body or exc.reason or "")[:300]
    return str(body.get("message") or exc.reason) if isinstance(body, dict) else str(body)


async def _on_conflict(attempt: Callable[[], Awaitable[T]]) -> T:
    """Run a read-modify-write again when another writer got in between."""
    for _ in range(CONFLICT_ATTEMPTS - 1):
        try:
            return await attempt()
        except KubernetesConflict:
            await asyncio.sleep(POLL_S)
    try:
        return await attempt()
    except KubernetesConflict as exc:
        raise TargetError(f"{exc} (still conflicting after {CONFLICT_ATTEMPTS} tries)") from exc


def _kube(ctx: ActionContext) -> KubeApi:
    api = ctx.services.get(KUBERNETES)
    if not isinstance(api, ApiClient):
        raise TargetError(
            "kubernetes actions need the worker's Kubernetes settings "
            "(SELFHEAL_KUBERNETES__IN_CLUSTER=true or SELFHEAL_KUBERNETES__KUBECONFIG)",
            retryable=False,
        )
    return KubeApi(api)


def _timeout(ctx: ActionContext, requested: float | None) -> float:
    if requested is not None:
        return requested
    return float(ctx.services.get(WAIT_TIMEOUT, DEFAULT_WAIT_TIMEOUT_S))


async def _wait_until(
    ctx: ActionContext, what: str, timeout_s: float, check: Callable[[], Awaitable[T | None]]
) -> T:
    """Poll ``check`` until it returns something, heartbeating; a timeout is retryable."""
    deadline = time.monotonic() + timeout_s
    while True:
        ctx.heartbeat({"waiting_for": what})
        result = await check()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            raise TargetError(f"timed out after {timeout_s:g}s waiting for {what}")
        await asyncio.sleep(POLL_S)


# --- paths and small helpers ----------------------------------------------------------------


def _core(namespace: str, kind: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{namespace}/{kind}" + (f"/{name}" if name else "")


def _apps(namespace: str, kind: str, name: str = "") -> str:
    return f"/apis/apps/v1/namespaces/{namespace}/{kind}" + (f"/{name}" if name else "")


def _annotations(obj: Obj) -> dict[str, str]:
    annotations: dict[str, str] = obj.get("metadata", {}).get("annotations") or {}
    return annotations


def _ledger(obj: Obj, action: str, key: str) -> dict[str, Any] | None:
    """The record this step (``key``) left on ``obj`` in an earlier attempt, if any."""
    raw = _annotations(obj).get(LEDGER_PREFIX + action)
    if not raw:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) and record.get("key") == key else None


def _ledger_patch(obj: Obj, action: str, key: str, **state: Any) -> Obj:
    """Metadata for a merge patch: the record, and the read's resourceVersion so that a write
    in between makes ours a 409 (re-read) instead of clobbering it."""
    return {
        "resourceVersion": obj["metadata"]["resourceVersion"],
        "annotations": {LEDGER_PREFIX + action: json.dumps({"key": key, **state})},
    }


def _selector_string(selector: Obj) -> str:
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, operator, values = expr["key"], expr["operator"], expr.get("values") or []
        if operator == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif operator == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif operator == "Exists":
            parts.append(key)
        else:
            parts.append(f"!{key}")
    return ",".join(parts)


def _controller(obj: Obj) -> Obj | None:
    owners = obj.get("metadata", {}).get("ownerReferences") or []
    return next((o for o in owners if o.get("controller")), None)


def _is_active(pod: Obj) -> bool:
    return not pod["metadata"].get("deletionTimestamp") and pod.get("status", {}).get(
        "phase"
    ) not in ("Succeeded", "Failed")


def _is_ready(pod: Obj) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _template(obj: Obj) -> Obj:
    """A pod template without the hash label the controller adds to a ReplicaSet's copy."""
    template: Obj = json.loads(json.dumps(obj["spec"]["template"]))
    labels = template.get("metadata", {}).get("labels") or {}
    labels.pop(POD_TEMPLATE_HASH, None)
    return template


def _revision(obj: Obj) -> int:
    try:
        return int(_annotations(obj).get(REVISION, "0"))
    except ValueError:
        return 0


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespace: Namespace = "default"


class _WaitParams(_Params):
    timeout_s: float | None = Field(
        default=None, gt=0, le=3600, description="how long to wait (default: worker setting)"
    )


# --- delete_pod -----------------------------------------------------------------------------


# The controllers whose pods ``delete_pod`` deletes (each replaces a deleted pod), and the
# workloads the guardrails count replicas of, by kind, with their place in the apps/v1 API.
CONTROLLERS = {
    "ReplicaSet": "replicasets",
    "StatefulSet": "statefulsets",
    "DaemonSet": "daemonsets",
}
WORKLOADS = {"Deployment": "deployments", **CONTROLLERS}


class DeletePodParams(_WaitParams):
    name: Name | None = Field(default=None, description="one pod by name")
    selector: str | None = Field(
        default=None, min_length=1, description="label selector, e.g. app=shop"
    )
    max_pods: int = Field(default=1, ge=1, le=100, description="delete at most this many pods")
    grace_period_s: int | None = Field(default=None, ge=0, description="default: the pod's own")
    allow_bare: bool = Field(
        default=False,
        description="also delete a pod that no controller owns (by name only): nothing replaces it",
    )

    @model_validator(mode="after")
    def _one_target(self) -> DeletePodParams:
        if (self.name is None) == (self.selector is None):
            raise ValueError("give exactly one of 'name' (a pod) or 'selector' (labels)")
        if self.allow_bare and self.name is None:
            raise ValueError(
                "'allow_bare' needs 'name': with no owner to record them on, a retried step "
                "could not tell which bare pods it already deleted"
            )
        return self


async def delete_pod(ctx: ActionContext, params: DeletePodParams) -> Output:
    """Delete pods of a ReplicaSet, StatefulSet or DaemonSet and wait for their controller to
    replace them. The chosen pods are recorded on their controller before the delete (the pods
    will be gone, the controller stays), so a retry deletes the same pods, not others. A bare
    pod (no controller) is refused unless named with ``allow_bare``: nothing would replace it."""
    kube = _kube(ctx)
    ns = params.namespace
    started = time.monotonic()

    async def choose() -> tuple[list[dict[str, str]], dict[str, Obj], bool] | None:
        if params.name is not None:
            pod = await kube.find(_core(ns, "pods", params.name))
            if pod is None:
                return None
            pods = [pod]
        else:
            selector = params.selector or ""
            pods = (await kube.get(_core(ns, "pods"), labelSelector=selector))["items"]
        owners = await _controllers_of(kube, ns, pods)
        recorded = [
            ref
            for owner in owners.values()
            if (record := _ledger(owner, "delete-pod", ctx.idempotency_key)) is not None
            for ref in record["pods"]
        ]
        if recorded:
            return recorded, owners, True
        chosen = _choose_pods(pods, params)
        for ref in chosen:
            _check_owner(ref, owners, params)
        # Recorded before deleting: the pods will be gone, their controller stays.
        for key, owner in owners.items():
            mine = [ref for ref in chosen if _owner_key(ref) == key]
            if mine:
                meta = _ledger_patch(owner, "delete-pod", ctx.idempotency_key, pods=mine)
                await kube.merge_patch(_controller_path(ns, key), {"metadata": meta})
        return chosen, owners, False

    selected = await _on_conflict(choose)
    if selected is None:
        # Gone already: deleted by an earlier attempt of this step, or by someone else.
        return {"namespace": ns, "deleted": [], "already_gone": True, "replayed": False}
    chosen, owners, replayed = selected
    for ref in chosen:
        await _delete(kube, ns, ref, params.grace_period_s)
    deleted_uids = {ref["uid"] for ref in chosen}
    touched = sorted({key for ref in chosen if (key := _owner_key(ref))})
    for key in touched:
        await _wait_replaced(ctx, kube, ns, key, deleted_uids, _timeout(ctx, params.timeout_s))
    return {
        "namespace": ns,
        "deleted": [ref["name"] for ref in chosen],
        "owners": touched,
        "workloads": sorted({_workload_key(key, owners.get(key)) for key in touched}),
        "bare": [ref["name"] for ref in chosen if not _owner_key(ref)],
        "replayed": replayed,
        "waited_s": round(time.monotonic() - started, 3),
    }


def _controller_key(obj: Obj) -> str:
    """``Kind/name`` of the object's controller; empty when nothing controls it."""
    owner = _controller(obj)
    return f"{owner['kind']}/{owner['name']}" if owner else ""


def _controller_path(ns: str, key: str) -> str:
    kind, _, name = key.partition("/")
    return _apps(ns, CONTROLLERS[kind], name)


def _workload_key(key: str, owner: Obj | None) -> str:
    """The workload behind a pod's controller: a ReplicaSet's Deployment, else the controller."""
    parent = _controller(owner) if owner is not None and key.startswith("ReplicaSet/") else None
    return f"Deployment/{parent['name']}" if parent and parent.get("kind") == "Deployment" else key


async def _controllers_of(kube: KubeApi, ns: str, pods: list[Obj]) -> dict[str, Obj]:
    keys = sorted(
        {k for p in pods if (k := _controller_key(p)) and k.partition("/")[0] in CONTROLLERS}
    )
    return {key: await kube.get(_controller_path(ns, key)) for key in keys}


def _pod_ref(pod: Obj) -> dict[str, str]:
    meta = pod["metadata"]
    owner = _controller(pod) or {}
    return {
        "name": meta["name"],
        "uid": meta["uid"],
        "kind": str(owner.get("kind", "")),
        "owner": str(owner.get("name", "")),
    }


def _owner_key(ref: dict[str, str]) -> str:
    # Records written before StatefulSets and DaemonSets were supported have no "kind".
    return f"{ref.get('kind') or 'ReplicaSet'}/{ref['owner']}" if ref["owner"] else ""


def _check_owner(ref: dict[str, str], owners: dict[str, Obj], params: DeletePodParams) -> None:
    key = _owner_key(ref)
    if key in owners or (not key and params.allow_bare):
        return
    where = f"pod {ref['name']!r} in namespace {params.namespace!r}"
    if not key:
        raise TargetError(
            f"{where} is not managed by a controller (a bare pod): nothing would replace it; "
            "name it with allow_bare: true to delete it anyway",
            retryable=False,
        )
    raise TargetError(
        f"{where} is managed by {key}: delete_pod deletes pods of ReplicaSets, StatefulSets "
        "and DaemonSets, whose controllers replace them",
        retryable=False,
    )


def _choose_pods(pods: list[Obj], params: DeletePodParams) -> list[dict[str, str]]:
    # A pod named explicitly is deleted whatever its state; a selector picks among live pods.
    active = pods if params.name is not None else [p for p in pods if _is_active(p)]
    if not active:
        what = params.name or f"selector {params.selector!r}"
        raise TargetError(
            f"no running pod matches {what} in namespace {params.namespace!r}", retryable=False
        )
    # Unready pods first (the likely culprits), then the oldest.
    active.sort(
        key=lambda p: (_is_ready(p), p["metadata"]["creationTimestamp"], p["metadata"]["name"])
    )
    return [_pod_ref(p) for p in active[: params.max_pods]]


async def _delete(kube: KubeApi, ns: str, ref: dict[str, str], grace: int | None) -> None:
    # The uid precondition keeps a retry from deleting a replacement of the same name (a
    # StatefulSet's replacement always has the same name).
    body: Obj = {"preconditions": {"uid": ref["uid"]}}
    if grace is not None:
        body["gracePeriodSeconds"] = grace
    try:
        await kube.request("DELETE", _core(ns, "pods", ref["name"]), body=body, missing_ok=True)
    except (_Missing, KubernetesConflict):
        return


def desired_pods(kind: str, workload: Obj) -> int:
    """How many pods a workload wants: a DaemonSet one per eligible node (as its controller
    counted them), the others their ``spec.replicas``."""
    if kind == "DaemonSet":
        return int((workload.get("status") or {}).get("desiredNumberScheduled") or 0)
    return int(workload.get("spec", {}).get("replicas") or 0)


async def _wait_replaced(
    ctx: ActionContext, kube: KubeApi, ns: str, key: str, deleted: set[str], timeout_s: float
) -> None:
    kind = key.partition("/")[0]

    async def replaced() -> bool | None:
        owner = await kube.get(_controller_path(ns, key))
        pods = await kube.get(
            _core(ns, "pods"), labelSelector=_selector_string(owner["spec"]["selector"])
        )
        uid = owner["metadata"]["uid"]
        live = [
            p
            for p in pods["items"]
            if _is_active(p)
            and p["metadata"]["uid"] not in deleted
            and (_controller(p) or {}).get("uid") == uid
        ]
        return True if len(live) >= desired_pods(kind, owner) else None

    await _wait_until(ctx, f"{key} to replace its deleted pods", timeout_s, replaced)


async def workload_of_pod(kube: KubeApi, ns: str, pod: Obj) -> tuple[str, Obj] | None:
    """The workload a pod belongs to (``Kind/name``, the object): a ReplicaSet's Deployment,
    else its StatefulSet, DaemonSet or bare ReplicaSet; None for a bare pod or another owner."""
    key = _controller_key(pod)
    if key.partition("/")[0] not in CONTROLLERS:
        return None
    owner = await kube.get(_controller_path(ns, key))
    workload = _workload_key(key, owner)
    if workload == key:
        return key, owner
    return workload, await kube.get(_apps(ns, "deployments", workload.partition("/")[2]))


# --- deployments: rollout restart, scale, rollback ------------------------------------------


class RolloutParams(_WaitParams):
    name: Name = Field(description="the Deployment")
    wait_for: WaitFor = Field(
        default="started",
        description="started: the controller made the new ReplicaSet and gave it pods; "
        "complete: every replica updated and available",
    )


async def rollout_restart(ctx: ActionContext, params: RolloutParams) -> Output:
    kube = _kube(ctx)
    path = _apps(params.namespace, "deployments", params.name)
    # Derived from the key, not the clock: a retried step writes the same value, which the
    # controller sees as no change at all.
    stamp = f"selfheal:{ctx.idempotency_key}"
    deployment = await kube.get(path)
    current = (deployment["spec"]["template"].get("metadata") or {}).get("annotations") or {}
    replayed = current.get(RESTARTED_AT) == stamp
    if not replayed:
        template_patch = {"metadata": {"annotations": {RESTARTED_AT: stamp}}}
        deployment = await kube.merge_patch(path, {"spec": {"template": template_patch}})
    rs = await _wait_rollout(ctx, kube, params, deployment["metadata"]["generation"])
    return {
        "namespace": params.namespace,
        "deployment": params.name,
        "restarted_at": stamp,
        "replica_set": rs["metadata"]["name"],
        "replayed": replayed,
    }


async def _wait_rollout(
    ctx: ActionContext, kube: KubeApi, params: RolloutParams, generation: int
) -> Obj:
    """The Deployment's new ReplicaSet, once the controller has acted on ``generation``."""
    ns, name = params.namespace, params.name

    async def rolled() -> Obj | None:
        deployment = await kube.get(_apps(ns, "deployments", name))
        status = deployment.get("status") or {}
        if int(status.get("observedGeneration") or 0) < generation:
            return None
        _raise_if_stalled(deployment, ns, name)
        replicas = int(deployment["spec"].get("replicas") or 0)
        updated = int(status.get("updatedReplicas") or 0)
        if params.wait_for == "complete":
            done = (
                updated == replicas
                and int(status.get("replicas") or 0) == replicas
                and int(status.get("availableReplicas") or 0) == replicas
            )
        else:
            done = updated >= min(replicas, 1)
        if not done:
            return None
        return _new_replica_set(deployment, await _replica_sets(kube, deployment))

    what = f"Deployment {name!r} in namespace {ns!r} to roll out ({params.wait_for})"
    return await _wait_until(ctx, what, _timeout(ctx, params.timeout_s), rolled)


def _raise_if_stalled(deployment: Obj, ns: str, name: str) -> None:
    """The deployment controller gave up on this rollout (condition Progressing=False, reason
    ProgressDeadlineExceeded, after ``progressDeadlineSeconds``): waiting longer is pointless,
    and the step fails at once, not at its timeout."""
    for condition in (deployment.get("status") or {}).get("conditions") or []:
        if (
            condition.get("type") == "Progressing"
            and condition.get("status") == "False"
            and condition.get("reason") == "ProgressDeadlineExceeded"
        ):
            raise TargetError(
                f"Deployment {name!r} in namespace {ns!r}: the rollout exceeded its progress "
                f"deadline (ProgressDeadlineExceeded: {condition.get('message', '')})",
                retryable=False,
            )


async def _replica_sets(kube: KubeApi, deployment: Obj) -> list[Obj]:
    ns = deployment["metadata"]["namespace"]
    selector = _selector_string(deployment["spec"]["selector"])
    listed = await kube.get(_apps(ns, "replicasets"), labelSelector=selector)
    uid = deployment["metadata"]["uid"]
    return [rs for rs in listed["items"] if (_controller(rs) or {}).get("uid") == uid]


def _new_replica_set(deployment: Obj, replica_sets: list[Obj]) -> Obj | None:
    template = _template(deployment)
    return next((rs for rs in replica_sets if _template(rs) == template), None)


class ScaleParams(_WaitParams):
    name: Name = Field(description="the Deployment")
    replicas: int = Field(ge=0, le=10_000, description="the absolute replica count")


async def scale(ctx: ActionContext, params: ScaleParams) -> Output:
    kube = _kube(ctx)
    path = _apps(params.namespace, "deployments", params.name)

    async def attempt() -> tuple[int, bool, Obj]:
        deployment = await kube.get(path)
        record = _ledger(deployment, "scale", ctx.idempotency_key)
        found = int(record["found"]) if record else int(deployment["spec"].get("replicas") or 0)
        if record is None or deployment["spec"].get("replicas") != params.replicas:
            meta = _ledger_patch(deployment, "scale", ctx.idempotency_key, found=found)
            body = {"metadata": meta, "spec": {"replicas": params.replicas}}
            deployment = await kube.merge_patch(path, body)
        return found, record is not None, deployment

    found, replayed, deployment = await _on_conflict(attempt)
    await _wait_scaled(ctx, kube, params, deployment["metadata"]["generation"])
    return {
        "namespace": params.namespace,
        "deployment": params.name,
        "found": found,
        "replicas": params.replicas,
        "replayed": replayed,
    }


async def unscale(ctx: ActionContext, params: ScaleParams, output: Output) -> Output:
    kube = _kube(ctx)
    back = params.model_copy(update={"replicas": int(output["found"])})
    path = _apps(params.namespace, "deployments", params.name)
    deployment = await kube.merge_patch(path, {"spec": {"replicas": back.replicas}})
    await _wait_scaled(ctx, kube, back, deployment["metadata"]["generation"])
    return {"namespace": params.namespace, "deployment": params.name, "replicas": back.replicas}


async def _wait_scaled(
    ctx: ActionContext, kube: KubeApi, params: ScaleParams, generation: int
) -> None:
    path = _apps(params.namespace, "deployments", params.name)

    async def scaled() -> bool | None:
        status = (await kube.get(path)).get("status") or {}
        observed = int(status.get("observedGeneration") or 0) >= generation
        return True if observed and int(status.get("replicas") or 0) == params.replicas else None

    what = f"Deployment {params.name!r} to have {params.replicas} pods"
    await _wait_until(ctx, what, _timeout(ctx, params.timeout_s), scaled)


class RollbackParams(RolloutParams):
    to_revision: int | None = Field(default=None, ge=1, description="default: the previous one")


async def rollback(ctx: ActionContext, params: RollbackParams) -> Output:
    """Like ``kubectl rollout undo``: the Deployment gets an older ReplicaSet's pod template."""
    kube = _kube(ctx)
    path = _apps(params.namespace, "deployments", params.name)

    async def attempt() -> Output:
        deployment = await kube.get(path)
        replica_sets = await _replica_sets(kube, deployment)
        record = _ledger(deployment, "rollback", ctx.idempotency_key)
        if record is not None:
            replaced = _at_revision(replica_sets, int(record["from_revision"]), params)
            state = {k: record[k] for k in ("from_revision", "to_revision")}
            return {**state, "replaced_template": _template(replaced), "replayed": True}
        current = _revision(deployment)
        target = _rollback_target(replica_sets, current, params)
        state = {"from_revision": current, "to_revision": _revision(target)}
        ledger = _ledger_patch(deployment, "rollback", ctx.idempotency_key, **state)
        deployment["metadata"].setdefault("annotations", {}).update(ledger["annotations"])
        replaced = _template(deployment)
        deployment["spec"]["template"] = _template(target)
        await kube.request("PUT", path, body=deployment)
        return {**state, "replaced_template": replaced, "replayed": False}

    result = await _on_conflict(attempt)
    deployment = await kube.get(path)
    await _wait_rollout(ctx, kube, params, deployment["metadata"]["generation"])
    return {"namespace": params.namespace, "deployment": params.name, **result}


async def roll_forward(ctx: ActionContext, params: RollbackParams, output: Output) -> Output:
    kube = _kube(ctx)
    path = _apps(params.namespace, "deployments", params.name)
    template: Obj = output["replaced_template"]

    async def attempt() -> Obj:
        deployment = await kube.get(path)
        if _template(deployment) != template:
            deployment["spec"]["template"] = template
            deployment = await kube.request("PUT", path, body=deployment)
        return deployment

    deployment = await _on_conflict(attempt)
    await _wait_rollout(ctx, kube, params, deployment["metadata"]["generation"])
    return {"namespace": params.namespace, "deployment": params.name, "restored": True}


def _rollback_target(replica_sets: list[Obj], current: int, params: RollbackParams) -> Obj:
    if params.to_revision is not None:
        return _at_revision(replica_sets, params.to_revision, params)
    older = [rs for rs in replica_sets if 0 < _revision(rs) < current]
    if not older:
        raise TargetError(
            f"Deployment {params.name!r} in namespace {params.namespace!r} has no revision "
            f"before {current} to roll back to",
            retryable=False,
        )
    return max(older, key=_revision)


def _at_revision(replica_sets: list[Obj], revision: int, params: RollbackParams) -> Obj:
    found = next((rs for rs in replica_sets if _revision(rs) == revision), None)
    if found is None:
        raise TargetError(
            f"Deployment {params.name!r} in namespace {params.namespace!r} has no revision "
            f"{revision} (no ReplicaSet keeps it)",
            retryable=False,
        )
    return found


# --- resources: a container's memory --------------------------------------------------------

MI = 1024**2
DEFAULT_MEMORY_FACTOR = 1.5
MAX_MEMORY_FACTOR = 4.0


def memory_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity ("512Mi", "1.5Gi", "129e6") in bytes, rounded up."""
    value = Decimal(parse_quantity(quantity))  # type: ignore[no-untyped-call]
    return int(value.to_integral_value(rounding=ROUND_CEILING))


def memory_text(size: int) -> str:
    """Bytes as the API would write them: the largest binary unit that divides them."""
    for unit, scale in (("Gi", 1024**3), ("Mi", MI), ("Ki", 1024)):
        if size % scale == 0:
            return f"{size // scale}{unit}"
    return str(size)


def _memory_quantity(value: str) -> str:
    try:
        size = memory_bytes(value)
    except (ValueError, ArithmeticError):
        raise ValueError(f"{value!r} is not a memory quantity (e.g. 512Mi, 2Gi)") from None
    if size <= 0:
        raise ValueError(f"{value!r}: a memory limit must be above 0")
    return value


Memory = Annotated[str, AfterValidator(_memory_quantity)]


class MemoryBounds(BaseModel):
    """The params that bound how far ``set_resources`` goes. The registry reads them alone to
    judge a step's risk from a plan, where other params may still be placeholders."""

    model_config = ConfigDict(extra="ignore")

    memory_limit: Memory | None = Field(
        default=None, description="an absolute new limit, instead of a factor"
    )
    ceiling: Memory = Field(default="4Gi", description="no limit is ever set above this")
    approve_above: Memory = Field(
        default="2Gi",
        description="a step that can set a limit above this is high risk (approval asks): "
        "memory_limit above it, or a factor with a ceiling above it",
    )

    def highest_limit(self) -> int:
        """The highest limit the step can set: its memory_limit, else the ceiling."""
        return memory_bytes(self.memory_limit or self.ceiling)


def set_resources_risk(params: dict[str, Any]) -> RiskLevel:
    bounds = MemoryBounds.model_validate(params)
    above = bounds.highest_limit() > memory_bytes(bounds.approve_above)
    return RiskLevel.HIGH if above else RiskLevel.MEDIUM


class SetResourcesParams(_WaitParams, MemoryBounds):
    model_config = ConfigDict(extra="forbid")

    name: Name = Field(description="the Deployment or StatefulSet")
    kind: Literal["deployment", "statefulset"] = "deployment"
    container: Name | None = Field(default=None, description="default: the first container")
    memory_factor: float | None = Field(
        default=None,
        gt=1,
        le=MAX_MEMORY_FACTOR,
        description=f"multiply the current limit (default {DEFAULT_MEMORY_FACTOR:g} when no "
        "memory_limit is given)",
    )
    max_factor: float = Field(
        default=MAX_MEMORY_FACTOR, gt=1, le=MAX_MEMORY_FACTOR, description="memory_factor's bound"
    )
    wait_for: WaitFor = Field(
        default="started", description="Deployments: as for rollout_restart (StatefulSets: none)"
    )

    @model_validator(mode="after")
    def _bounded(self) -> SetResourcesParams:
        if self.memory_factor is not None and self.memory_limit is not None:
            raise ValueError("give one of 'memory_factor' or 'memory_limit', not both")
        if self.factor > self.max_factor:
            raise ValueError(
                f"memory_factor {self.factor:g} is above max_factor {self.max_factor:g}"
            )
        if self.memory_limit is not None and self.highest_limit() > memory_bytes(self.ceiling):
            raise ValueError(
                f"memory_limit {self.memory_limit} is above the ceiling {self.ceiling}"
            )
        return self

    @property
    def factor(self) -> float:
        return self.memory_factor if self.memory_factor is not None else DEFAULT_MEMORY_FACTOR

    @property
    def what(self) -> str:
        kind = "Deployment" if self.kind == "deployment" else "StatefulSet"
        return f"{kind} {self.name!r} in namespace {self.namespace!r}"


async def set_resources(ctx: ActionContext, params: SetResourcesParams) -> Output:
    """Raise (or set) a container's memory limit, and its request so that it stays within the
    limit, in the workload's pod template (a rollout follows). The resources found and the
    values set are recorded on the workload with the key: a retry re-applies the same values,
    never the factor to an already raised limit."""
    kube = _kube(ctx)
    path = _apps(params.namespace, f"{params.kind}s", params.name)

    async def attempt() -> Output:
        obj = await kube.get(path)
        record = _ledger(obj, "set-resources", ctx.idempotency_key)
        if record is not None:
            container = _container(obj, str(record["container"]), params)
            previous: Obj = record["previous"]
            limit: str = record["limit"]
            request: str | None = record["request"]
        else:
            container = _container(obj, params.container, params)
            previous = json.loads(json.dumps(container.get("resources") or {}))
            limit, request = _raised(previous, params, f"container {container['name']!r}")
        current: Obj = container.get("resources") or {}
        if record is None or not _has_memory(current, limit, request):
            state = {"container": container["name"], "previous": previous}
            ledger = _ledger_patch(
                obj, "set-resources", ctx.idempotency_key, **state, limit=limit, request=request
            )
            obj["metadata"].setdefault("annotations", {}).update(ledger["annotations"])
            container["resources"] = _with_memory(current, limit, request)
            obj = await kube.request("PUT", path, body=obj)
        return {
            "container": container["name"],
            "previous": previous,
            "memory_limit": limit,
            "memory_request": request,
            "replayed": record is not None,
            "generation": obj["metadata"]["generation"],
        }

    result = await _on_conflict(attempt)
    await _wait_resources(ctx, kube, params, int(result.pop("generation")))
    return {"namespace": params.namespace, "kind": params.kind, "name": params.name, **result}


async def restore_resources(
    ctx: ActionContext, params: SetResourcesParams, output: Output
) -> Output:
    """Put back exactly the container's resources found by the first attempt: from the step's
    output, or, when the step failed after its write (no output), from its record."""
    kube = _kube(ctx)
    path = _apps(params.namespace, f"{params.kind}s", params.name)
    done = {"namespace": params.namespace, "kind": params.kind, "name": params.name}

    async def attempt() -> tuple[str, Obj, int] | None:
        obj = await kube.get(path)
        found = output if "previous" in output else _ledger(obj, "set-resources", _forward(ctx))
        if found is None:
            return None
        name, previous = str(found["container"]), found["previous"]
        container = _container(obj, name, params)
        if (container.get("resources") or {}) != previous:
            container["resources"] = previous
            obj = await kube.request("PUT", path, body=obj)
        return name, previous, int(obj["metadata"]["generation"])

    restored = await _on_conflict(attempt)
    if restored is None:
        return {**done, "restored": None, "reason": "the step changed nothing"}
    name, previous, generation = restored
    await _wait_resources(ctx, kube, params, generation)
    return {**done, "container": name, "restored": previous}


def _forward(ctx: ActionContext) -> str:
    """The key of the step a compensation undoes (``CompensateStepInput.idempotency_key`` is
    the forward step's key + ``/compensate``): its record is under that key."""
    return ctx.idempotency_key.removesuffix("/compensate")


def _container(obj: Obj, name: str | None, params: SetResourcesParams) -> Obj:
    containers: list[Obj] = obj["spec"]["template"]["spec"].get("containers") or []
    if name is None and containers:
        return containers[0]
    found = next((c for c in containers if c.get("name") == name), None)
    if found is None:
        names = ", ".join(str(c.get("name")) for c in containers) or "none"
        raise TargetError(
            f"{params.what} has no container {name!r} (containers: {names})", retryable=False
        )
    return found


def _memory_of(resources: Obj, group: str) -> str | None:
    value = (resources.get(group) or {}).get("memory")
    return None if value is None else str(value)


def _raised(previous: Obj, params: SetResourcesParams, container: str) -> tuple[str, str | None]:
    """The new memory limit and request: the request keeps within the limit (scaled by the
    same factor, or lowered to an absolute limit below it); no request stays none."""
    ceiling = memory_bytes(params.ceiling)
    old_limit = _memory_of(previous, "limits")
    old_request = _memory_of(previous, "requests")
    if params.memory_limit is not None:
        limit = memory_bytes(params.memory_limit)
        if old_request is None:
            return memory_text(limit), None
        keep = memory_bytes(old_request) <= limit
        return memory_text(limit), old_request if keep else memory_text(limit)
    if old_limit is None:
        raise TargetError(
            f"{container} of {params.what} has no memory limit to multiply: give memory_limit",
            retryable=False,
        )
    limit = min(_scaled(old_limit, params.factor), ceiling)
    if limit <= memory_bytes(old_limit):
        raise TargetError(
            f"{container} of {params.what} has a memory limit of {old_limit}, already at or "
            f"above the ceiling {params.ceiling}: it cannot be raised",
            retryable=False,
        )
    if old_request is None:
        return memory_text(limit), None
    return memory_text(limit), memory_text(min(_scaled(old_request, params.factor), limit))


def _scaled(quantity: str, factor: float) -> int:
    """``quantity`` times ``factor``, rounded up to a whole MiB."""
    raised = Decimal(memory_bytes(quantity)) * Decimal(str(factor)) / MI
    return int(raised.to_integral_value(rounding=ROUND_CEILING)) * MI


def _has_memory(resources: Obj, limit: str, request: str | None) -> bool:
    def same(group: str, wanted: str) -> bool:
        found = _memory_of(resources, group)
        return found is not None and memory_bytes(found) == memory_bytes(wanted)

    return same("limits", limit) and (request is None or same("requests", request))


def _with_memory(resources: Obj, limit: str, request: str | None) -> Obj:
    updated: Obj = json.loads(json.dumps(resources))
    updated.setdefault("limits", {})["memory"] = limit
    if request is not None:
        updated.setdefault("requests", {})["memory"] = request
    return updated


async def _wait_resources(
    ctx: ActionContext, kube: KubeApi, params: SetResourcesParams, generation: int
) -> None:
    # A StatefulSet replaces its pods one at a time, highest ordinal first, and only once the
    # previous one is ready: whether that went well is validation's judgement.
    if params.kind == "deployment":
        rollout = RolloutParams(
            namespace=params.namespace,
            name=params.name,
            wait_for=params.wait_for,
            timeout_s=params.timeout_s,
        )
        await _wait_rollout(ctx, kube, rollout, generation)


# --- ConfigMap, node, Service ---------------------------------------------------------------


class PatchConfigMapParams(_Params):
    name: Name = Field(description="the ConfigMap")
    data: dict[str, str | None] = Field(min_length=1, description="keys to set; null removes a key")


async def patch_configmap(ctx: ActionContext, params: PatchConfigMapParams) -> Output:
    kube = _kube(ctx)
    path = _core(params.namespace, "configmaps", params.name)

    async def attempt() -> tuple[dict[str, str | None], bool]:
        configmap = await kube.get(path)
        data = configmap.get("data") or {}
        record = _ledger(configmap, "patch-configmap", ctx.idempotency_key)
        previous = record["previous"] if record else {k: data.get(k) for k in params.data}
        if record is None or any(data.get(k) != v for k, v in params.data.items()):
            meta = _ledger_patch(
                configmap, "patch-configmap", ctx.idempotency_key, previous=previous
            )
            await kube.merge_patch(path, {"metadata": meta, "data": params.data})
        return previous, record is not None

    previous, replayed = await _on_conflict(attempt)
    return {
        "namespace": params.namespace,
        "configmap": params.name,
        "previous": previous,
        "applied": params.data,
        "replayed": replayed,
    }


async def restore_configmap(
    ctx: ActionContext, params: PatchConfigMapParams, output: Output
) -> Output:
    previous: dict[str, str | None] = output["previous"]
    path = _core(params.namespace, "configmaps", params.name)
    await _kube(ctx).merge_patch(path, {"data": previous})
    return {"namespace": params.namespace, "configmap": params.name, "restored": previous}


class NodeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node: Name = Field(description="the node's name")


async def cordon(ctx: ActionContext, params: NodeParams) -> Output:
    return await _set_unschedulable(ctx, params.node, True)


async def uncordon(ctx: ActionContext, params: NodeParams) -> Output:
    return await _set_unschedulable(ctx, params.node, False)


async def _restore_schedulable(ctx: ActionContext, params: NodeParams, output: Output) -> Output:
    return await _set_unschedulable(ctx, params.node, bool(output["was_unschedulable"]))


async def _set_unschedulable(ctx: ActionContext, node: str, value: bool) -> Output:
    kube = _kube(ctx)
    path = f"/api/v1/nodes/{node}"

    async def attempt() -> tuple[bool, bool]:
        obj = await kube.get(path)
        record = _ledger(obj, "unschedulable", ctx.idempotency_key)
        was = bool(record["was"]) if record else bool(obj["spec"].get("unschedulable"))
        if record is None or bool(obj["spec"].get("unschedulable")) != value:
            meta = _ledger_patch(obj, "unschedulable", ctx.idempotency_key, was=was)
            # false is the default and kubectl leaves it unset: null removes the field.
            await kube.merge_patch(
                path, {"metadata": meta, "spec": {"unschedulable": value or None}}
            )
        return was, record is not None

    was, replayed = await _on_conflict(attempt)
    return {"node": node, "was_unschedulable": was, "unschedulable": value, "replayed": replayed}


class DrainParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node: Name = Field(description="the node's name")
    max_pods: int = Field(default=10, ge=1, le=100, description="evict at most this many pods")
    allow_bare: bool = Field(
        default=False,
        description="also evict pods that no controller owns: nothing recreates them",
    )
    grace_period_s: int | None = Field(default=None, ge=0, description="default: the pod's own")
    timeout_s: float | None = Field(
        default=None,
        gt=0,
        le=3600,
        description="how long to retry evictions a PodDisruptionBudget refuses and to wait for "
        "the pods to be gone (default: worker setting)",
    )


EVICTION_BACKOFF_S = (0.5, 5.0)
MIRROR_POD = "kubernetes.io/config.mirror"


async def drain(ctx: ActionContext, params: DrainParams) -> Output:
    """Like ``kubectl drain``: cordon the node, evict its pods through the Eviction API (which
    keeps PodDisruptionBudgets), skipping DaemonSet and mirror pods, and wait for them to be
    gone. The pods to evict are chosen (and bounded by ``max_pods``) before anything changes,
    then recorded on the node with the key and whether it was cordoned already, in the same
    write as the cordon: a retry evicts the same pods, and the compensation uncordons only a
    node this step cordoned. On a node that is not ready, a pod left terminating counts as gone
    (listed in ``terminating``): no kubelet is there to confirm that it stopped."""
    kube = _kube(ctx)
    path = f"/api/v1/nodes/{params.node}"
    timeout_s = _timeout(ctx, params.timeout_s)
    deadline = time.monotonic() + timeout_s

    async def attempt() -> tuple[bool, list[dict[str, str]], list[str], bool]:
        node = await kube.get(path)
        record = _ledger(node, "drain", ctx.idempotency_key)
        if record is not None:
            return bool(record["was_unschedulable"]), record["pods"], record["skipped"], True
        was = bool(node["spec"].get("unschedulable"))
        listed = await kube.get("/api/v1/pods", fieldSelector=f"spec.nodeName={params.node}")
        chosen, skipped = _drain_choice(listed["items"], params)
        state = {"was_unschedulable": was, "pods": chosen, "skipped": skipped}
        meta = _ledger_patch(node, "drain", ctx.idempotency_key, **state)
        await kube.merge_patch(path, {"metadata": meta, "spec": {"unschedulable": True}})
        return was, chosen, skipped, False

    was, chosen, skipped, replayed = await _on_conflict(attempt)
    version = await _eviction_version(kube) if chosen else ""
    for ref in chosen:
        await _evict(ctx, kube, ref, params, version, deadline, timeout_s)

    async def gone() -> list[str] | None:
        """None while an evicted pod remains; then those left terminating on a node that is
        not ready (no kubelet there to confirm they stopped: their deletion is accepted, and
        whether their replacements serve is validation's judgement)."""
        node_ready = _node_ready(await kube.get(path))
        terminating = []
        for ref in chosen:
            pod = await kube.find(_core(ref["namespace"], "pods", ref["name"]))
            if pod is None or pod["metadata"]["uid"] != ref["uid"]:
                continue
            if node_ready or not pod["metadata"].get("deletionTimestamp"):
                return None
            terminating.append(f"{ref['namespace']}/{ref['name']}")
        return terminating

    what = f"the {len(chosen)} pods evicted from node {params.node!r} to be gone"
    terminating = await _wait_until(ctx, what, max(deadline - time.monotonic(), 1.0), gone)
    return {
        "node": params.node,
        "was_unschedulable": was,
        "cordoned": not was,
        "evicted": [f"{ref['namespace']}/{ref['name']}" for ref in chosen],
        "terminating": terminating,
        "skipped": skipped,
        "replayed": replayed,
    }


def _node_ready(node: Obj) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


async def undrain(ctx: ActionContext, params: DrainParams, output: Output) -> Output:
    """Uncordon the node, if this step cordoned it: as its output says, or, when the step
    failed (a PodDisruptionBudget held a pod past the timeout), as its record on the node says.
    Evicted pods are not brought back: their controllers have replaced them elsewhere."""
    was = output.get("was_unschedulable")
    if was is None:
        node = await _kube(ctx).get(f"/api/v1/nodes/{params.node}")
        record = _ledger(node, "drain", _forward(ctx))
        if record is None:
            return {"node": params.node, "uncordoned": False, "reason": "the step changed nothing"}
        was = record["was_unschedulable"]
    if was:
        return {"node": params.node, "uncordoned": False, "reason": "it was cordoned before"}
    await _set_unschedulable(ctx, params.node, False)
    return {"node": params.node, "uncordoned": True}


def _drain_choice(pods: list[Obj], params: DrainParams) -> tuple[list[dict[str, str]], list[str]]:
    """The pods to evict (as refs) and those left (``ns/name (why)``); refuses a bare pod
    (unless allowed) and more than ``max_pods`` pods, before anything changes."""
    chosen: list[dict[str, str]] = []
    skipped: list[str] = []
    bare: list[str] = []
    for pod in sorted(pods, key=lambda p: (p["metadata"]["namespace"], p["metadata"]["name"])):
        meta = pod["metadata"]
        where = f"{meta['namespace']}/{meta['name']}"
        owner = _controller_key(pod)
        if owner.startswith("DaemonSet/"):
            skipped.append(f"{where} (DaemonSet: its controller would put it back)")
        elif MIRROR_POD in _annotations(pod):
            skipped.append(f"{where} (mirror pod: the kubelet runs it from a file)")
        elif meta.get("deletionTimestamp"):
            skipped.append(f"{where} (already terminating)")
        else:
            if not owner:
                bare.append(where)
            chosen.append(
                {"namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"]}
            )
    if bare and not params.allow_bare:
        raise TargetError(
            f"node {params.node!r} runs pods no controller owns ({', '.join(bare[:5])}): "
            "evicting them would lose them for good; allow_bare: true evicts them anyway",
            retryable=False,
        )
    if len(chosen) > params.max_pods:
        raise TargetError(
            f"node {params.node!r} has {len(chosen)} pods to evict, more than max_pods "
            f"{params.max_pods}: nothing was changed",
            retryable=False,
        )
    return chosen, skipped


async def _eviction_version(kube: KubeApi) -> str:
    """The Eviction's apiVersion as the server's ``pods/eviction`` subresource declares it (what
    ``kubectl drain`` reads too): policy/v1 from Kubernetes 1.22, policy/v1beta1 before."""
    resources: list[Obj] = (await kube.get("/api/v1")).get("resources") or []
    found: Obj = next((r for r in resources if r.get("name") == "pods/eviction"), {})
    return f"{found.get('group') or 'policy'}/{found.get('version') or 'v1'}"


async def _evict(
    ctx: ActionContext,
    kube: KubeApi,
    ref: dict[str, str],
    params: DrainParams,
    version: str,
    deadline: float,
    timeout_s: float,
) -> None:
    """Evict one pod (``create_namespaced_pod_eviction``). A 429 is a PodDisruptionBudget
    that allows no disruption now: try again, backing off, until the deadline."""
    ns, name = ref["namespace"], ref["name"]
    delete_options: Obj = {"preconditions": {"uid": ref["uid"]}}
    if params.grace_period_s is not None:
        delete_options["gracePeriodSeconds"] = params.grace_period_s
    body = {
        "apiVersion": version,
        "kind": "Eviction",
        "metadata": {"name": name, "namespace": ns},
        "deleteOptions": delete_options,
    }
    backoff, most = EVICTION_BACKOFF_S
    while True:
        ctx.heartbeat({"evicting": f"{ns}/{name}"})
        # Evicted already (by an earlier attempt: gone, replaced, or terminating): done. Checked
        # first because an eviction whose uid precondition fails keeps the API server retrying
        # it for seconds (seen on Kubernetes 1.20) instead of answering 409 at once.
        pod = await kube.find(_core(ns, "pods", name))
        if pod is None or pod["metadata"]["uid"] != ref["uid"]:
            return
        if pod["metadata"].get("deletionTimestamp"):
            return
        try:
            await kube.request(
                "POST", _core(ns, "pods", name) + "/eviction", body=body, missing_ok=True
            )
            return
        except _Missing:
            return
        except KubernetesConflict as exc:
            refused = f"a conflicting update ({exc})"  # the pod changed under us: look again
        except KubernetesTooManyRequests as exc:
            refused = _budget_named(exc)
        if time.monotonic() + backoff > deadline:
            raise TargetError(
                f"could not evict pod {name!r} in namespace {ns!r} from node {params.node!r} "
                f"within {timeout_s:g}s: {refused}",
                retryable=False,
            )
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, most)


_BUDGET = re.compile(r"disruption budget (\S+)")


def _budget_named(exc: KubernetesTooManyRequests) -> str:
    """What the API said, naming the PodDisruptionBudget ("The disruption budget web needs 2
    healthy pods and has 2 currently")."""
    for cause in exc.causes:
        found = _BUDGET.search(cause)
        if found is not None:
            return f"PodDisruptionBudget {found.group(1)!r} allows no disruption now ({cause})"
    return f"a PodDisruptionBudget allows no disruption now ({exc})"


class SwitchServiceParams(_Params):
    name: Name = Field(description="the Service")
    selector: dict[str, str] = Field(
        min_length=1, description="the new pod selector, e.g. the backup's labels"
    )


async def switch_service(ctx: ActionContext, params: SwitchServiceParams) -> Output:
    kube = _kube(ctx)
    ns = params.namespace
    label_selector = ",".join(f"{k}={v}" for k, v in sorted(params.selector.items()))
    pods = await kube.get(_core(ns, "pods"), labelSelector=label_selector)
    if not any(_is_active(p) for p in pods["items"]):
        raise TargetError(
            f"no pod in namespace {ns!r} matches {label_selector!r}: switching Service "
            f"{params.name!r} to it would send its traffic nowhere",
            retryable=False,
        )

    async def attempt() -> tuple[dict[str, str], bool]:
        service = await kube.get(_core(ns, "services", params.name))
        record = _ledger(service, "switch-service", ctx.idempotency_key)
        current: dict[str, str] = service["spec"].get("selector") or {}
        previous = record["previous"] if record else current
        if record is None or current != params.selector:
            meta = _ledger_patch(service, "switch-service", ctx.idempotency_key, previous=previous)
            body = {"metadata": meta, "spec": {"selector": _replacing(current, params.selector)}}
            await kube.merge_patch(_core(ns, "services", params.name), body)
        return previous, record is not None

    previous, replayed = await _on_conflict(attempt)
    return {
        "namespace": ns,
        "service": params.name,
        "previous_selector": previous,
        "selector": params.selector,
        "replayed": replayed,
    }


async def switch_back(ctx: ActionContext, params: SwitchServiceParams, output: Output) -> Output:
    kube = _kube(ctx)
    path = _core(params.namespace, "services", params.name)
    previous: dict[str, str] = output["previous_selector"]

    async def attempt() -> None:
        service = await kube.get(path)
        current: dict[str, str] = service["spec"].get("selector") or {}
        meta = {"resourceVersion": service["metadata"]["resourceVersion"]}
        body = {"metadata": meta, "spec": {"selector": _replacing(current, previous)}}
        await kube.merge_patch(path, body)

    await _on_conflict(attempt)
    return {"namespace": params.namespace, "service": params.name, "selector": previous}


def _replacing(current: dict[str, str], wanted: dict[str, str]) -> dict[str, str | None]:
    """A merge patch turning one map into another: keys not wanted become null (removed)."""
    return {**{k: None for k in current if k not in wanted}, **wanted}


DELETE_POD = Action(
    name="kubernetes.delete_pod",
    params_model=DeletePodParams,
    risk=RiskLevel.MEDIUM,
    run=delete_pod,
    compensable=False,
    idempotency="the chosen pods are recorded on their controller with the key; a pod gone counts",
    description="Delete pods of ReplicaSets, StatefulSets or DaemonSets (by name or selector, "
    "at most max_pods) and wait for their controllers to replace them.",
)
ROLLOUT_RESTART = Action(
    name="kubernetes.rollout_restart",
    params_model=RolloutParams,
    risk=RiskLevel.MEDIUM,
    run=rollout_restart,
    compensable=False,
    idempotency="the restartedAt value is derived from the key: a retry patches the same value",
    description="Restart a Deployment's pods (restartedAt annotation) and wait for the rollout.",
)
SCALE = Action(
    name="kubernetes.scale",
    params_model=ScaleParams,
    risk=RiskLevel.MEDIUM,
    run=scale,
    compensate=unscale,
    idempotency="absolute count; the count found is recorded on the Deployment with the key",
    description="Scale a Deployment to an absolute replica count; compensation scales back.",
)
ROLLBACK = Action(
    name="kubernetes.rollback",
    params_model=RollbackParams,
    risk=RiskLevel.HIGH,
    run=rollback,
    compensate=roll_forward,
    idempotency="the revisions are recorded on the Deployment with the key",
    description="Roll a Deployment back to its previous revision; compensation rolls forward.",
)
PATCH_CONFIGMAP = Action(
    name="kubernetes.patch_configmap",
    params_model=PatchConfigMapParams,
    risk=RiskLevel.HIGH,
    run=patch_configmap,
    compensate=restore_configmap,
    idempotency="absolute values; the previous ones are recorded on the ConfigMap with the key",
    description="Set (or remove) ConfigMap keys; compensation restores the previous values.",
)
CORDON = Action(
    name="kubernetes.cordon",
    params_model=NodeParams,
    risk=RiskLevel.HIGH,
    run=cordon,
    compensate=_restore_schedulable,
    idempotency="absolute state; the state found is recorded on the node with the key",
    description="Mark a node unschedulable; compensation restores what it was.",
)
UNCORDON = Action(
    name="kubernetes.uncordon",
    params_model=NodeParams,
    risk=RiskLevel.MEDIUM,
    run=uncordon,
    compensate=_restore_schedulable,
    idempotency="absolute state; the state found is recorded on the node with the key",
    description="Mark a node schedulable; compensation restores what it was.",
)
SET_RESOURCES = Action(
    name="kubernetes.set_resources",
    params_model=SetResourcesParams,
    risk=RiskLevel.MEDIUM,
    risk_for=set_resources_risk,
    run=set_resources,
    compensate=restore_resources,
    idempotency="absolute values; the resources found and set are recorded on the workload "
    "with the key",
    description="Raise a container's memory limit by a bounded factor (or set it), never above "
    "the ceiling; high risk when it can go above approve_above; compensation restores the "
    "resources found.",
)
DRAIN = Action(
    name="kubernetes.drain",
    params_model=DrainParams,
    risk=RiskLevel.HIGH,
    run=drain,
    compensate=undrain,
    idempotency="the pods chosen and the cordon found are recorded on the node with the key",
    description="Cordon a node and evict its pods (Eviction API, PodDisruptionBudgets kept; "
    "DaemonSet and mirror pods stay); compensation uncordons a node it cordoned.",
)
SWITCH_SERVICE = Action(
    name="kubernetes.switch_service",
    params_model=SwitchServiceParams,
    risk=RiskLevel.HIGH,
    run=switch_service,
    compensate=switch_back,
    idempotency="absolute selector; the previous one is recorded on the Service with the key",
    description="Point a Service at other pods (failover); compensation switches back.",
)

KUBERNETES_ACTIONS: list[Action[Any]] = [
    DELETE_POD, ROLLOUT_RESTART, SCALE, ROLLBACK, SET_RESOURCES, PATCH_CONFIGMAP, CORDON, UNCORDON,
    DRAIN, SWITCH_SERVICE,
]  # fmt: skip
