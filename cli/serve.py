"""``selfheal serve``: the HTTP intake (Alertmanager, OTLP, heartbeats, faults, healings,
guardrails)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog
import typer
import uvicorn
from sqlalchemy import text
from temporalio.client import Client

from selfheal.api.app import IntakeDeps, create_app
from selfheal.api.openapi import openapi_json
from selfheal.cli.errors import UserError, user_errors
from selfheal.cli.operator import run_async
from selfheal.core.database import make_engine, make_session_factory, resolve_database_url
from selfheal.core.settings import Settings, get_settings
from selfheal.detection.detector_config import load_detector_config
from selfheal.detection.metrics_router import MetricsRouter
from selfheal.healings import Healings
from selfheal.models.guardrails import DatabaseKillSwitch
from selfheal.models.metric_store import metric_sink
from selfheal.models.trace_store import TraceStore

log = structlog.get_logger(__name__)


async def _serve(settings: Settings, host: str, port: int) -> None:
    router = MetricsRouter(load_detector_config(settings.runbooks_dir / "detectors.yaml"))
    door = await Healings.connect(settings)
    engine = make_engine(resolve_database_url(settings), pool_size=1)

    def select_one() -> None:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    async def database() -> None:
        await asyncio.to_thread(select_one)

    app = create_app(
        IntakeDeps(
            door=door,
            settings=settings.intake,
            router=router,
            ready_checks={"database": database},
            kill_switch=DatabaseKillSwitch(make_session_factory(engine)),
            metric_sink=metric_sink(make_session_factory(engine), settings.evidence),
            trace_sink=TraceStore(
                make_session_factory(engine),
                max_traces=settings.evidence.traces_max,
                max_age_s=settings.evidence.traces_max_age_s,
            ).add,
        )
    )
    if not settings.intake.tokens:
        log.warning("no intake tokens configured (SELFHEAL_INTAKE__TOKENS): every POST gets 401")
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        access_log=False,
        log_config=None,
    )
    try:
        await uvicorn.Server(config).serve()
    finally:
        engine.dispose()


async def _openapi(settings: Settings) -> str:
    # a lazy client never connects: the document does not depend on Temporal
    client = await Client.connect(settings.temporal.address, lazy=True)
    return openapi_json(create_app(IntakeDeps(Healings(client, None), settings.intake)))


@user_errors
def serve(
    host: str | None = typer.Option(None, "--host", help="default: SELFHEAL_INTAKE__HOST"),
    port: int | None = typer.Option(
        None, "--port", min=0, max=65535, help="default: SELFHEAL_INTAKE__PORT"
    ),
    openapi: Path | None = typer.Option(
        None, "--openapi", help="write the OpenAPI document to this file and exit"
    ),
) -> None:
    """Run the HTTP intake until SIGINT/SIGTERM (OpenAPI document at /docs)."""
    settings = get_settings()
    if openapi is not None:
        document = run_async(_openapi(settings))
        try:
            openapi.write_text(document)
        except OSError as exc:
            raise UserError(f"{openapi}: cannot write: {exc.strerror or exc}") from None
        return
    run_async(
        _serve(
            settings,
            settings.intake.host if host is None else host,
            settings.intake.port if port is None else port,
        )
    )


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
