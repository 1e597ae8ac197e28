"""Guardrails on a real Postgres, with a real HTTP server for the fault re-check.

The activity methods run in an ``ActivityEnvironment``; the module has its own database,
emptied before every test.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import typer
from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse
from kubernetes.client import ApiClient
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker
from temporalio.testing import ActivityEnvironment
from typer.testing import CliRunner

from selfheal.activities.actions.kubernetes import KubeApi, kubernetes_client
from selfheal.activities.actions.registry import Action, ActionContext, ActionRegistry
from selfheal.activities.guardrails import GuardrailActivities
from selfheal.cli.guardrails import register
from selfheal.core.catalog import ServiceCatalog, ServiceSpec, TargetSpec
from selfheal.core.settings import GuardrailSettings, KubernetesSettings, get_settings
from selfheal.devstack.supervisor import ServerHandle, serve_in_thread
from selfheal.domain import Fault, MetricCheck, RecoveryStep, RiskLevel
from selfheal.domain.payloads import CheckGuardrailsInput, GuardrailDecision, ReleaseTargetInput
from selfheal.models.guardrails import Guardrails, Run
from tests.integration.k8s_cluster import Cluster
from tests.support import scratch_database, sessions

pytestmark = pytest.mark.integration

WORKFLOW = "heal-shop-web"


# -- the world the guardrails look at ---------------------------------------------------------


class DeletePodParams(BaseModel):
    namespace: str = "prod"
    selector: str = "app=web"
    max_pods: int = 1


class ScaleParams(BaseModel):
    namespace: str = "prod"
    name: str
    replicas: int


class ProcessParams(BaseModel):
    process: str = "web"


async def _noop(ctx: ActionContext, params: BaseModel) -> dict[str, Any]:
    return {}


async def _undo(ctx: ActionContext, params: BaseModel, output: dict[str, Any]) -> dict[str, Any]:
    return {}


def registry() -> ActionRegistry:
    """Actions under the names the guardrails know; only their params models matter here."""
    return ActionRegistry(
        [
            Action(
                "kubernetes.delete_pod", DeletePodParams, RiskLevel.MEDIUM, _noop, compensable=False
            ),
            Action("kubernetes.scale", ScaleParams, RiskLevel.MEDIUM, _noop, compensate=_undo),
            Action("process.restart", ProcessParams, RiskLevel.MEDIUM, _noop, compensate=_undo),
            Action("redis.delete_keys", ProcessParams, RiskLevel.HIGH, _noop, compensable=False),
            Action("wait", ProcessParams, RiskLevel.LOW, _noop, mutating=False),
        ]
    )


def shop(**overrides: Any) -> ServiceSpec:
    fields: dict[str, Any] = {
        "name": "shop",
        "targets": [
            TargetSpec(name="web", kind="deployment", namespace="prod"),
            TargetSpec(name="worker", kind="process"),
        ],
        "allowed_actions": ["kubernetes.*", "process.*", "wait"],
        "allowed_namespaces": ["prod"],
        "budget_per_hour": 2,
        "cooldown_s": 600,
    }
    return ServiceSpec(**{**fields, **overrides})


def fault(target: str | None = "web", **fields: Any) -> Fault:
    return Fault(service="shop", type="pods_crashlooping", target=target, **fields)


def step(action: str = "kubernetes.delete_pod", **params: Any) -> RecoveryStep:
    return RecoveryStep(action=action, params=params)


@dataclass
class Health:
    status: int = 503
    errors: float = 0.5
    metrics_status: int = 200


@pytest.fixture(scope="module")
def health() -> Health:
    return Health()


@pytest.fixture(scope="module")
def server(health: Health) -> Iterator[ServerHandle]:
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse(status_code=health.status, content={})

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        body = f"# TYPE shop_error_ratio gauge\nshop_error_ratio {health.errors}\n"
        return PlainTextResponse(body, status_code=health.metrics_status)

    handle = serve_in_thread(app)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="module")
def guard_url(postgres_admin_url: str) -> Iterator[str]:
    with scratch_database(postgres_admin_url, "selfheal_guard") as url:
        yield url


@pytest.fixture(scope="module")
def session_factory(guard_url: str) -> Iterator[sessionmaker[Session]]:
    with sessions(guard_url) as factory:
        yield factory


@pytest.fixture(autouse=True)
def fresh(session_factory: sessionmaker[Session], health: Health) -> None:
    with session_factory() as session, session.begin():
        session.execute(
            text("TRUNCATE guardrail_state, target_locks, healing_actions, guardrail_decisions")
        )
    health.status, health.errors, health.metrics_status = 503, 0.5, 200


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def store(session_factory: sessionmaker[Session]) -> Guardrails:
    return Guardrails(session_factory)


class Checker:
    """The activities under test, and a one-call way to ask them."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        http: httpx.AsyncClient,
        service: ServiceSpec | None = None,
        settings: GuardrailSettings | None = None,
        kubernetes: ApiClient | None = None,
    ) -> None:
        catalog = ServiceCatalog(services=[service or shop()])
        self.activities = GuardrailActivities(
            session_factory,
            catalog,
            settings or GuardrailSettings(),
            registry(),
            http=http,
            probe_timeout_s=1.0,
            kubernetes=kubernetes,
        )
        self.env = ActivityEnvironment()

    async def check(
        self,
        the_step: RecoveryStep | None = None,
        *,
        run: str = "r1",
        workflow: str = WORKFLOW,
        the_fault: Fault | None = None,
        dry_run: bool = False,
    ) -> GuardrailDecision:
        decision: GuardrailDecision = await self.env.run(
            self.activities.check_guardrails,
            CheckGuardrailsInput(
                workflow_id=workflow,
                run_id=run,
                fault=the_fault or fault(),
                step=the_step,
                candidate=None if the_step is None else 0,
                order=None if the_step is None else 0,
                dry_run=dry_run,
            ),
        )
        return decision

    async def release(self, *, run: str = "r1", workflow: str = WORKFLOW) -> None:
        await self.env.run(
            self.activities.release_target,
            ReleaseTargetInput(workflow_id=workflow, run_id=run, fault=fault()),
        )


@pytest.fixture
def checker(session_factory: sessionmaker[Session], http: httpx.AsyncClient) -> Checker:
    return Checker(session_factory, http)


def refused(decision: GuardrailDecision, rule: str) -> str:
    assert not decision.allowed, decision
    assert decision.rule == rule, decision
    return decision.reason


# -- at the start of a healing ----------------------------------------------------------------


async def test_a_known_service_may_start_and_the_decision_is_recorded(
    checker: Checker, store: Guardrails
) -> None:
    decision = await checker.check()

    assert decision.allowed and decision.rule == ""
    [record] = store.decisions(WORKFLOW)
    assert (record.run_id, record.allowed, record.target, record.action) == (
        "r1",
        True,
        "shop/web",
        None,
    )


async def test_an_unknown_service_is_refused_at_start_and_before_a_step(checker: Checker) -> None:
    stranger = Fault(service="billing", type="down", target="api")

    for the_step in (None, step()):
        reason = refused(await checker.check(the_step, the_fault=stranger), "unknown_service")
        assert "'billing' is not in the service catalog" in reason


async def test_pause_refuses_everything_until_resume(
    checker: Checker,
    store: Guardrails,
    session_factory: sessionmaker[Session],
    http: httpx.AsyncClient,
) -> None:
    store.set_paused(True, by="alice", reason="deploy freeze")

    at_start = await checker.check()
    before_step = await checker.check(step())
    dry = await checker.check(step(), dry_run=True)
    escalate = GuardrailSettings(paused_behavior="escalate")
    escalating = await Checker(session_factory, http, settings=escalate).check()

    for decision in (at_start, before_step):
        reason = refused(decision, "kill_switch")
        assert "paused by alice" in reason and "deploy freeze" in reason
        assert decision.retry_after_s is not None and decision.retry_after_s > 0
    assert refused(dry, "kill_switch") and dry.retry_after_s is None
    assert "until selfheal resume" in refused(escalating, "kill_switch")
    assert escalating.retry_after_s is None
    assert store.lock_holder("shop/web") is None

    store.set_paused(False, by="bob")
    assert (await checker.check()).allowed
    assert (await checker.check(step())).allowed


async def test_waiting_for_resume_is_bounded_by_pause_wait_max_s(
    session_factory: sessionmaker[Session], http: httpx.AsyncClient, store: Guardrails
) -> None:
    checker = Checker(session_factory, http, settings=GuardrailSettings(pause_wait_max_s=0.3))
    store.set_paused(True, by="alice")

    first = await checker.check(step())
    await asyncio.sleep(0.4)
    given_up = await checker.check(step())
    store.set_paused(False, by="alice")
    assert (await checker.check(step())).allowed
    store.set_paused(True, by="alice")
    # An allowed decision ends the streak: a new pause gives a new wait.
    paused_again = await checker.check(step())

    assert first.retry_after_s is not None and 0 < first.retry_after_s <= 0.3
    assert "waiting up to 0.3s for resume" in refused(first, "kill_switch")
    assert given_up.retry_after_s is None
    assert "(pause_wait_max_s 0.3): giving up" in refused(given_up, "kill_switch")
    assert paused_again.retry_after_s is not None


async def test_waiting_for_a_busy_target_is_bounded_too(
    session_factory: sessionmaker[Session], http: httpx.AsyncClient
) -> None:
    checker = Checker(session_factory, http, settings=GuardrailSettings(pause_wait_max_s=0.3))
    assert (await checker.check(step(), workflow="heal-holder")).allowed

    first = await checker.check(step(), workflow="heal-waiter")
    await asyncio.sleep(0.4)
    given_up = await checker.check(step(), workflow="heal-waiter")

    assert first.retry_after_s is not None and refused(first, "target_busy")
    assert given_up.retry_after_s is None
    assert "giving up" in refused(given_up, "target_busy")


async def test_a_read_only_step_needs_no_guardrail(checker: Checker, store: Guardrails) -> None:
    store.set_paused(True, by="alice")

    decision = await checker.check(step("wait"))

    assert decision.allowed
    assert store.lock_holder("shop/web") is None


async def test_cooldown_after_a_healing_that_acted_on_the_target(
    checker: Checker, store: Guardrails
) -> None:
    assert (await checker.check(step(), run="r1")).allowed
    await checker.release(run="r1")

    # The same fault again (a new run of the same workflow id) and another fault on the target.
    again = await checker.check(run="r2")
    other = await checker.check(workflow="heal-other", run="x1")
    other_target = await checker.check(run="w1", the_fault=fault("worker"))

    for decision in (again, other):
        reason = refused(decision, "cooldown")
        assert f"shop/web was healed by {WORKFLOW}" in reason
        assert "recorded and escalated, not auto-healed" in reason
        assert decision.retry_after_s is None
    assert other_target.allowed


async def test_cooldown_ends_and_only_healings_that_acted_start_one(
    session_factory: sessionmaker[Session], http: httpx.AsyncClient, store: Guardrails
) -> None:
    checker = Checker(session_factory, http, shop(cooldown_s=60))
    assert (await checker.check(step(), run="old")).allowed
    store.release(Run(WORKFLOW, "old"), now=datetime.now(UTC) - timedelta(seconds=61))
    # A healing that never acted (refused, escalated, dry run) ends without a cooldown.
    assert (await checker.check(step(), run="dry", dry_run=True)).allowed
    await checker.release(run="dry")

    assert (await checker.check(run="new")).allowed


async def test_no_cooldown_when_the_service_sets_none(
    session_factory: sessionmaker[Session], http: httpx.AsyncClient
) -> None:
    checker = Checker(session_factory, http, shop(cooldown_s=0))
    assert (await checker.check(step(), run="r1")).allowed
    await checker.release(run="r1")

    assert (await checker.check(run="r2")).allowed


async def test_budget_counts_healings_that_acted_within_the_hour(
    checker: Checker, store: Guardrails
) -> None:
    long_ago = datetime.now(UTC) - timedelta(hours=1, seconds=5)
    old = store.claim("shop", "shop/web", Run("heal-a", "1"), 2, long_ago, dry_run=False)
    assert old.status == "ok"
    store.release(Run("heal-a", "1"), now=long_ago)
    assert (await checker.check(step(), workflow="heal-b", run="1")).allowed
    await checker.release(workflow="heal-b", run="1")
    # Without a cooldown in the way, only the budget can refuse the next ones.
    worker, restart = fault("worker"), step("process.restart")
    assert (await checker.check(restart, workflow="heal-c", run="1", the_fault=worker)).allowed

    at_start = await checker.check(workflow="heal-d", run="1", the_fault=worker)
    # A healing that started before the budget ran out is stopped at its first mutating step.
    at_step = await checker.check(restart, workflow="heal-d", run="1", the_fault=worker)
    # The healing holding the last slot goes on acting.
    holder = await checker.check(restart, workflow="heal-c", run="1", the_fault=worker)

    for decision in (at_start, at_step):
        reason = refused(decision, "budget")
        assert "2 healings of shop acted within the last hour; its budget is 2 per hour" in reason
    assert holder.allowed
    assert store.acted_count("shop", Run("none", "none"), datetime.now(UTC)) == 2


def test_two_healings_cannot_both_take_the_last_budget_slot(store: Guardrails) -> None:
    now = datetime.now(UTC)
    results: list[str] = []
    barrier = threading.Barrier(4)

    def claim(index: int) -> None:
        barrier.wait()
        run = Run(f"heal-{index}", "1")
        claimed = store.claim("shop", f"shop/t{index}", run, 1, now, dry_run=False)
        results.append(claimed.status)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results) == ["budget", "budget", "budget", "ok"]


# -- a healing holds its target from its start -------------------------------------------------


def acted(store: Guardrails) -> int:
    return store.acted_count("shop", Run("none", "none"), datetime.now(UTC))


async def test_the_start_check_holds_the_target_without_counting_as_acting(
    session_factory: sessionmaker[Session], http: httpx.AsyncClient, store: Guardrails
) -> None:
    checker = Checker(session_factory, http, shop(cooldown_s=0, budget_per_hour=1))

    # Run A passes its start check (then, say, waits for a human): it holds shop/web.
    start_a = await checker.check(workflow="heal-a", run="1")
    # Run B, another fault of the same target, is told at its own start to wait for it.
    start_b = await checker.check(workflow="heal-b", run="1")
    # Holding is not acting: another target of the service still fits the budget of one.
    start_c = await checker.check(workflow="heal-c", run="1", the_fault=fault("worker"))
    held, acted_while_held = store.lock_holder("shop/web"), acted(store)
    # A acts: its first mutating step counts it, once, however many steps it runs.
    steps_a = [await checker.check(step(), workflow="heal-a", run="1") for _ in range(2)]
    acted_after_a = acted(store)
    step_c = await checker.check(
        step("process.restart"), workflow="heal-c", run="1", the_fault=fault("worker")
    )

    assert start_a.allowed and "holds shop/web until it ends" in start_a.reason
    assert held == Run("heal-a", "1")
    reason = refused(start_b, "target_busy")
    assert "shop/web is being healed by heal-a" in reason
    assert start_b.retry_after_s is not None and start_b.retry_after_s > 0
    assert start_c.allowed and acted_while_held == 0
    assert all(s.allowed for s in steps_a) and acted_after_a == 1
    assert "1 healings of shop acted within the last hour" in refused(step_c, "budget")
    [b_record] = store.decisions("heal-b")
    assert (b_record.step_order, b_record.allowed, b_record.rule) == (None, False, "target_busy")

    await checker.release(workflow="heal-a", run="1")
    assert store.lock_holder("shop/web") is None
    # B asks again (with room in the budget): the target is free, and B holds it now.
    roomy = Checker(session_factory, http, shop(cooldown_s=0, budget_per_hour=2))
    again_b = await roomy.check(workflow="heal-b", run="1")
    assert again_b.allowed and store.lock_holder("shop/web") == Run("heal-b", "1")


async def test_a_holder_that_never_acted_leaves_no_cooldown(
    checker: Checker, store: Guardrails
) -> None:
    # A (cooldown 600 s) holds the target through its approval gate and is rejected.
    assert (await checker.check(workflow="heal-a", run="1")).allowed
    waiting = await checker.check(workflow="heal-b", run="1")
    await checker.release(workflow="heal-a", run="1")

    after = await checker.check(workflow="heal-b", run="1")

    assert refused(waiting, "target_busy") and waiting.retry_after_s is not None
    assert after.allowed, after  # no cooldown: the held target was never acted on
    assert acted(store) == 0


async def test_a_dry_run_holds_nothing_at_its_start(checker: Checker, store: Guardrails) -> None:
    dry = await checker.check(workflow="heal-dry", run="1", dry_run=True)
    free_after_dry = store.lock_holder("shop/web")
    real = await checker.check(workflow="heal-real", run="1")
    dry_while_held = await checker.check(workflow="heal-dry", run="2", dry_run=True)

    assert dry.allowed and "holds nothing" in dry.reason
    assert free_after_dry is None
    assert real.allowed and store.lock_holder("shop/web") == Run("heal-real", "1")
    # A dry run shows it would wait, and never asks to.
    assert "a healing would wait" in refused(dry_while_held, "target_busy")
    assert dry_while_held.retry_after_s is None
    assert store.lock_holder("shop/web") == Run("heal-real", "1")
    assert acted(store) == 0


# -- before each mutating step ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("the_step", "the_fault", "expected"),
    [
        (step("redis.delete_keys"), fault(), "action redis.delete_keys is not allowed for shop"),
        (step(namespace="kube-system"), fault(), "namespace 'kube-system' is not allowed"),
        (step(namespace="${fault.labels.ns}"), fault(labels={"ns": "dev"}), "namespace 'dev'"),
        (step("process.restart"), fault("db"), "target 'db' is not a target of shop"),
        (step("no.such.action"), fault(), "unknown action 'no.such.action'"),
        (
            step(namespace="${fault.labels.ns}"),
            fault(),
            "${fault.labels.ns}, which the fault lacks",
        ),
    ],
)
async def test_allowlists_refuse(
    checker: Checker, store: Guardrails, the_step: RecoveryStep, the_fault: Fault, expected: str
) -> None:
    decision = await checker.check(the_step, the_fault=the_fault)

    assert expected in refused(decision, "allowlist")
    assert store.lock_holder("shop/web") is None


async def test_allowlists_allow(checker: Checker) -> None:
    assert (await checker.check(step(namespace="prod"))).allowed
    assert (await checker.check(step("kubernetes.scale", name="web", replicas=3), run="r1")).allowed
    restart_worker = await checker.check(
        step("process.restart"), the_fault=fault("worker"), run="w"
    )
    assert restart_worker.allowed


async def test_the_namespace_an_action_defaults_to_is_checked(
    session_factory: sessionmaker[Session], http: httpx.AsyncClient
) -> None:
    checker = Checker(session_factory, http, shop(allowed_namespaces=["staging"]))

    decision = await checker.check(step())  # DeletePodParams defaults to "prod"

    assert "namespace 'prod' is not allowed" in refused(decision, "allowlist")


@pytest.mark.parametrize(
    ("overrides", "the_step", "replicas", "allowed"),
    [
        ({}, step(max_pods=1), None, True),
        ({}, step(max_pods=2), None, False),
        ({"max_pods_per_step": 2}, step(max_pods=2), None, True),
        ({"max_percent_per_step": 25}, step(max_pods=3), 12, True),
        ({"max_percent_per_step": 25}, step(max_pods=4), 12, False),
        ({"max_percent_per_step": 25}, step(max_pods=2), None, False),
        ({}, step("kubernetes.scale", name="web", replicas=5), 4, True),
        ({}, step("kubernetes.scale", name="web", replicas=6), 4, False),
        ({}, step("kubernetes.scale", name="web", replicas=2), 4, False),
        ({"max_percent_per_step": 50}, step("kubernetes.scale", name="web", replicas=2), 4, True),
    ],
)
async def test_blast_radius(
    session_factory: sessionmaker[Session],
    http: httpx.AsyncClient,
    overrides: dict[str, Any],
    the_step: RecoveryStep,
    replicas: int | None,
    allowed: bool,
) -> None:
    checker = Checker(session_factory, http, shop(**overrides))
    values = {} if replicas is None else {"replicas": float(replicas)}

    decision = await checker.check(the_step, the_fault=fault(values=values))

    if allowed:
        assert decision.allowed, decision
    else:
        assert "per step" in refused(decision, "blast_radius")


async def test_a_scale_of_unknown_size_goes_through_and_says_so(checker: Checker) -> None:
    decision = await checker.check(step("kubernetes.scale", name="web", replicas=10))

    assert decision.allowed
    assert "replica change unchecked: no Kubernetes API configured" in decision.reason

    counted = await checker.check(
        step("kubernetes.scale", name="web", replicas=5),
        the_fault=fault(values={"replicas": 4.0}),
    )
    assert counted.allowed
    assert "4 replicas (the fault's values.replicas; no Kubernetes API configured)" in (
        counted.reason
    )


# -- blast radius from the cluster's own replica counts ---------------------------------------


@pytest.fixture(scope="module")
def kube_api(k8s_cluster: Cluster) -> ApiClient:
    api = kubernetes_client(KubernetesSettings(kubeconfig=k8s_cluster.kubeconfig))
    assert api is not None
    return api


async def workloads(api: ApiClient) -> str:
    """A namespace with Deployment web (4 replicas) and StatefulSet db (6 replicas)."""
    kube = KubeApi(api)
    ns = f"g-{uuid.uuid4().hex[:8]}"
    await kube.create("/api/v1/namespaces", {"metadata": {"name": ns}})
    for plural, name, replicas in (("deployments", "web", 4), ("statefulsets", "db", 6)):
        template = {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "app", "image": f"{name}:1"}]},
        }
        spec: dict[str, Any] = {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": template,
        }
        if plural == "statefulsets":
            spec["serviceName"] = name
        await kube.create(
            f"/apis/apps/v1/namespaces/{ns}/{plural}", {"metadata": {"name": name}, "spec": spec}
        )
    return ns


def in_cluster(ns: str, **overrides: Any) -> ServiceSpec:
    targets = [
        TargetSpec(name="web", kind="deployment", namespace=ns),
        TargetSpec(name="db", kind="statefulset", namespace=ns),
    ]
    return shop(targets=targets, allowed_namespaces=[ns], **overrides)


async def test_blast_radius_counts_the_replicas_the_api_reports(
    session_factory: sessionmaker[Session], http: httpx.AsyncClient, kube_api: ApiClient
) -> None:
    ns = await workloads(kube_api)
    checker = Checker(session_factory, http, in_cluster(ns), kubernetes=kube_api)
    # The fault's values say 40 replicas; the cluster says 4, and the cluster is believed.
    lying = fault(values={"replicas": 40.0})

    allowed = await checker.check(
        step("kubernetes.scale", namespace=ns, name="web", replicas=5), the_fault=lying
    )
    assert allowed.allowed, allowed
    assert f"4 replicas (Deployment 'web' in namespace {ns!r}, read from the API)" in (
        allowed.reason
    )
    too_many = await checker.check(
        step("kubernetes.scale", namespace=ns, name="web", replicas=6), the_fault=lying
    )
    assert "kubernetes.scale from 4 to 6 replicas changes 2 pods" in refused(
        too_many, "blast_radius"
    )


async def test_a_percentage_of_the_workload_s_replicas_read_from_the_api(
    session_factory: sessionmaker[Session], http: httpx.AsyncClient, kube_api: ApiClient
) -> None:
    ns = await workloads(kube_api)
    service = in_cluster(ns, max_percent_per_step=50)
    checker = Checker(session_factory, http, service, kubernetes=kube_api)
    lying = fault(values={"replicas": 40.0})

    # Deployment web: 50% of 4 = 2 pods per step (the fault's 40 would have allowed 20).
    assert (await checker.check(step(namespace=ns, max_pods=2), the_fault=lying)).allowed
    decision = await checker.check(step(namespace=ns, max_pods=3), the_fault=lying)
    assert "max_percent_per_step 50% of 4 replicas (Deployment 'web'" in refused(
        decision, "blast_radius"
    )
    # StatefulSet db: 50% of 6 = 3.
    on_db = fault("db", values={"replicas": 2.0})
    assert (await checker.check(step(namespace=ns, max_pods=3), the_fault=on_db, run="r2")).allowed


async def test_a_named_pod_counts_its_workload_s_replicas(
    session_factory: sessionmaker[Session], http: httpx.AsyncClient, kube_api: ApiClient
) -> None:
    ns = await workloads(kube_api)
    kube = KubeApi(kube_api)

    async def web_pod() -> str | None:
        listed = await kube.get(f"/api/v1/namespaces/{ns}/pods", labelSelector="app=web")
        return str(listed["items"][0]["metadata"]["name"]) if listed["items"] else None

    deadline = asyncio.get_running_loop().time() + 20
    while (pod := await web_pod()) is None:
        assert asyncio.get_running_loop().time() < deadline, "no pod of web"
        await asyncio.sleep(0.2)
    # The fault's target is db (6 replicas); the pod named is web's (4): web's count applies.
    service = in_cluster(ns, max_percent_per_step=50)
    checker = Checker(session_factory, http, service, kubernetes=kube_api)

    decision = await checker.check(
        step(namespace=ns, name=pod, max_pods=3), the_fault=fault("db", values={})
    )

    assert f"of 4 replicas (Deployment 'web' in namespace {ns!r}" in refused(
        decision, "blast_radius"
    )


async def test_an_unreadable_workload_falls_back_to_the_fault_and_says_why(
    session_factory: sessionmaker[Session], http: httpx.AsyncClient, kube_api: ApiClient
) -> None:
    ns = await workloads(kube_api)
    checker = Checker(session_factory, http, in_cluster(ns), kubernetes=kube_api)

    decision = await checker.check(
        step("kubernetes.scale", namespace=ns, name="gone", replicas=5),
        the_fault=fault(values={"replicas": 4.0}),
    )

    assert decision.allowed
    assert "4 replicas (the fault's values.replicas; reading Deployment 'gone' failed" in (
        decision.reason
    )


async def test_one_healing_acts_on_a_target_at_a_time(checker: Checker, store: Guardrails) -> None:
    assert (await checker.check(step(), run="r1")).allowed
    assert (await checker.check(step(), run="r1")).allowed  # the same run again: idempotent

    busy = await checker.check(step(), workflow="heal-other", run="x")
    busy_dry = await checker.check(step(), workflow="heal-dry", run="d", dry_run=True)
    same_id_next_run = await checker.check(step(), run="r2")

    for decision in (busy, same_id_next_run):
        assert f"shop/web is being healed by {WORKFLOW}" in refused(decision, "target_busy")
        assert decision.retry_after_s is not None and decision.retry_after_s > 0
    assert refused(busy_dry, "target_busy") and busy_dry.retry_after_s is None
    assert store.lock_holder("shop/web") == Run(WORKFLOW, "r1")

    await checker.release(run="r1")
    await checker.release(run="r1")  # idempotent

    assert store.lock_holder("shop/web") is None
    assert (await checker.check(step(), workflow="heal-other", run="x")).allowed
    assert store.lock_holder("shop/web") == Run("heal-other", "x")


async def test_a_dry_run_takes_no_lock_and_does_not_count_as_acting(
    checker: Checker, store: Guardrails
) -> None:
    decision = await checker.check(step(), dry_run=True)

    assert decision.allowed
    assert store.lock_holder("shop/web") is None
    assert store.acted_count("shop", Run("none", "none"), datetime.now(UTC)) == 0
    [record] = store.decisions(WORKFLOW)
    assert record.dry_run and record.allowed


async def test_a_dry_run_shows_what_would_be_refused(checker: Checker, store: Guardrails) -> None:
    decision = await checker.check(step(max_pods=5), dry_run=True)

    refused(decision, "blast_radius")
    [record] = store.decisions(WORKFLOW)
    assert (record.dry_run, record.allowed, record.rule) == (True, False, "blast_radius")


def fault_with_probes(base_url: str, *, probe: bool = True, metric: bool = True) -> Fault:
    return fault(
        health_url=f"{base_url}/healthz" if probe else None,
        metric=MetricCheck(url=f"{base_url}/metrics", name="shop_error_ratio", max=0.05)
        if metric
        else None,
    )


async def test_a_fault_that_no_longer_fires_stops_the_plan(
    checker: Checker, store: Guardrails, server: ServerHandle, health: Health
) -> None:
    health.status, health.errors = 200, 0.0

    decision = await checker.check(step(), the_fault=fault_with_probes(server.url))

    reason = refused(decision, "fault_resolved")
    assert decision.fault_resolved
    assert "the fault no longer fires" in reason and "shop_error_ratio = 0 <= 0.05" in reason
    assert store.lock_holder("shop/web") is None


@pytest.mark.parametrize(
    ("status", "errors", "metrics_status", "probe", "metric"),
    [
        (503, 0.0, 200, True, True),  # health still failing
        (200, 0.5, 200, True, True),  # metric still above max
        (200, 0.0, 500, True, True),  # metric unreadable: proves nothing
        (503, 0.0, 200, True, False),
        (200, 0.5, 200, False, True),
    ],
)
async def test_a_fault_still_firing_lets_the_step_run(
    checker: Checker,
    server: ServerHandle,
    health: Health,
    status: int,
    errors: float,
    metrics_status: int,
    probe: bool,
    metric: bool,
) -> None:
    health.status, health.errors, health.metrics_status = status, errors, metrics_status
    the_fault = fault_with_probes(server.url, probe=probe, metric=metric)

    decision = await checker.check(step(), the_fault=the_fault)

    assert decision.allowed, decision


async def test_the_fault_recheck_can_be_turned_off(
    session_factory: sessionmaker[Session],
    http: httpx.AsyncClient,
    server: ServerHandle,
    health: Health,
) -> None:
    health.status, health.errors = 200, 0.0
    checker = Checker(session_factory, http, settings=GuardrailSettings(recheck_fault=False))

    decision = await checker.check(step(), the_fault=fault_with_probes(server.url))

    assert decision.allowed


async def test_every_decision_is_recorded_in_order(checker: Checker, store: Guardrails) -> None:
    await checker.check()
    await checker.check(step(max_pods=3))
    await checker.check(step())

    records = store.decisions(WORKFLOW, "r1")

    assert [(r.step_order, r.action, r.allowed, r.rule) for r in records] == [
        (None, None, True, ""),
        (0, "kubernetes.delete_pod", False, "blast_radius"),
        (0, "kubernetes.delete_pod", True, ""),
    ]
    assert "3 pods in one step" in records[1].reason


# -- selfheal pause / resume ------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, guard_url: str) -> Iterator[CliRunner]:
    monkeypatch.setenv("SELFHEAL_DATABASE__URL", guard_url)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def one_line(output: str) -> str:
    [line] = output.strip().splitlines()
    return line


def test_pause_and_resume_from_the_cli(cli: CliRunner, app: typer.Typer, store: Guardrails) -> None:
    paused = cli.invoke(app, ["pause", "--reason", "deploy freeze", "--by", "alice"])
    state = store.state()
    again = cli.invoke(app, ["pause", "--by", "carol"])
    resumed = cli.invoke(app, ["resume", "--by", "bob"])
    resumed_again = cli.invoke(app, ["resume", "--by", "bob"])

    assert paused.exit_code == 0, paused.output
    assert one_line(paused.stdout).startswith("paused by alice: deploy freeze (no mutating step")
    assert (state.paused, state.by, state.reason) == (True, "alice", "deploy freeze")
    assert again.exit_code == 0 and one_line(again.stdout).startswith("still paused by carol")
    assert resumed.exit_code == 0
    assert one_line(resumed.stdout) == (
        "resumed by bob, paused by carol (mutating steps may run again)"
    )
    assert resumed_again.exit_code == 0
    assert one_line(resumed_again.stdout).startswith("not paused: nothing to resume")
    assert not store.state().paused


def test_pause_with_an_unreachable_database_is_one_line(
    cli: CliRunner, app: typer.Typer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "SELFHEAL_DATABASE__URL", "postgresql://x:pw@/x?host=/nonexistent/socket-dir"
    )
    get_settings.cache_clear()

    for args in (["pause"], ["resume"]):
        result = cli.invoke(app, args)
        assert result.exit_code == 2, result.output
        line = one_line(result.stderr)
        assert line.startswith("error: cannot set the kill switch")
        assert "pw" not in line


async def test_unlock_frees_a_target_whose_healing_is_gone(
    cli: CliRunner, app: typer.Typer, checker: Checker, store: Guardrails
) -> None:
    assert (await checker.check(step(), run="r1")).allowed

    unlocked = cli.invoke(app, ["unlock", "shop/web"])
    again = cli.invoke(app, ["unlock", "shop/web"])
    bad = cli.invoke(app, ["unlock", "web"])

    assert unlocked.exit_code == 0, unlocked.output
    assert one_line(unlocked.stdout).startswith(f"unlocked shop/web (held by {WORKFLOW} run r1")
    assert store.lock_holder("shop/web") is None
    # The freed holder counts as ended: the target's cooldown has started.
    assert refused(await checker.check(run="r2"), "cooldown")
    assert again.exit_code == 0 and one_line(again.stdout) == "shop/web is not locked"
    assert bad.exit_code == 2
    assert one_line(bad.stderr) == "error: target 'web': expected SERVICE/TARGET, e.g. shop/web"
