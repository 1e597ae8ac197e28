"""Operator commands: ``fault submit``, ``approve``, ``reject``, ``list``, ``show``.

Each is one Temporal call or two; what Temporal says no to becomes one line and exit code 2.
"""

from __future__ import annotations

import asyncio
import gc
import json
import re
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import TypeVar

import typer
import yaml
from pydantic import ValidationError
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from selfheal.cli.errors import UserError, describe_validation_error, user_errors
from selfheal.cli.render import healings_table, make_console, timeline_table
from selfheal.core.settings import TemporalSettings, get_settings
from selfheal.core.temporal import connect
from selfheal.detection.healings import (
    WORKER_ANSWER_TIMEOUT,
    HealingLookupError,
    HealingRow,
    describe_healing,
    fetch_status,
    healing_row,
    update_failure_message,
    visibility_query,
)
from selfheal.detection.intake import start_healing
from selfheal.domain import Approval, ApprovalDecision, Fault

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
    """Parse a Fault from JSON or YAML ``text`` read from ``source`` (a path or '-')."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise UserError(f"{source}: not valid JSON or YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise UserError(
            f"{source}: expected a mapping of Fault fields (service, type, ...), "
            f"got {type(data).__name__}"
        )
    try:
        return Fault.model_validate(data)
    except ValidationError as exc:
        raise UserError(describe_validation_error(exc, source=source)) from None


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
    """Start the healing of a fault (or count one more report of a running one)."""
    fault = load_fault(file, _read_source(file))
    settings = get_settings()

    async def work(client: Client) -> str:
        started = await start_healing(
            client,
            fault,
            task_queue=settings.temporal.task_queue,
            dry_run=dry_run,
            require_approval=require_approval,
        )
        return started.workflow_id

    typer.echo(run_with_client(work, settings.temporal))


# ---------------------------------------------------------------------------- approve, reject


def _decide(update: str, workflow_id: str, by: str, reason: str) -> Approval:
    async def work(client: Client) -> Approval:
        handle = client.get_workflow_handle(workflow_id)
        description = await describe_healing(handle)
        if description.status != WorkflowExecutionStatus.RUNNING:
            state = description.status.name.lower() if description.status else "closed"
            raise UserError(
                f"healing {workflow_id} has already ended ({state}): nothing to {update}"
            )
        try:
            approval: Approval = await handle.execute_update(
                update,
                ApprovalDecision(by=by, reason=reason),
                result_type=Approval,
                rpc_timeout=WORKER_ANSWER_TIMEOUT,
            )
        except WorkflowUpdateFailedError as exc:
            raise UserError(f"{update} refused: {update_failure_message(exc)}") from None
        return approval

    return run_with_client(work, get_settings().temporal, workflow_id=workflow_id)


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
    """List healings (a visibility query on the HealingPhase search attribute)."""
    try:
        query = visibility_query(phase)
    except HealingLookupError as exc:
        raise UserError(f"--{exc}") from None  # its message starts with the option's name

    async def work(client: Client) -> list[HealingRow]:
        return [healing_row(e) async for e in client.list_workflows(query, limit=limit)]

    rows = run_with_client(work, get_settings().temporal)
    if as_json:
        typer.echo(json.dumps([asdict(r) for r in rows], indent=2, default=str))
    elif rows:
        console.print(healings_table(rows))
    else:
        console.print(f"no healings match {query}", markup=False)


# -------------------------------------------------------------------------------------- show


@user_errors
def show(
    workflow_id: str = typer.Argument(..., help="heal-<fingerprint>"),
    as_json: bool = typer.Option(False, "--json", help="print JSON for scripts"),
) -> None:
    """Show one healing: its phase, diagnosis, plans, approval, steps and outcome."""
    status = run_with_client(
        lambda client: fetch_status(client, workflow_id),
        get_settings().temporal,
        workflow_id=workflow_id,
    )
    if as_json:
        typer.echo(status.model_dump_json(indent=2))
        return
    console.print(timeline_table(status))
    if status.awaiting_approval:
        console.print(
            f"awaiting approval: selfheal approve {workflow_id} --by NAME "
            f"(or selfheal reject {workflow_id} --by NAME --reason WHY)",
            markup=False,
        )


# ----------------------------------------------------------------------- Temporal plumbing


def unreachable_message(settings: TemporalSettings, exc: BaseException) -> str:
    found = re.search(r'message: "([^"]+)"', str(exc))
    reason = found.group(1) if found else " ".join(str(exc).split())
    return (
        f"cannot reach Temporal at {settings.address} (namespace {settings.namespace}): "
        f"{reason}; start one with 'selfheal dev' or set SELFHEAL_TEMPORAL__ADDRESS"
    )


def rpc_message(exc: RPCError, settings: TemporalSettings, workflow_id: str | None) -> str:
    message = " ".join(exc.message.split())
    if exc.status == RPCStatusCode.NOT_FOUND:
        if "namespace" in message.lower():
            return f"namespace {settings.namespace!r} not found on {settings.address}: {message}"
        if workflow_id is not None:
            return f"no healing with id {workflow_id}"
    if exc.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
        return (
            f"Temporal at {settings.address} or a worker did not answer ({message}); "
            "is 'selfheal worker' running?"
        )
    return f"Temporal refused: {message}"


def run_with_client(
    work: Callable[[Client], Awaitable[T]],
    settings: TemporalSettings,
    *,
    workflow_id: str | None = None,
) -> T:
    """Connect, run ``work``; Temporal's refusals and ``HealingLookupError``s become one-line
    ``UserError``s."""

    async def main() -> T:
        try:
            client = await connect(settings, tracing=False)
        except RuntimeError as exc:
            raise UserError(unreachable_message(settings, exc)) from None
        try:
            return await work(client)
        except RPCError as exc:
            raise UserError(rpc_message(exc, settings, workflow_id)) from None

    error: str | None = None
    try:
        result = asyncio.run(main())
    except (UserError, HealingLookupError) as exc:
        error = str(exc)  # not re-raised here: its traceback would keep the client alive
    release_clients()
    if error is not None:
        raise UserError(error)
    return result


def release_clients() -> None:
    """Free Temporal clients before the interpreter finalizes: a client collected during
    finalization can abort the process from the SDK's runtime threads (temporalio/sdk-python
    issue 300), turning a successful command into exit code 134."""
    gc.collect()
