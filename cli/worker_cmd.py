"""``selfheal worker``: the Temporal worker, until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio

import typer

from selfheal.cli.errors import UserError, user_errors
from selfheal.cli.operator import release_clients, unreachable_message
from selfheal.core.settings import get_settings
from selfheal.domain import SelfhealError


@user_errors
def worker() -> None:
    """Run the selfheal worker (task queue: SELFHEAL_TEMPORAL__TASK_QUEUE, default selfheal)."""
    from selfheal.worker import run_worker

    settings = get_settings()
    error: str | None = None
    try:
        asyncio.run(run_worker(settings))
    except SelfhealError as exc:
        error = str(exc)
    except RuntimeError as exc:
        if "client connect" not in str(exc):
            raise
        error = unreachable_message(settings.temporal, exc)
    release_clients()
    if error is not None:
        raise UserError(error)


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
