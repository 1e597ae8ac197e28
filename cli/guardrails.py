"""``selfheal pause`` and ``selfheal resume``: the global kill switch.

While paused no mutating step runs: healings wait for ``resume`` or escalate, as
``SELFHEAL_GUARDRAILS__PAUSED_BEHAVIOR`` says. The switch lives in Postgres, so it holds for
every worker at once and survives restarts.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC

import typer

from selfheal.cli.errors import UserError, user_errors
from selfheal.core.database import make_engine, make_session_factory, resolve_database_url
from selfheal.core.settings import get_settings
from selfheal.domain import SelfhealError
from selfheal.models.guardrails import Guardrails, PauseState


def register(app: typer.Typer) -> None:
    app.command("pause")(pause)
    app.command("resume")(resume)
    app.command("unlock")(unlock)


@user_errors
def pause(
    reason: str = typer.Option("", "--reason", help="why (shown to operators and in the audit)"),
    by: str = typer.Option("", "--by", help="who pauses (default: the current user)"),
) -> None:
    """Stop every mutating step of every healing until `selfheal resume`."""
    before, after = _set(True, by, reason)
    behavior = get_settings().guardrails
    then = (
        f"healings wait up to {behavior.pause_wait_max_s:g}s, then escalate"
        if behavior.paused_behavior == "wait"
        else "healings escalate"
    )
    again = "still paused" if before.paused else "paused"
    why = f": {after.reason}" if after.reason else ""
    typer.echo(f"{again} by {after.by}{why} (no mutating step runs; {then})")


@user_errors
def resume(
    by: str = typer.Option("", "--by", help="who resumes (default: the current user)"),
) -> None:
    """Let healings act again after `selfheal pause`."""
    before, after = _set(False, by, "")
    if not before.paused:
        typer.echo("not paused: nothing to resume")
        return
    was = f", paused by {before.by}" + (f": {before.reason}" if before.reason else "")
    typer.echo(f"resumed by {after.by}{was} (mutating steps may run again)")


@user_errors
def unlock(
    target: str = typer.Argument(..., help="SERVICE/TARGET, as guardrail decisions name it"),
) -> None:
    """Free a target whose healing ended without releasing it (e.g. a terminated workflow).

    Only for a holder that is gone: a running healing keeps acting, and another may join it.
    """
    if "/" not in target:
        raise UserError(f"target {target!r}: expected SERVICE/TARGET, e.g. shop/web")
    with _guardrails() as guardrails:
        held = guardrails.unlock(target)
    if held is None:
        typer.echo(f"{target} is not locked")
        return
    typer.echo(
        f"unlocked {target} (held by {held.run.workflow_id} run {held.run.run_id} "
        f"since {held.since.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z)"
    )


def _set(paused: bool, by: str, reason: str) -> tuple[PauseState, PauseState]:
    who = by.strip() or _current_user()
    with _guardrails() as guardrails:
        return guardrails.set_paused(paused, who, reason.strip())


def _current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        # A container may run under a uid with no passwd entry.
        return "unknown"


@contextmanager
def _guardrails() -> Iterator[Guardrails]:
    settings = get_settings()
    try:
        engine = make_engine(resolve_database_url(settings), pool_size=1)
        try:
            yield Guardrails(make_session_factory(engine))
        finally:
            engine.dispose()
    except SelfhealError as exc:
        raise UserError(str(exc)) from exc
