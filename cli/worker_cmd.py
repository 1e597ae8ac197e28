"""``selfheal worker``: the Temporal worker, until SIGINT/SIGTERM."""

from __future__ import annotations

import typer

from selfheal.cli.errors import user_errors
from selfheal.cli.operator import run_async
from selfheal.core.settings import get_settings


@user_errors
def worker() -> None:
    """Run the selfheal worker (task queue: SELFHEAL_TEMPORAL__TASK_QUEUE, default selfheal)."""
    from selfheal.worker import run_worker

    run_async(run_worker(get_settings()))


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
