"""``selfheal worker``: the Temporal worker, until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio

import typer

from cli.errors import UserError, user_errors
from cli.operator import unreachable_message
from core.settings import get_settings
from domain import SelfhealError


@user_errors
def worker() -> None:
    """Run the selfheal worker (task queue: SELFHEAL_TEMPORAL__TASK_QUEUE, default selfheal)."""
    from worker import run_worker

    settings = get_settings()
    try:
        asyncio.run(run_worker(settings))
    except SelfhealError as exc:
        raise UserError(str(exc)) from None
    except RuntimeError as exc:
        if "client connect" not in str(exc):
            raise
        raise UserError(unreachable_message(settings.temporal, exc)) from None


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
