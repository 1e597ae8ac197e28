"""Builds and runs the selfheal worker: registration, sandbox, tuning, metrics, shutdown."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import httpx
import structlog
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from selfheal.activities.evidence.base import EvidenceProvider, EvidenceProviders
from selfheal.core.log_context import HealingLogInterceptor
from selfheal.core.settings import Settings
from selfheal.workflows.contract import check_implementations
from selfheal.workflows.forecast import ForecastWorkflow
from selfheal.workflows.healing import HealingWorkflow

log = structlog.get_logger(__name__)

# Our vocabulary and the contract are pure: importing them once, outside the sandbox, keeps each
# workflow run from re-importing them (the sandbox's per-run re-import is what makes workflows
# slow).
PASSTHROUGH = (
    "selfheal.domain",
    "selfheal.workflows.contract",
    "selfheal.workflows.saga",
    "pydantic",
    "pydantic_core",
    "annotated_types",
)


def workflow_runner() -> SandboxedWorkflowRunner:
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)
    )


def build_activities(
    settings: Settings,
    *,
    session_factory: sessionmaker[Session],
    http: httpx.AsyncClient | None = None,
) -> list[Callable[..., Any]]:
    """Every activity of the contract, once, as bound methods of classes built once with their
    clients."""
    from selfheal.activities.actions import POSTGRES_DSNS, REDIS_URL, default_registry
    from selfheal.activities.actions.kubernetes import KUBERNETES, kubernetes_services
    from selfheal.activities.diagnosis import (
        DiagnosisActivities,
        RulesSource,
        learned_records,
    )
    from selfheal.activities.forecast import ForecastActivities
    from selfheal.activities.guardrails import GuardrailActivities
    from selfheal.activities.knowledge import KnowledgeBaseActivities
    from selfheal.activities.notify import NotifyActivities
    from selfheal.activities.policy import PolicyActivities
    from selfheal.activities.side_effects import SideEffectActivities
    from selfheal.activities.steps import StepActivities
    from selfheal.activities.validation import ValidationActivities
    from selfheal.core.catalog import load_services
    from selfheal.core.forecasts import FORECASTS_FILE, ForecastRulesSource
    from selfheal.worker.predictions import PredictionActivities

    registry = default_registry()
    client = http or httpx.AsyncClient()
    notifies = bool(settings.notify.webhook_url or settings.notify.pagerduty_routing_key)
    policy = settings.healing.policy(notify=notifies).model_copy(
        update={"guardrail_wait_max_s": settings.guardrails.pause_wait_max_s}
    )
    catalog = load_services(settings.runbooks_dir / "services.yaml")
    diagnosis = DiagnosisActivities(
        RulesSource(settings.runbooks_dir / "rules.yaml"),
        evidence_providers(settings, client, session_factory),
        catalog,
        settings.evidence,
        history=learned_records(session_factory),
    )
    kube = kubernetes_services(settings.kubernetes)  # one API client for steps and guardrails
    knowledge = KnowledgeBaseActivities(session_factory, registry, learning=settings.learning)
    steps = StepActivities(
        registry,
        {
            "supervisor_url": settings.supervisor.url,
            "http": client,
            REDIS_URL: settings.redis.url,
            POSTGRES_DSNS: settings.postgres_targets.dsns,
            **kube,
        },
    )
    validation = ValidationActivities(
        http=client,
        probe_timeout_s=settings.probe.timeout_s,
        catalog=catalog,
        evidence=settings.evidence,
        session_factory=session_factory,
        kubernetes=settings.kubernetes,
    )
    side_effects = SideEffectActivities(
        catalog,
        settings.evidence,
        http=client,
        session_factory=session_factory,
        probe_timeout_s=settings.probe.timeout_s,
    )
    notify = NotifyActivities(settings.notify, namespace=settings.temporal.namespace, http=client)
    guardrails = GuardrailActivities(
        session_factory,
        catalog,
        settings.guardrails,
        registry,
        http=client,
        probe_timeout_s=settings.probe.timeout_s,
        kubernetes=kube.get(KUBERNETES),
    )
    # one rules file for the forecasts and the predictions they report, re-read when it changes
    forecast_rules = ForecastRulesSource(settings.runbooks_dir / FORECASTS_FILE, catalog)
    forecasts = ForecastActivities(
        forecast_rules, catalog, settings.evidence, http=client, session_factory=session_factory
    )
    activities: list[Callable[..., Any]] = [
        PolicyActivities(
            policy,
            catalog,
            suppression_s=settings.healing.suppression_s,
            approvers=settings.healing.approvers,
        ).load_policy,
        guardrails.check_guardrails,
        guardrails.release_target,
        diagnosis.collect_evidence,
        diagnosis.diagnose_fault,
        knowledge.find_solutions,
        knowledge.record_outcome,
        steps.run_step,
        steps.compensate_step,
        validation.validate_recovery,
        side_effects.watch_side_effects,
        side_effects.probe_dependency,
        notify.notify,
        forecasts.run_forecast,
        forecasts.choose_window,
        PredictionActivities(settings, forecast_rules).report_prediction,
    ]
    # A workflow calling an activity no worker registered would retry it until it gives up.
    check_implementations(activities)
    return activities


def evidence_providers(
    settings: Settings, http: httpx.AsyncClient, session_factory: sessionmaker[Session]
) -> EvidenceProviders:
    """Every evidence provider this worker can serve: one whose source is not configured (no
    Prometheus URL, no cluster) is left out, and not counted as missing evidence."""
    from selfheal.activities.evidence.alerts import alerts_provider
    from selfheal.activities.evidence.history import history_provider
    from selfheal.activities.evidence.kubernetes import kubernetes_provider
    from selfheal.activities.evidence.metrics import metrics_provider
    from selfheal.activities.evidence.probe import ProbeProvider
    from selfheal.activities.evidence.traces import traces_provider

    providers: list[EvidenceProvider] = [
        ProbeProvider(http, timeout_s=settings.probe.timeout_s),
        traces_provider(settings.evidence, session_factory),
    ]
    providers.append(
        history_provider(
            session_factory,
            limit=settings.evidence.history_max,
            max_age_s=settings.evidence.history_max_age_s,
        )
    )
    for optional in (
        metrics_provider(settings.evidence, http, session_factory),
        alerts_provider(settings.evidence, http),
        kubernetes_provider(settings.kubernetes, settings.evidence),
    ):
        if optional is not None:
            providers.append(optional)
    return EvidenceProviders(providers, timeout_s=settings.evidence.timeout_s)


def build_worker(
    client: Client,
    settings: Settings,
    *,
    activities: Sequence[Callable[..., Any]],
    task_queue: str | None = None,
) -> Worker:
    return Worker(
        client,
        task_queue=task_queue or settings.temporal.task_queue,
        workflows=[HealingWorkflow, ForecastWorkflow],
        activities=list(activities),
        workflow_runner=workflow_runner(),
        max_concurrent_activities=settings.worker.max_concurrent_activities,
        max_concurrent_workflow_tasks=settings.worker.max_concurrent_workflow_tasks,
        graceful_shutdown_timeout=timedelta(seconds=settings.worker.graceful_shutdown_s),
        # every log line of an activity carries its workflow_id and fingerprint
        interceptors=[HealingLogInterceptor()],
    )


def metrics_runtime(port: int) -> Runtime | None:
    """A runtime serving the SDK's Prometheus metrics on ``port`` (None when port is 0)."""
    if port == 0:
        return None
    return Runtime(
        telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"0.0.0.0:{port}"))
    )


async def run_worker(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set or SIGINT/SIGTERM; in-flight activities get
    ``graceful_shutdown_s`` to finish, then Temporal retries them on another worker."""
    from selfheal.core.database import make_engine, make_session_factory, resolve_database_url
    from selfheal.core.telemetry import setup_tracing
    from selfheal.core.temporal import connect
    from selfheal.worker.kb_metrics import serve_kb_metrics

    tracer_provider = setup_tracing(settings.telemetry)

    if stop is None:
        # Standalone: SIGINT/SIGTERM stop the worker. An embedding caller owns its signals.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    engine = make_engine(resolve_database_url(settings), pool_size=settings.database.pool_size)
    session_factory = make_session_factory(engine)
    client = await connect(settings.temporal, runtime=metrics_runtime(settings.worker.metrics_port))
    kb_metrics = serve_kb_metrics(
        settings.worker.kb_metrics_port, session_factory, settings.learning
    )
    try:
        async with httpx.AsyncClient() as http:
            worker = build_worker(
                client,
                settings,
                activities=build_activities(settings, session_factory=session_factory, http=http),
            )
            log.info(
                "worker started",
                address=settings.temporal.address,
                namespace=settings.temporal.namespace,
                task_queue=settings.temporal.task_queue,
                metrics_port=settings.worker.metrics_port,
                kb_metrics_port=kb_metrics.port if kb_metrics is not None else 0,
            )
            async with worker:
                await stop.wait()
                log.info("worker stopping", grace_s=settings.worker.graceful_shutdown_s)
    finally:
        if kb_metrics is not None:
            kb_metrics.close()
    engine.dispose()
    if tracer_provider is not None:
        tracer_provider.shutdown()
