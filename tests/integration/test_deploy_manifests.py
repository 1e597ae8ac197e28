"""The manifests of the worker and the intake (``deploy/kubernetes/*.yaml``) applied to a real
kube-apiserver as an operator would apply them (server-side apply, strict field validation;
objects that name no namespace go where the ServiceAccount lives, as worker.yaml's comment asks):
every object is accepted and reads back as written, the worker Deployment's controller makes pods
that run as the worker's ServiceAccount, and the RBAC is bound to that ServiceAccount: it may do
what the Kubernetes actions (and the reads of evidence, guardrails and validation) need, and
nothing outside. The intake needs no Kubernetes credentials and gets none.

Loading: the manifests are multi-document Kubernetes objects, for which selfheal has no model, so
``core/yaml_source.load_yaml`` (one document, validated into a pydantic model) does not fit. They
are read with ``yaml.load_all`` and that module's ``UniqueKeyLoader`` (a SafeLoader), which keeps
the door's one rule that matters here: a key given twice is refused, not half dropped.

Who the worker is comes from the ServiceAccount document and the Deployment's
``serviceAccountName``, never from the bindings' subjects: a binding that names another account
leaves the worker without its permissions, and the access reviews fail. The grants are asked of
the API server (SubjectAccessReview, with the groups a ServiceAccount token carries), and a few
are made for real by the admin client impersonating the worker.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml
from kubernetes.client import ApiClient

from selfheal.activities.actions.kubernetes import (
    CONTROLLERS,
    WORKLOADS,
    KubeApi,
    kubernetes_client,
)
from selfheal.activities.evidence.kubernetes import NODE_EVENTS_NAMESPACE
from selfheal.core.settings import KubernetesSettings
from selfheal.core.yaml_source import UniqueKeyLoader
from selfheal.domain import TargetError
from tests.integration.k8s_cluster import ROOT, Cluster

Obj = dict[str, Any]
DEPLOY = ROOT / "deploy" / "kubernetes"
FIELD_MANAGER = "selfheal-deploy-test"
APPLY_PATCH = "application/apply-patch+yaml"
REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
# A namespace the manifests bind nothing in: namespaced permissions must stop at its border.
ELSEWHERE = "kube-system"
WAIT_S = 30.0


# --- the manifests --------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    source: str
    """file:index, for messages"""
    doc: Obj


def load_manifests(directory: Path | None = None) -> list[Manifest]:
    found = []
    for path in sorted((directory or DEPLOY).glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        docs = yaml.load_all(text, Loader=UniqueKeyLoader)  # a SafeLoader subclass: safe
        found += [Manifest(f"{path.name}#{i}", d) for i, d in enumerate(docs) if d is not None]
    return found


def the_one(manifests: list[Manifest], kind: str) -> Obj:
    docs = [m.doc for m in manifests if m.doc["kind"] == kind]
    assert len(docs) == 1, f"expected one {kind} in {DEPLOY}, found {len(docs)}"
    return docs[0]


class Resource(NamedTuple):
    base: str
    """/api/v1 or /apis/GROUP/VERSION"""
    plural: str
    namespaced: bool

    def path(self, namespace: str, name: str = "") -> str:
        where = f"{self.base}/namespaces/{namespace}" if self.namespaced else self.base
        return f"{where}/{self.plural}" + (f"/{name}" if name else "")


async def discover(kube: KubeApi, api_version: str, kind: str) -> Resource:
    """Where the server serves ``kind`` (its discovery document), so that any kind a manifest
    adds later is applied the same way."""
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    listed = (await kube.get(base)).get("resources") or []
    for resource in listed:
        if resource.get("kind") == kind and "/" not in resource["name"]:
            return Resource(base, resource["name"], bool(resource["namespaced"]))
    raise AssertionError(f"the API server serves no {kind} in {api_version}")


def differences(wanted: Any, got: Any, at: str = "") -> list[str]:
    """Where ``got`` (read back) lost or changed what ``wanted`` (the manifest) says; fields the
    server adds (defaults, status, metadata it manages) are not differences."""
    if isinstance(wanted, dict):
        if not isinstance(got, dict):
            return [f"{at or '.'}: {got!r} instead of a mapping"]
        missing = [f"{at}.{key}: missing" for key in wanted if key not in got]
        return missing + [
            found
            for key, value in wanted.items()
            if key in got
            for found in differences(value, got[key], f"{at}.{key}")
        ]
    if isinstance(wanted, list):
        if not isinstance(got, list) or len(got) != len(wanted):
            return [f"{at}: {got!r} instead of {wanted!r}"]
        return [
            found
            for i, (w, g) in enumerate(zip(wanted, got, strict=True))
            for found in differences(w, g, f"{at}[{i}]")
        ]
    return [] if wanted == got else [f"{at}: {got!r} instead of {wanted!r}"]


# --- access reviews -------------------------------------------------------------------------


class Access(NamedTuple):
    verb: str
    resource: str
    """``pods`` or ``pods/eviction`` (a subresource); a non-resource URL starts with ``/``"""
    group: str = ""
    namespace: str = ""
    """"" for cluster-scoped resources, or a namespaced resource in every namespace"""
    name: str = ""

    def __str__(self) -> str:
        if self.resource.startswith("/"):
            return f"{self.verb} {self.resource}"
        group = f" (group {self.group!r})" if self.group else ""
        named = f" {self.name!r}" if self.name else ""
        where = f"in namespace {self.namespace!r}" if self.namespace else "cluster-wide"
        return f"{self.verb} {self.resource}{named}{group} {where}"


def account_user(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


def account_groups(namespace: str) -> list[str]:
    """The groups a ServiceAccount's token carries: a grant to one of them is not a binding to
    the worker, but the reviews must see what the worker's real token would get."""
    return ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"]


async def allowed(kube: KubeApi, user: str, groups: list[str], access: Access) -> bool:
    spec: Obj = {"user": user, "groups": groups}
    if access.resource.startswith("/"):
        spec["nonResourceAttributes"] = {"verb": access.verb, "path": access.resource}
    else:
        resource, _, subresource = access.resource.partition("/")
        spec["resourceAttributes"] = {
            "verb": access.verb,
            "group": access.group,
            "resource": resource,
            "subresource": subresource,
            "namespace": access.namespace,
            "name": access.name,
        }
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}
    status = (await kube.create(REVIEWS, review)).get("status") or {}
    return bool(status.get("allowed"))


async def verdicts(
    kube: KubeApi, user: str, groups: list[str], accesses: list[Access]
) -> dict[Access, bool]:
    answers = await asyncio.gather(*(allowed(kube, user, groups, a) for a in accesses))
    return dict(zip(accesses, answers, strict=True))


def granted_by(manifests: list[Manifest]) -> list[Access]:
    """Every permission the manifests' bindings give, where they give it: a RoleBinding's rules
    in its namespace, a ClusterRoleBinding's cluster-wide (every namespace)."""
    roles = {(m.doc["kind"], m.doc["metadata"]["name"]): m.doc for m in manifests}
    accesses: list[Access] = []
    for manifest in manifests:
        binding = manifest.doc
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        ref = binding["roleRef"]
        role = roles.get((ref["kind"], ref["name"]))
        assert role is not None, (
            f"{manifest.source}: binds {ref['kind']} {ref['name']!r}, not shipped"
        )
        namespace = (
            binding["metadata"].get("namespace", "") if binding["kind"] == "RoleBinding" else ""
        )
        for rule in role.get("rules") or []:
            for url in rule.get("nonResourceURLs") or []:
                accesses += [Access(verb, url) for verb in rule["verbs"]]
            for group in rule.get("apiGroups") or []:
                for resource in rule.get("resources") or []:
                    for verb in rule["verbs"]:
                        names = rule.get("resourceNames") or [""]
                        accesses += [Access(verb, resource, group, namespace, n) for n in names]
    return accesses


def acting_namespaces(manifests: list[Manifest]) -> list[str]:
    """The namespaces selfheal may act on: those the shipped RoleBindings bind it in."""
    return sorted(
        {m.doc["metadata"]["namespace"] for m in manifests if m.doc["kind"] == "RoleBinding"}
    )


# What the worker's Kubernetes calls need (activities/actions/kubernetes.py and the reads of
# guardrails, evidence and validation), written from the code rather than from rbac.yaml, so
# that a rule removed from rbac.yaml shows here. "acting": in every namespace selfheal may act
# on; "cluster": cluster-scoped, or in every namespace.
NEEDS: list[tuple[str, str, str, str, str]] = [
    # (why, verb, resource, group, scope)
    ("delete_pod, switch_service: pick pods", "list", "pods", "", "acting"),
    ("delete_pod, guardrails: read a pod", "get", "pods", "", "acting"),
    ("delete_pod", "delete", "pods", "", "acting"),
    *[
        ("delete_pod: its record on the controller", "patch", plural, "apps", "acting")
        for plural in CONTROLLERS.values()
    ],
    *[
        ("guardrails: a workload's replica count", "get", plural, "apps", "acting")
        for plural in WORKLOADS.values()
    ],
    (
        "rollout_restart, rollback: a Deployment's ReplicaSets",
        "list",
        "replicasets",
        "apps",
        "acting",
    ),
    ("scale, rollout_restart", "patch", "deployments", "apps", "acting"),
    ("rollback, set_resources (deployment)", "update", "deployments", "apps", "acting"),
    ("set_resources (statefulset)", "update", "statefulsets", "apps", "acting"),
    ("patch_configmap", "get", "configmaps", "", "acting"),
    ("patch_configmap", "patch", "configmaps", "", "acting"),
    ("switch_service", "get", "services", "", "acting"),
    ("switch_service", "patch", "services", "", "acting"),
    ("cordon, uncordon, drain", "get", "nodes", "", "cluster"),
    ("cordon, uncordon, drain", "patch", "nodes", "", "cluster"),
    ("drain: the node's pods, every namespace", "list", "pods", "", "cluster"),
    ("drain: wait until evicted pods are gone", "get", "pods", "", "cluster"),
    ("drain: evict through the Eviction API", "create", "pods/eviction", "", "cluster"),
    ("drain: the Eviction's version (discovery)", "get", "/api/v1", "", "cluster"),
    ("evidence, validation: a workload's pods", "list", "pods", "", "acting"),
]
# Reads of the Kubernetes evidence provider (activities/evidence/kubernetes.py) that rbac.yaml
# must also grant for a diagnosis from Kubernetes evidence to work in the cluster.
EVIDENCE_NEEDS: list[tuple[str, str, str, str, str]] = [
    ("evidence: a workload's events", "list", "events", "", "acting"),
    ("evidence: a StatefulSet's rollout", "get", "controllerrevisions", "apps", "acting"),
    ("evidence: a Deployment's ReplicaSets", "list", "replicasets", "apps", "acting"),
    ("evidence: a node's events", "list", "events", "", NODE_EVENTS_NAMESPACE),
    ("evidence: the pods' nodes", "get", "nodes", "", "cluster"),
]
# Never the worker's, in any namespace: secrets, exec, creating workloads, RBAC, namespaces.
NEVER: list[tuple[str, str, str]] = [
    ("get", "secrets", ""),
    ("list", "secrets", ""),
    ("create", "pods", ""),
    ("create", "pods/exec", ""),
    ("deletecollection", "pods", ""),
    ("create", "deployments", "apps"),
    ("delete", "deployments", "apps"),
    ("create", "rolebindings", "rbac.authorization.k8s.io"),
    ("escalate", "roles", "rbac.authorization.k8s.io"),
    ("bind", "clusterroles", "rbac.authorization.k8s.io"),
    ("impersonate", "serviceaccounts", ""),
]
NEVER_CLUSTER: list[tuple[str, str, str]] = [
    ("delete", "namespaces", ""),
    ("delete", "nodes", ""),
    ("create", "clusterrolebindings", "rbac.authorization.k8s.io"),
    ("impersonate", "users", ""),
    ("create", "certificatesigningrequests", "certificates.k8s.io"),
]


def expand(needs: list[tuple[str, str, str, str, str]], acting: list[str]) -> list[Access]:
    accesses = []
    for _why, verb, resource, group, scope in needs:
        if scope == "cluster":
            accesses.append(Access(verb, resource, group))
        elif scope == "acting":
            accesses += [Access(verb, resource, group, ns) for ns in acting]
        else:
            accesses.append(Access(verb, resource, group, scope))
    return accesses


# --- the applied manifests ------------------------------------------------------------------


@dataclass
class Applied:
    manifests: list[Manifest]
    live: list[tuple[Manifest, Obj]]
    """each manifest as applied (namespace filled in) and as read back"""
    install_namespace: str
    account: str
    """the worker's ServiceAccount, by name"""

    @property
    def user(self) -> str:
        return account_user(self.install_namespace, self.account)

    @property
    def groups(self) -> list[str]:
        return account_groups(self.install_namespace)


@pytest.fixture(scope="module")
async def applied(admin_api: ApiClient) -> AsyncIterator[Applied]:
    """The manifests applied; on the way out, what this module created is deleted again (the
    cluster is shared by the session)."""
    kube = KubeApi(admin_api)
    manifests = load_manifests()
    assert manifests, f"no manifests in {DEPLOY}"
    account = the_one(manifests, "ServiceAccount")["metadata"]
    assert account.get("namespace"), "the ServiceAccount names no namespace to install into"
    install_namespace = str(account["namespace"])
    namespaces = {install_namespace} | {
        m.doc["metadata"]["namespace"] for m in manifests if m.doc["metadata"].get("namespace")
    }
    created: list[str] = []  # paths, deleted in reverse
    try:
        for namespace in sorted(namespaces):
            if await kube.find(f"/api/v1/namespaces/{namespace}") is None:
                await kube.create("/api/v1/namespaces", {"metadata": {"name": namespace}})
                created.append(f"/api/v1/namespaces/{namespace}")
        live = []
        for manifest in manifests:
            doc = manifest.doc
            resource = await discover(kube, doc["apiVersion"], doc["kind"])
            if resource.namespaced:
                namespace = doc["metadata"].get("namespace", install_namespace)
                doc = {**doc, "metadata": {**doc["metadata"], "namespace": namespace}}
            path = resource.path(doc["metadata"].get("namespace", ""), doc["metadata"]["name"])
            existed = await kube.find(path) is not None
            await kube.request(
                "PATCH",
                path,
                body=doc,
                content_type=APPLY_PATCH,
                query={"fieldManager": FIELD_MANAGER, "force": "true", "fieldValidation": "Strict"},
            )
            if not existed:
                created.append(path)
            live.append((Manifest(manifest.source, doc), await kube.get(path)))
        yield Applied(manifests, live, install_namespace, str(account["name"]))
    finally:
        for path in reversed(created):
            await delete(kube, path)


async def delete(kube: KubeApi, path: str) -> None:
    if await kube.find(path) is not None:
        await kube.request("DELETE", path)


async def eventually(what: str, check: Callable[[], Awaitable[Any]]) -> Any:
    deadline = time.monotonic() + WAIT_S
    while not (result := await check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)
    return result


def component(applied: Applied, name: str) -> Obj:
    """The Deployment of label ``app.kubernetes.io/component: name``, as read back."""
    [found] = [
        live
        for m, live in applied.live
        if m.doc["kind"] == "Deployment"
        and live["metadata"].get("labels", {}).get("app.kubernetes.io/component") == name
    ]
    return found


# --- tests ----------------------------------------------------------------------------------


async def test_every_object_is_accepted_and_reads_back_as_written(applied: Applied) -> None:
    kinds = {m.doc["kind"] for m, _ in applied.live}
    assert {"ServiceAccount", "Deployment", "ClusterRole"} <= kinds
    assert kinds & {"RoleBinding", "ClusterRoleBinding"}
    for manifest, live in applied.live:
        assert live["kind"] == manifest.doc["kind"], manifest.source
        assert live["metadata"]["name"] == manifest.doc["metadata"]["name"], manifest.source
        assert live["metadata"].get("namespace") == manifest.doc["metadata"].get("namespace")
        # Labels, the Deployment's containers (image, args, env, ports, probes, resources),
        # the roles' rules and the bindings' subjects and roleRefs: everything written.
        lost = differences(manifest.doc, live)
        assert not lost, f"{manifest.source} ({manifest.doc['kind']}) read back changed: {lost}"


async def test_the_deployment_runs_its_pods_as_the_worker_service_account(
    applied: Applied, admin_api: ApiClient
) -> None:
    deployment = component(applied, "worker")
    spec = deployment["spec"]
    assert deployment["metadata"]["namespace"] == applied.install_namespace
    runs_as = spec["template"]["spec"].get("serviceAccountName")
    assert runs_as == applied.account, (
        f"the worker runs as ServiceAccount {runs_as!r}; rbac.yaml grants {applied.account!r}"
    )
    selector = ",".join(f"{k}={v}" for k, v in spec["selector"]["matchLabels"].items())
    path = f"/api/v1/namespaces/{applied.install_namespace}/pods"

    async def pods() -> list[Obj] | None:
        listed = await KubeApi(admin_api).get(path, labelSelector=selector)
        items: list[Obj] = listed["items"]
        return items if len(items) == spec["replicas"] else None

    # No kubelet: the pods stay Pending, but the controller made them from the template.
    made = await eventually(f"{spec['replicas']} worker pods", pods)
    wanted = spec["template"]["spec"]["containers"]
    for pod in made:
        assert pod["spec"]["serviceAccountName"] == applied.account
        for want, got in zip(wanted, pod["spec"]["containers"], strict=True):
            for field in ("name", "image", "args", "env", "envFrom", "ports"):
                assert got.get(field) == want.get(field), f"{pod['metadata']['name']}: {field}"


async def test_the_rbac_is_bound_to_the_worker_service_account(
    applied: Applied, admin_api: ApiClient
) -> None:
    kube = KubeApi(admin_api)
    grants = granted_by(applied.manifests)
    assert grants, "the manifests bind no permission"
    worker = await verdicts(kube, applied.user, applied.groups, grants)
    missing = [str(a) for a, ok in worker.items() if not ok]
    assert not missing, f"{applied.user} lacks what the bindings should give it: {missing}"
    # The grants are the worker's own, not its namespace's or every account's: another
    # ServiceAccount beside it, with the same groups, gets none of them.
    other = account_user(applied.install_namespace, f"{applied.account}-other")
    others = await verdicts(kube, other, applied.groups, grants)
    leaked = [str(a) for a, ok in others.items() if ok]
    assert not leaked, f"{other} may also: {leaked}"


async def test_the_worker_may_do_what_the_kubernetes_actions_need(
    applied: Applied, admin_api: ApiClient
) -> None:
    acting = acting_namespaces(applied.manifests)
    assert acting, "no RoleBinding: selfheal may act in no namespace"
    needs = expand(NEEDS, acting)
    found = await verdicts(KubeApi(admin_api), applied.user, applied.groups, needs)
    missing = [str(a) for a, ok in found.items() if not ok]
    assert not missing, f"deploy/kubernetes/rbac.yaml does not let the worker: {missing}"


async def test_the_worker_may_read_what_kubernetes_evidence_reads(
    applied: Applied, admin_api: ApiClient
) -> None:
    needs = expand(EVIDENCE_NEEDS, acting_namespaces(applied.manifests))
    found = await verdicts(KubeApi(admin_api), applied.user, applied.groups, needs)
    missing = [str(a) for a, ok in found.items() if not ok]
    assert not missing, f"deploy/kubernetes/rbac.yaml does not let the evidence provider: {missing}"


async def test_the_worker_may_do_nothing_outside(applied: Applied, admin_api: ApiClient) -> None:
    acting = acting_namespaces(applied.manifests)
    assert ELSEWHERE not in acting
    namespaces = [applied.install_namespace, *acting, ELSEWHERE, ""]
    forbidden = [
        Access(verb, resource, group, ns) for verb, resource, group in NEVER for ns in namespaces
    ]
    forbidden += [Access(verb, resource, group) for verb, resource, group in NEVER_CLUSTER]
    # What it does in the namespaces it acts on, it may not do where no RoleBinding is (in a
    # namespace of its choosing, or in its own), unless a ClusterRoleBinding gives it everywhere
    # (drain reads and evicts pods in every namespace).
    everywhere = {
        (a.verb, a.resource, a.group) for a in granted_by(applied.manifests) if not a.namespace
    }
    for outside in {ELSEWHERE, applied.install_namespace} - set(acting):
        forbidden += [
            a._replace(namespace=outside)
            for a in expand(NEEDS, acting)
            if a.namespace and (a.verb, a.resource, a.group) not in everywhere
        ]
    found = await verdicts(KubeApi(admin_api), applied.user, applied.groups, forbidden)
    granted = sorted({str(a) for a, ok in found.items() if ok})
    assert not granted, f"{applied.user} may do more than its actions need: {granted}"


@pytest.fixture
async def as_worker(k8s_cluster: Cluster, applied: Applied) -> AsyncIterator[KubeApi]:
    """The admin's client impersonating the worker: its requests are authorized as the worker's
    (a system:masters user may impersonate anyone)."""
    api = kubernetes_client(KubernetesSettings(kubeconfig=k8s_cluster.kubeconfig))
    assert api is not None
    api.set_default_header("Impersonate-User", applied.user)
    yield KubeApi(api)
    api.close()


async def test_real_requests_as_the_worker_succeed_or_are_forbidden_as_reviewed(
    applied: Applied, admin_api: ApiClient, as_worker: KubeApi
) -> None:
    admin = KubeApi(admin_api)
    suffix = uuid.uuid4().hex[:8]
    node = f"deploy-test-{suffix}"
    acting = acting_namespaces(applied.manifests)[0]
    pod = {
        "metadata": {"name": f"deploy-test-{suffix}"},
        "spec": {"containers": [{"name": "app", "image": "shop:1"}]},
    }
    await admin.create("/api/v1/nodes", {"metadata": {"name": node}})
    await admin.create(f"/api/v1/namespaces/{acting}/pods", pod)
    try:
        # cordon: patch a node (cluster-wide binding)
        await as_worker.merge_patch(f"/api/v1/nodes/{node}", {"spec": {"unschedulable": True}})
        assert (await admin.get(f"/api/v1/nodes/{node}"))["spec"]["unschedulable"] is True
        # drain: list pods in every namespace
        assert "items" in await as_worker.get("/api/v1/pods", limit="1")
        # delete_pod in a namespace it acts on (RoleBinding)
        await as_worker.request(
            "DELETE", f"/api/v1/namespaces/{acting}/pods/{pod['metadata']['name']}"
        )

        denied = [
            ("DELETE", f"/api/v1/nodes/{node}", "'delete' on 'nodes'"),
            (
                "GET",
                f"/api/v1/namespaces/{applied.install_namespace}/secrets",
                f"'list' on 'secrets' (API group 'core') in namespace "
                f"{applied.install_namespace!r}",
            ),
            (
                "DELETE",
                f"/api/v1/namespaces/{ELSEWHERE}/pods/anything",
                f"'delete' on 'pods' (API group 'core') in namespace {ELSEWHERE!r}",
            ),
        ]
        for method, path, permission in denied:
            with pytest.raises(TargetError) as refused:
                await as_worker.request(method, path)
            assert f"missing permission {permission}" in str(refused.value)
            assert f"for user {applied.user!r}" in str(refused.value)
    finally:
        await delete(admin, f"/api/v1/nodes/{node}")
        await delete(admin, f"/api/v1/namespaces/{acting}/pods/{pod['metadata']['name']}")


def test_the_loader_refuses_a_key_given_twice(tmp_path: Path) -> None:
    """The loader this module reads the manifests with is strict, as kubectl is."""
    (tmp_path / "twice.yaml").write_text("kind: A\n---\nkind: B\nkind: C\n")
    with pytest.raises(yaml.constructor.ConstructorError, match="key 'kind' appears twice"):
        load_manifests(tmp_path)


async def test_the_intake_runs_without_kubernetes_credentials(applied: Applied) -> None:
    """``selfheal serve`` only talks to Temporal and Postgres: its pods get no token, and the
    Service Alertmanager posts to selects them on the port the intake listens on."""
    intake = component(applied, "intake")
    pod = intake["spec"]["template"]["spec"]
    assert pod.get("automountServiceAccountToken") is False
    assert pod.get("serviceAccountName") in (None, "default")
    [container] = pod["containers"]
    assert container["args"][:1] == ["serve"]
    port = int(container["args"][container["args"].index("--port") + 1])
    [service] = [live for m, live in applied.live if m.doc["kind"] == "Service"]
    labels = intake["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    [exposed] = service["spec"]["ports"]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert named[exposed["targetPort"]] == port
