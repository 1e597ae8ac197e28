"""Operator commands: ``fault submit``, ``approve``, ``reject``, ``list``, ``show``.

Each goes through the door (``selfheal.healings.Healings``); what Temporal or the door says no to
becomes one line and exit code 2.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import typer
from pydantic import BaseModel

from selfheal.cli.errors import UserError, user_errors
from selfheal.cli.render import (
    approvers_text,
    healings_table,
    make_console,
    pending_table,
    timeline_table,
)
from selfheal.core.settings import get_settings
from selfheal.core.yaml_source import parse_yaml
from selfheal.domain import Approval, Fault, HealingPhase, SelfhealError
from selfheal.healings import FilterError, Healings, Verdict
from selfheal.healings.queries import (
    HealingRow,
    PendingApproval,
    pending_approval,
    visibility_query,
)

T = TypeVar("T")

fault_app = typer.Typer(help="Faults.", no_args_is_help=True)

console = make_console()


def register(app: typer.Typer) -> None:
    app.command("approve")(approve)
    app.command("reject")(reject)
    app.command("list")(list_healings)
    app.command("show")(show)


# ------------------------------------------------------------------------------ fault submit


def load_fault(source: str, text: str) -> Fault:
    """Parse a Fault from JSON or YAML ``text`` read from ``source`` (a path or '-'), through the
    one YAML loader: a key given twice is refused with its line, every problem reads
    ``source:LINE: field: problem`` (``ConfigError``: one line, exit code 2)."""
    return parse_yaml(text, source).validate(
        Fault, expected="a mapping of Fault fields (service, type, ...)"
    )


def _read_source(source: str) -> str:
    if source == "-":
        return sys.stdin.read()
    path = Path(source)
    try:
        return path.read_text()
    except FileNotFoundError:
        raise UserError(f"{source}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{source}: cannot read: {exc}") from None


@fault_app.command("submit")
@user_errors
def submit(
    file: str = typer.Argument(..., help="a Fault as JSON or YAML; '-' reads standard input"),
    dry_run: bool = typer.Option(False, "--dry-run", help="plan and gate, but change nothing"),
    require_approval: bool = typer.Option(
        False, "--require-approval", help="a human must approve, whatever the risk"
    ),
) -> None:
    """Start the healing of a fault (or count one more report of a running one). The fault is
    resolved through the service catalog (SELFHEAL_RUNBOOKS_DIR/services.yaml), as at every
    door: where to act comes from there, never from the file."""
    fault = load_fault(file, _read_source(file))

    async def work(door: Healings) -> str:
        report = await door.report(fault, dry_run=dry_run, require_approval=require_approval)
        return report.workflow_id

    typer.echo(run_with_door(work, with_catalog=True))


# ---------------------------------------------------------------------------- approve, reject


def _decide(verdict: Verdict, workflow_id: str, by: str, reason: str) -> Approval:
    return run_with_door(lambda door: door.decide(workflow_id, verdict, by=by, reason=reason))


@user_errors
def approve(
    workflow_id: str = typer.Argument(..., help="heal-<fingerprint>"),
    by: str = typer.Option(..., "--by", help="who approves (recorded in the audit)"),
    reason: str = typer.Option("", "--reason", help="why"),
) -> None:
    """Approve a healing that awaits approval (the approve update)."""
    approval = _decide("approve", workflow_id, by, reason)
    console.print(f"approved {workflow_id} by {approval.by}", markup=False)


@user_errors
def reject(
    workflow_id: str = typer.Argument(..., help="heal-<fingerprint>"),
    by: str = typer.Option(..., "--by", help="who rejects (recorded in the audit)"),
    reason: str = typer.Option("", "--reason", help="why"),
) -> None:
    """Reject a healing that awaits approval (the reject update): nothing is executed."""
    approval = _decide("reject", workflow_id, by, reason)
    console.print(f"rejected {workflow_id} by {approval.by}", markup=False)


# -------------------------------------------------------------------------------------- list


@user_errors
def list_healings(
    phase: str | None = typer.Option(None, "--phase", help="only healings in this phase"),
    limit: int = typer.Option(50, "--limit", min=1, help="at most this many, newest first"),
    as_json: bool = typer.Option(False, "--json", help="print JSON for scripts"),
) -> None:
    """List healings (a visibility query on the HealingPhase search attribute). With
    --phase awaiting_approval, each with how long it has waited and who may approve."""
    try:
        query = visibility_query(phase)  # checked before connecting
    except FilterError as exc:
        raise UserError(f"--{exc}") from None  # its message starts with the option's name

    if phase == HealingPhase.AWAITING_APPROVAL:
        pending = run_with_door(lambda door: pending_approvals(door, limit))
        if as_json:
            _echo_json(pending)
        elif pending:
            console.print(pending_table(pending))
            console.print(
                "decide with: selfheal approve ID --by NAME "
                "(or selfheal reject ID --by NAME --reason WHY)",
                markup=False,
            )
        else:
            console.print(f"no healings match {query}", markup=False)
        return
    rows = run_with_door(lambda door: door.list(phase, limit))
    if as_json:
        _echo_json(rows)
    elif rows:
        console.print(healings_table(rows))
    else:
        console.print(f"no healings match {query}", markup=False)


def _echo_json(rows: Sequence[BaseModel]) -> None:
    typer.echo(json.dumps([r.model_dump(mode="json") for r in rows], indent=2))


# Status queries of the pending healings at once, a few at a time: each needs a worker's answer.
PENDING_QUERIES = 8


async def pending_approvals(door: Healings, limit: int) -> list[PendingApproval]:
    """The healings listed as awaiting approval, each with its ``status`` (one query per
    running one, and only for those): how long it has waited and who may approve. A status
    that does not answer leaves that row's approvers unknown instead of failing the list."""
    rows = await door.list(HealingPhase.AWAITING_APPROVAL.value, limit)
    gate = asyncio.Semaphore(PENDING_QUERIES)

    async def one(row: HealingRow) -> PendingApproval:
        if row.status != "RUNNING":
            return pending_approval(row, None, datetime.now(UTC))
        async with gate:
            try:
                status = await door.show(row.workflow_id)
            except SelfhealError as exc:
                return pending_approval(row, None, datetime.now(UTC), detail=str(exc))
        return pending_approval(row, status, datetime.now(UTC))

    return list(await asyncio.gather(*(one(row) for row in rows)))


# -------------------------------------------------------------------------------------- show


@user_errors
def show(
    workflow_id: str = typer.Argument(..., help="heal-<fingerprint>"),
    as_json: bool = typer.Option(False, "--json", help="print JSON for scripts"),
) -> None:
    """Show one healing: its phase, diagnosis, plans, approval, steps and outcome."""
    status = run_with_door(lambda door: door.show(workflow_id))
    if as_json:
        typer.echo(status.model_dump_json(indent=2))
        return
    console.print(timeline_table(status))
    if status.awaiting_approval:
        console.print(
            f"awaiting approval: selfheal approve {workflow_id} --by NAME "
            f"(or selfheal reject {workflow_id} --by NAME --reason WHY); "
            f"may decide: {approvers_text(status.approvers)}",
            markup=False,
        )


# ----------------------------------------------------------------------- Temporal plumbing


def run_with_door(work: Callable[[Healings], Awaitable[T]], *, with_catalog: bool = False) -> T:
    """Open the door (a Temporal client, and the catalog when ``with_catalog``), run ``work``.
    selfheal's errors (Temporal unreachable or refusing, no such healing, a refused decision,
    a refused fault) reach ``user_errors`` as one line."""

    async def main() -> T:
        door = await Healings.connect(get_settings(), with_catalog=with_catalog)
        return await work(door)

    return run_async(main())


def run_async(awaitable: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` for a command that uses Temporal clients: frees them before returning,
    and re-raises a failure without the traceback that would keep a client alive."""
    error: SelfhealError | None = None
    try:
        result = asyncio.run(awaitable)
    except SelfhealError as exc:
        error = type(exc)(str(exc))  # not re-raised here: its traceback would keep the client
    release_clients()
    if error is not None:
        raise error
    return result


def release_clients() -> None:
    """Free Temporal clients before the interpreter finalizes: a client collected during
    finalization can abort the process from the SDK's runtime threads (temporalio/sdk-python
    issue 300), turning a successful command into exit code 134."""
    gc.collect()
