"""Kubernetes actions: restart, scale, roll back, patch a ConfigMap, cordon, fail a Service over.

The worker builds one ``ApiClient`` from its settings (``kubernetes_services``) and actions find
it in ``ctx.services["kubernetes"]``. Objects travel as plain JSON dicts (the API's own shape);
blocking client calls run in a thread.

Idempotency. A step retried after a worker crash must apply once, and its compensation must
restore the state found by the *first* attempt, not the state the first attempt left behind. So
each action that records "what it found" writes that record, with the step's idempotency key,
in an annotation ``selfheal.io/<action>`` on the object it changes, in the same write as the
change itself. A retry that finds its own key there replays: it reuses the recorded state and
re-applies the (absolute) change, which is a no-op when it already took effect. Pods are deleted
for good, so ``delete_pod`` writes its record on the pod's ReplicaSet before deleting.

Errors: 403 and 404 are non-retryable and name the missing permission or object; a 409 (someone
else wrote the object between our read and write) re-reads and re-applies; a wait that times out
is retryable. There is no readiness wait: whether the change healed the service is validation's
judgement, so actions wait for the controller to act (pods replaced, a new ReplicaSet), not for
pods to become ready, unless asked (``wait_for: complete``).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar

import urllib3
from kubernetes import config
from kubernetes.client import ApiClient, Configuration
from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel, ConfigDict, Field, model_validator

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
            return await asyncio.to_thread(self._call, method, path, body, query, content_type)
        except ApiException as exc:
            if missing_ok and exc.status == 404:
                raise _Missing from exc
            raise _api_error(method, path, exc) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise TargetError(f"kubernetes API unreachable ({method} {path}): {exc}") from exc

    def _call(
        self,
        method: str,
        path: str,
        body: Any,
        query: dict[str, str] | None,
        content_type: str | None,
    ) -> Obj:
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
    retryable = status >= 500 or status == 429
    return TargetError(f"kubernetes refused {call}: HTTP {status}: {message}", retryable=retryable)


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


class DeletePodParams(_WaitParams):
    name: Name | None = Field(default=None, description="one pod by name")
    selector: str | None = Field(
        default=None, min_length=1, description="label selector, e.g. app=shop"
    )
    max_pods: int = Field(default=1, ge=1, le=100, description="delete at most this many pods")
    grace_period_s: int | None = Field(default=None, ge=0, description="default: the pod's own")

    @model_validator(mode="after")
    def _one_target(self) -> DeletePodParams:
        if (self.name is None) == (self.selector is None):
            raise ValueError("give exactly one of 'name' (a pod) or 'selector' (labels)")
        return self


async def delete_pod(ctx: ActionContext, params: DeletePodParams) -> Output:
    kube = _kube(ctx)
    ns = params.namespace
    started = time.monotonic()

    async def choose() -> tuple[list[dict[str, str]], bool] | None:
        if params.name is not None:
            pod = await kube.find(_core(ns, "pods", params.name))
            if pod is None:
                return None
            pods = [pod]
        else:
            selector = params.selector or ""
            pods = (await kube.get(_core(ns, "pods"), labelSelector=selector))["items"]
        owners = await _replica_sets_of(kube, ns, pods)
        recorded = [
            ref
            for rs in owners.values()
            if (record := _ledger(rs, "delete-pod", ctx.idempotency_key)) is not None
            for ref in record["pods"]
        ]
        if recorded:
            return recorded, True
        chosen = _choose_pods(pods, params)
        for ref in chosen:
            if ref["owner"] not in owners:
                raise TargetError(
                    f"pod {ref['name']!r} in namespace {ns!r} is not managed by a ReplicaSet: "
                    "deleting it would not restart it",
                    retryable=False,
                )
        # Recorded before deleting: the pods will be gone, their ReplicaSet stays.
        for rs_name, rs in owners.items():
            mine = [ref for ref in chosen if ref["owner"] == rs_name]
            if mine:
                meta = _ledger_patch(rs, "delete-pod", ctx.idempotency_key, pods=mine)
                await kube.merge_patch(_apps(ns, "replicasets", rs_name), {"metadata": meta})
        return chosen, False

    selected = await _on_conflict(choose)
    if selected is None:
        # Gone already: deleted by an earlier attempt of this step, or by someone else.
        return {"namespace": ns, "deleted": [], "already_gone": True, "replayed": False}
    chosen, replayed = selected
    for ref in chosen:
        await _delete(kube, ns, ref, params.grace_period_s)
    deleted_uids = {ref["uid"] for ref in chosen}
    touched = sorted({ref["owner"] for ref in chosen})
    for rs_name in touched:
        await _wait_replaced(ctx, kube, ns, rs_name, deleted_uids, _timeout(ctx, params.timeout_s))
    return {
        "namespace": ns,
        "deleted": [ref["name"] for ref in chosen],
        "replica_sets": touched,
        "replayed": replayed,
        "waited_s": round(time.monotonic() - started, 3),
    }


async def _replica_sets_of(kube: KubeApi, ns: str, pods: list[Obj]) -> dict[str, Obj]:
    names = sorted({name for p in pods if (name := _owner_name(p)) is not None})
    return {name: await kube.get(_apps(ns, "replicasets", name)) for name in names}


def _owner_name(pod: Obj) -> str | None:
    owner = _controller(pod)
    return str(owner["name"]) if owner and owner.get("kind") == "ReplicaSet" else None


def _pod_ref(pod: Obj) -> dict[str, str]:
    meta = pod["metadata"]
    return {"name": meta["name"], "uid": meta["uid"], "owner": _owner_name(pod) or ""}


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
    # The uid precondition keeps a retry from deleting a replacement of the same name.
    body: Obj = {"preconditions": {"uid": ref["uid"]}}
    if grace is not None:
        body["gracePeriodSeconds"] = grace
    try:
        await kube.request("DELETE", _core(ns, "pods", ref["name"]), body=body, missing_ok=True)
    except (_Missing, KubernetesConflict):
        return


async def _wait_replaced(
    ctx: ActionContext, kube: KubeApi, ns: str, rs_name: str, deleted: set[str], timeout_s: float
) -> None:
    async def replaced() -> bool | None:
        rs = await kube.get(_apps(ns, "replicasets", rs_name))
        pods = await kube.get(
            _core(ns, "pods"), labelSelector=_selector_string(rs["spec"]["selector"])
        )
        uid = rs["metadata"]["uid"]
        live = [
            p
            for p in pods["items"]
            if _is_active(p)
            and p["metadata"]["uid"] not in deleted
            and (_controller(p) or {}).get("uid") == uid
        ]
        return True if len(live) >= int(rs["spec"].get("replicas") or 0) else None

    await _wait_until(
        ctx, f"ReplicaSet {rs_name!r} to replace its deleted pods", timeout_s, replaced
    )


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
    idempotency="the chosen pods are recorded on their ReplicaSet with the key; a pod gone counts",
    description="Delete pods (by name or selector, at most max_pods) and wait for replacements.",
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
    DELETE_POD, ROLLOUT_RESTART, SCALE, ROLLBACK, PATCH_CONFIGMAP, CORDON, UNCORDON, SWITCH_SERVICE,
]  # fmt: skip
