"""Kubernetes healings end to end (issue 11 §4): a real kube-apiserver and controller-manager,
a node agent playing the kubelet (devstack/kube_agent.py), the real worker (``build_activities`` and
``build_worker``: the Kubernetes evidence provider, actions and validation against the API), the
real Temporal dev server and Postgres knowledge base, and the real intake app, to which the
kube-prometheus alerts are posted as Alertmanager posts them.

Each test has a namespace of its own and a copy of runbooks/ whose service catalog declares the
test's Deployment (kind deployment, that namespace) as the target: the alert's labels resolve to
it through the catalog. The node agent brings the fault from the pod template, so a rollout (a
strategic-merge patch of the Deployment, as ``kubectl`` sends it) brings a crash loop, and a
memory limit below the pod's declared need brings OOM kills; the catalog also declares the
test's two nodes (another service), for the NotReady node.

The node plan is validated by its alert's resolution (``alert_resolved``): with no Alertmanager
to ask, that criterion holds only if the ``resolved`` report came before validation began, so
its test runs a real Alertmanager, where the alert fires and resolves, and posts the intake the
webhook with Alertmanager's fingerprint, as Alertmanager would.

Approval: the default policy is kept (plans of risk high ask a human) and the tests approve
through the door (``Healings.decide``, the workflow's update), the path operators use. The
rollback plan is high risk. The shipped raise-memory-limit plan is medium: ``kubernetes.
set_resources`` judges its risk from the plan's params before the current limit is known, and
with a factor the highest limit it may set is its ceiling, which the shipped plan puts at 2Gi,
not above ``approve_above`` (2Gi by default); so an OOM healing runs without asking.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from kubernetes.client import ApiClient
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client

from selfheal.activities.actions import default_registry
from selfheal.activities.actions.kubernetes import KubeApi
from selfheal.api.app import IntakeDeps, create_app
from selfheal.core.catalog import load_services
from selfheal.core.database import make_engine, make_session_factory
from selfheal.core.settings import (
    EvidenceSettings,
    HealingSettings,
    IntakeSettings,
    KubernetesSettings,
    Settings,
)
from selfheal.devstack.kube_agent import BEHAVIOR, CRASHLOOP, MEMORY_NEED, UNREADY, NodeAgent
from selfheal.domain import HealingOutcome, HealingStatus, StepStatus
from selfheal.healings import Healings
from selfheal.models.catalog import load_catalog
from selfheal.models.knowledge_base import KnowledgeBase
from selfheal.worker import build_activities, build_worker
from tests.e2e.peers import Alertmanager, run_alertmanager
from tests.integration.demo_stack import free_port
from tests.integration.k8s_cluster import Cluster
from tests.integration.test_node_agent import (
    delete_namespace,
    deployment,
    eventually,
    get_deployment,
    pods,
    rolled_out,
    running_and_ready,
)
from tests.integration.test_workflow_logic import status_when

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
APP = "web"
INGEST = {"Authorization": "Bearer ingest-token"}
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
KSM = {
    "job": "kube-state-metrics",
    "service": "kube-prometheus-stack-kube-state-metrics",
    "endpoint": "http",
    "instance": "10.0.3.7:8080",
}
HEALING_TIMEOUT_S = 60.0
Obj = dict[str, Any]


@pytest.fixture(scope="module")
def kb_sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    factory = make_session_factory(engine)
    KnowledgeBase(factory).import_solutions(
        load_catalog(REPO / "runbooks", registry=default_registry())
    )
    yield factory
    engine.dispose()


def runbooks_with_deployment(directory: Path, ns: str) -> Path:
    """A copy of runbooks/ whose catalog holds Deployment ``web`` in ``ns`` and, as another
    service, the test's two nodes.

    Budget and cooldown lifted (a suite heals more than an hour allows); the blast radius allows
    the Deployment's replicas; no side-effect guards (they read metrics this test has none of)."""
    shutil.copytree(REPO / "runbooks", directory)
    catalog = {
        "services": [
            {
                "name": f"web-{ns}",
                "targets": [{"name": APP, "kind": "deployment", "namespace": ns}],
                "allowed_actions": ["kubernetes.*", "wait"],
                "allowed_namespaces": [ns],
                "budget_per_hour": 10_000,
                "cooldown_s": 0,
                "max_pods_per_step": 10,
                "guards": [],
            },
            {
                "name": f"nodes-{ns}",
                "targets": [{"name": name, "kind": "node"} for name in node_names(ns)],
                "allowed_actions": ["kubernetes.cordon", "kubernetes.uncordon", "kubernetes.drain"],
                "budget_per_hour": 10_000,
                "cooldown_s": 0,
                "max_pods_per_step": 10,
                "guards": [],
            },
        ]
    }
    (directory / "services.yaml").write_text(json.dumps(catalog))
    return directory


def node_names(ns: str) -> tuple[str, str]:
    """The test's nodes: the first agent's (started with the stack) and a spare one's."""
    return f"{ns}-n1", f"{ns}-n2"


@dataclass
class Stack:
    kube: KubeApi
    ns: str
    agent: NodeAgent
    door: Healings
    intake: httpx.AsyncClient
    client: Client
    kb: KnowledgeBase
    agents: list[NodeAgent]

    @property
    def service(self) -> str:
        return f"web-{self.ns}"

    @property
    def deployment_path(self) -> str:
        return f"/apis/apps/v1/namespaces/{self.ns}/deployments/{APP}"

    def start_agent(self, name: str) -> NodeAgent:
        agent = NodeAgent(self.kube.api, name, namespaces=[self.ns]).start()
        self.agents.append(agent)
        return agent

    async def post_alert(self, name: str, **labels: str) -> str:
        """Post one firing alert as Alertmanager does; returns the healing's workflow id."""
        workflow_id, _ = await self.post_firing(name, **labels)
        return workflow_id

    async def post_firing(
        self, name: str, fingerprint: str | None = None, **labels: str
    ) -> tuple[str, Obj]:
        """Post one firing alert; returns the healing's workflow id and the alert."""
        fingerprint = fingerprint or uuid.uuid4().hex[:16]
        alert: Obj = {
            "status": "firing",
            "labels": {"alertname": name, "severity": "warning", **KSM, **labels},
            "annotations": {"summary": f"{name} in {self.ns}"},
            # now: the evidence dates the rollout against the fault's start
            "startsAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": fingerprint,
        }
        body = {"version": "4", "status": "firing", "receiver": "selfheal", "alerts": [alert]}
        response = await self.intake.post("/v1/alertmanager", json=body, headers=INGEST)
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["refused"] == [] and len(result["started"]) == 1, result
        workflow_id: str = result["started"][0]
        return workflow_id, alert

    async def post_resolved(self, alert: Obj) -> None:
        over = {**alert, "status": "resolved", "endsAt": datetime.now(UTC).isoformat()}
        body = {"version": "4", "status": "resolved", "receiver": "selfheal", "alerts": [over]}
        response = await self.intake.post("/v1/alertmanager", json=body, headers=INGEST)
        assert response.status_code == 200, response.text
        assert response.json()["resolved"] == 1, response.text

    async def outcome(self, workflow_id: str, *, approve: bool = False) -> HealingStatus:
        """The healing's end; with ``approve``, its approval is asked for and granted through
        the door first (without, a healing that asks for one fails the test with its reasons)."""
        handle = self.client.get_workflow_handle(workflow_id, result_type=HealingStatus)
        gated = await status_when(
            handle,
            lambda s: s.awaiting_approval or s.outcome is not None,
            within_s=HEALING_TIMEOUT_S,
        )
        if approve:
            assert gated.awaiting_approval, (gated.outcome, gated.outcome_detail)
            await self.door.decide(workflow_id, "approve", by="test", reason="looked at it")
        else:
            assert not gated.awaiting_approval, gated.approval_reasons
        return await asyncio.wait_for(handle.result(), timeout=HEALING_TIMEOUT_S)

    async def strategic_patch(self, body: Obj) -> Obj:
        """The Deployment patched as ``kubectl patch`` (strategic merge) patches it."""
        return await self.kube.request(
            "PATCH", self.deployment_path, body=body, content_type=STRATEGIC_MERGE_PATCH
        )

    async def revision(self) -> str:
        found = await get_deployment(self.kube, self.ns, APP)
        revision: str = found["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
        return revision

    async def memory_limit(self) -> str:
        found = await get_deployment(self.kube, self.ns, APP)
        [app] = found["spec"]["template"]["spec"]["containers"]
        limit: str = app["resources"]["limits"]["memory"]
        return limit


def settings_for(
    runbooks: Path, kubeconfig: Path, alertmanager_url: str | None, **healing: Any
) -> Settings:
    return Settings(
        runbooks_dir=runbooks,
        evidence=EvidenceSettings(alertmanager_url=alertmanager_url),
        kubernetes=KubernetesSettings(kubeconfig=kubeconfig),
        healing=HealingSettings(
            stabilization_window_s=2,
            probe_interval_s=0.5,
            validation_grace_s=10,
            suppression_s=0,
            approval_timeout_s=HEALING_TIMEOUT_S,
            **healing,
        ),
    )


@pytest.fixture
def healing() -> dict[str, Any]:
    """HealingSettings fields of the test's worker (a test parametrizes it to change them)."""
    return {}


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alertmanager]:
    """A real Alertmanager, for the plans validated by their alert's resolution: its API says
    whether the alert is still active. Its notifications go nowhere (a closed port): the tests
    post the webhook themselves, as it would."""
    webhook = f"http://127.0.0.1:{free_port()}/v1/alertmanager"
    with run_alertmanager(tmp_path_factory.mktemp("am"), webhook_url=webhook, token="t") as peer:
        yield peer


@pytest.fixture
def alertmanager_url(request: pytest.FixtureRequest) -> str | None:
    """The worker's Alertmanager: none, unless the test parametrizes this ``True`` (indirect)."""
    if not getattr(request, "param", False):
        return None
    peer: Alertmanager = request.getfixturevalue("alertmanager")
    return peer.url


@pytest_asyncio.fixture
async def stack(
    admin_api: ApiClient,
    k8s_cluster: Cluster,
    client: Client,
    task_queue: str,
    kb_sessions: sessionmaker[Session],
    tmp_path: Path,
    healing: dict[str, Any],
    alertmanager_url: str | None,
) -> AsyncIterator[Stack]:
    """A namespace of the test's own with a node agent serving it, the worker and the intake.
    At the end the namespace is deleted while the agent still runs (it confirms the pods'
    deletion), and the agent must have met no unexpected error."""
    kube = KubeApi(admin_api)
    ns = f"kh-{uuid.uuid4().hex[:8]}"
    await kube.create("/api/v1/namespaces", {"metadata": {"name": ns}})
    runbooks = runbooks_with_deployment(tmp_path / "runbooks", ns)
    settings = settings_for(runbooks, k8s_cluster.kubeconfig, alertmanager_url, **healing)
    door = Healings(client, load_services(runbooks / "services.yaml"), task_queue=task_queue)
    app = create_app(
        IntakeDeps(door=door, settings=IntakeSettings(tokens={"ingest-token": ["ingest"]}))
    )
    agent = NodeAgent(admin_api, node_names(ns)[0], namespaces=[ns]).start()
    agents = [agent]
    try:
        async with httpx.AsyncClient() as http:
            activities = build_activities(settings, session_factory=kb_sessions, http=http)
            async with (
                build_worker(client, settings, activities=activities, task_queue=task_queue),
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://intake"
                ) as intake,
            ):
                yield Stack(
                    kube, ns, agent, door, intake, client, KnowledgeBase(kb_sessions), agents
                )
        await delete_namespace(kube, ns)
    finally:
        for started in agents:
            started.stop()
    assert [error for started in agents for error in started.errors] == []


async def healthy_deployment(s: Stack, replicas: int = 2, **options: Any) -> None:
    await s.kube.create(
        f"/apis/apps/v1/namespaces/{s.ns}/deployments", deployment(APP, replicas, **options)
    )
    await eventually("the Deployment ready", lambda: rolled_out(s.kube, s.ns, APP, replicas))


async def crash_looping_pod(s: Stack) -> Obj:
    """A pod of the Deployment crash-looping (restarted at least once)."""

    async def looping() -> Obj | None:
        for pod in await pods(s.kube, s.ns, APP):
            for status in pod.get("status", {}).get("containerStatuses") or []:
                waiting = status["state"].get("waiting", {}).get("reason")
                if waiting == "CrashLoopBackOff" and status["restartCount"] >= 1:
                    return pod
        return None

    found: Obj = await eventually("a pod crash-looping", looping)
    return found


async def bad_rollout(s: Stack) -> Obj:
    """Roll out a pod template whose pods crash-loop; returns one of them."""
    await s.strategic_patch(
        {"spec": {"template": {"metadata": {"annotations": {BEHAVIOR: CRASHLOOP}}}}}
    )
    return await crash_looping_pod(s)


async def oom_killed_pod(s: Stack) -> Obj:
    async def killed() -> Obj | None:
        for pod in await pods(s.kube, s.ns, APP):
            for status in pod.get("status", {}).get("containerStatuses") or []:
                last = status.get("lastState", {}).get("terminated", {})
                if last.get("reason") == "OOMKilled":
                    return pod
        return None

    found: Obj = await eventually("a pod OOM-killed", killed)
    return found


async def post_oom_alert(stack: Stack) -> str:
    """Once a pod of the Deployment was OOM-killed, its KubePodOOMKilled alert posted; the
    healing's workflow id."""
    pod = await oom_killed_pod(stack)
    return await stack.post_alert(
        "KubePodOOMKilled",
        namespace=stack.ns,
        pod=pod["metadata"]["name"],
        container="app",
        reason="OOMKilled",
    )


def restarts(pod: Obj) -> int:
    return sum(c["restartCount"] for c in pod["status"].get("containerStatuses") or [])


def acted(status: HealingStatus) -> list[tuple[str, bool]]:
    return [(step.action, step.compensation) for step in status.steps]


async def test_crash_loop_after_a_bad_rollout_is_rolled_back(stack: Stack) -> None:
    started = time.monotonic()
    await healthy_deployment(stack)
    assert await stack.revision() == "1"
    pod = await bad_rollout(stack)
    assert await stack.revision() == "2"

    workflow_id = await stack.post_alert(
        "KubePodCrashLooping",
        namespace=stack.ns,
        pod=pod["metadata"]["name"],
        container="app",
        reason="CrashLoopBackOff",
    )
    result = await stack.outcome(workflow_id, approve=True)

    assert result.diagnosis is not None
    assert result.diagnosis.root_cause == "bad_rollout", result.diagnosis
    assert result.solution_name == "rollback-bad-rollout"
    assert result.outcome == HealingOutcome.HEALED, result.outcome_detail
    assert acted(result) == [("kubernetes.rollback", False)]
    assert result.validations and result.validations[-1].healthy
    # the API: back on the first template (as revision 3), every pod ready and not restarting
    found = await get_deployment(stack.kube, stack.ns, APP)
    assert await stack.revision() == "3"
    template = found["spec"]["template"]["metadata"].get("annotations") or {}
    assert BEHAVIOR not in template
    assert await rolled_out(stack.kube, stack.ns, APP, 2)
    now = await pods(stack.kube, stack.ns, APP)
    assert len(now) == 2 and all(running_and_ready(p) and restarts(p) == 0 for p in now)
    record = stack.kb.get_healing(workflow_id)
    assert record is not None and record.outcome == "healed"
    assert time.monotonic() - started < 60


async def test_oom_kills_raise_the_memory_limit(stack: Stack) -> None:
    await stack.kube.create(
        f"/apis/apps/v1/namespaces/{stack.ns}/deployments",
        deployment(APP, 2, annotations={MEMORY_NEED: "180Mi"}, memory_limit="128Mi"),
    )
    workflow_id = await post_oom_alert(stack)
    # the shipped plan's ceiling (2Gi) is not above approve_above (2Gi): medium risk, no approval
    result = await stack.outcome(workflow_id)

    assert result.diagnosis is not None and result.diagnosis.root_cause == "oom_killed"
    assert result.solution_name == "raise-memory-limit"
    assert result.outcome == HealingOutcome.HEALED, result.outcome_detail
    assert acted(result) == [("kubernetes.set_resources", False)]
    assert await stack.memory_limit() == "192Mi"
    assert await rolled_out(stack.kube, stack.ns, APP, 2)
    now = await pods(stack.kube, stack.ns, APP)
    assert len(now) == 2 and all(running_and_ready(p) and restarts(p) == 0 for p in now)
    record = stack.kb.get_healing(workflow_id)
    assert record is not None and record.outcome == "healed"


@pytest.mark.parametrize("healing", [{"dry_run": True}])
async def test_dry_run_touches_nothing(stack: Stack) -> None:
    await healthy_deployment(stack)
    pod = await bad_rollout(stack)
    before = await get_deployment(stack.kube, stack.ns, APP)

    workflow_id = await stack.post_alert(
        "KubePodCrashLooping",
        namespace=stack.ns,
        pod=pod["metadata"]["name"],
        container="app",
        reason="CrashLoopBackOff",
    )
    result = await stack.outcome(workflow_id, approve=True)  # a dry run is gated too

    assert result.diagnosis is not None and result.diagnosis.root_cause == "bad_rollout"
    assert result.outcome == HealingOutcome.DRY_RUN, result.outcome_detail
    assert [(step.action, step.status) for step in result.steps] == [
        ("kubernetes.rollback", StepStatus.DRY_RUN)
    ]
    after = await get_deployment(stack.kube, stack.ns, APP)
    assert await stack.revision() == "2"
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["spec"]["template"] == before["spec"]["template"]


@pytest.mark.parametrize("healing", [{"max_candidates": 1}])
async def test_a_raise_that_does_not_heal_is_compensated(
    stack: Stack, kb_sessions: sessionmaker[Session]
) -> None:
    """The shipped plan's step waits up to 300 s for a rollout that never completes (the wait
    does not read the Deployment's progress deadline), and fails rather than reaching
    validation: this service gets its own copy of the plan whose step waits for the rollout to
    start only, so that the validation judges it; ranked first (its prior), the only candidate
    tried."""
    shipped = next(
        spec
        for spec in load_catalog(REPO / "runbooks", registry=default_registry())
        if spec.name == "raise-memory-limit"
    )
    [step] = shipped.steps
    own = shipped.model_copy(
        update={
            "name": f"raise-memory-limit-{stack.ns}",
            "service": stack.service,
            "prior_successes": 999,
            "prior_attempts": 1000,
            "steps": [
                step.model_copy(
                    update={"params": {**step.params, "wait_for": "started", "timeout_s": 20}}
                )
            ],
        }
    )
    KnowledgeBase(kb_sessions).import_solutions([own])
    await stack.kube.create(
        f"/apis/apps/v1/namespaces/{stack.ns}/deployments",
        deployment(APP, 2, annotations={MEMORY_NEED: "1Gi"}, memory_limit="128Mi"),
    )
    workflow_id = await post_oom_alert(stack)
    # the shipped plan's ceiling (2Gi) is not above approve_above (2Gi): medium risk, no approval
    result = await stack.outcome(workflow_id)

    assert result.diagnosis is not None and result.diagnosis.root_cause == "oom_killed"
    assert result.solution_name == own.name
    assert result.outcome == HealingOutcome.ESCALATED, result.outcome_detail
    assert acted(result) == [
        ("kubernetes.set_resources", False),
        ("kubernetes.set_resources", True),
    ]
    assert result.validations and not result.validations[-1].healthy
    assert await stack.memory_limit() == "128Mi"
    record = stack.kb.get_healing(workflow_id)
    assert record is not None and record.outcome == "escalated"


async def test_a_stuck_pod_is_deleted(stack: Stack) -> None:
    await healthy_deployment(stack)
    revision = await stack.revision()
    [stuck, other] = await pods(stack.kube, stack.ns, APP)
    name = stuck["metadata"]["name"]
    # this pod alone stops being ready: no rollout (the template is unchanged)
    await stack.kube.merge_patch(
        f"/api/v1/namespaces/{stack.ns}/pods/{name}",
        {"metadata": {"annotations": {BEHAVIOR: UNREADY}}},
    )

    async def unready() -> bool:
        found = await stack.kube.get(f"/api/v1/namespaces/{stack.ns}/pods/{name}")
        return not running_and_ready(found)

    await eventually("the pod not ready", unready)

    workflow_id = await stack.post_alert("KubePodNotReady", namespace=stack.ns, pod=name)
    result = await stack.outcome(workflow_id)

    assert result.diagnosis is not None and result.diagnosis.root_cause == "pod_stuck"
    assert result.solution_name == "delete-stuck-pod"
    assert result.outcome == HealingOutcome.HEALED, result.outcome_detail
    assert acted(result) == [("kubernetes.delete_pod", False)]
    now = await pods(stack.kube, stack.ns, APP)
    names = {p["metadata"]["name"] for p in now}
    assert name not in names and other["metadata"]["name"] in names
    assert len(now) == 2 and all(running_and_ready(p) for p in now)
    assert await stack.revision() == revision


def alertmanager_alert(labels: dict[str, str], *, resolved: bool = False) -> Obj:
    now = datetime.now(UTC)
    ends = now - timedelta(seconds=1) if resolved else now + timedelta(hours=1)
    return {
        "labels": labels,
        "startsAt": (now - timedelta(minutes=1)).isoformat(),
        "endsAt": ends.isoformat(),
    }


@pytest.mark.parametrize("alertmanager_url", [True], indirect=True)
async def test_a_not_ready_node_is_cordoned_and_drained(
    stack: Stack, alertmanager: Alertmanager
) -> None:
    await healthy_deployment(stack)
    bad, good = node_names(stack.ns)
    assert {p["spec"]["nodeName"] for p in await pods(stack.kube, stack.ns, APP)} == {bad}
    spare = stack.start_agent(good)
    stack.agent.set_ready(False)

    # the alert fires in Alertmanager, which posts it to the intake with its fingerprint
    labels = {
        "alertname": "KubeNodeNotReady",
        "severity": "warning",
        **KSM,
        "namespace": "monitoring",
        "node": bad,
        "condition": "Ready",
        "status": "true",
    }
    am = httpx.AsyncClient(base_url=alertmanager.url, timeout=5)
    async with am:
        (await am.post("/api/v2/alerts", json=[alertmanager_alert(labels)])).raise_for_status()
        [active] = [a for a in alertmanager.alerts() if a["labels"].get("node") == bad]
        extra = {k: v for k, v in labels.items() if k not in ("alertname", "severity", *KSM)}
        workflow_id, alert = await stack.post_firing(
            "KubeNodeNotReady", active["fingerprint"], **extra
        )
        handle = stack.client.get_workflow_handle(workflow_id, result_type=HealingStatus)
        gated = await status_when(handle, lambda s: s.awaiting_approval or s.outcome is not None)
        assert gated.awaiting_approval, (gated.outcome, gated.outcome_detail)
        assert gated.diagnosis is not None and gated.diagnosis.root_cause == "node_not_ready"
        await stack.door.decide(workflow_id, "approve", by="test", reason="node down")

        # drained: the node's pods evicted and replaced on the spare node; then the node comes
        # back and its alert resolves, which is what the plan's validation waits for
        def drained(s: HealingStatus) -> bool:
            done = [(step.action, step.status) for step in s.steps]
            return ("kubernetes.drain", StepStatus.SUCCEEDED) in done or s.outcome is not None

        await status_when(handle, drained)
        stack.agent.set_ready(True)
        resolved = alertmanager_alert(labels, resolved=True)
        (await am.post("/api/v2/alerts", json=[resolved])).raise_for_status()
        await stack.post_resolved(alert)  # and Alertmanager's resolved notification
        result = await asyncio.wait_for(handle.result(), timeout=HEALING_TIMEOUT_S)

    assert result.solution_name == "cordon-and-drain-node"
    assert result.outcome == HealingOutcome.HEALED, result.outcome_detail
    assert acted(result) == [("kubernetes.cordon", False), ("kubernetes.drain", False)]
    assert result.validations and result.validations[-1].healthy
    node = await stack.kube.get(f"/api/v1/nodes/{bad}")
    assert node["spec"].get("unschedulable") is True  # cordoned until an operator uncordons
    await eventually("the Deployment ready", lambda: rolled_out(stack.kube, stack.ns, APP, 2))
    now = await pods(stack.kube, stack.ns, APP)
    assert {p["spec"]["nodeName"] for p in now} == {spare.name}
    record = stack.kb.get_healing(workflow_id)
    assert record is not None and record.outcome == "healed"
