"""The ``selfheal`` command. Thin: parse arguments, call the rooms below."""

from __future__ import annotations

import sys

import typer
from pydantic import ValidationError

from selfheal.cli import (
    detect,
    dev,
    forecast,
    guardrails,
    kb,
    operator,
    rca,
    rules,
    serve,
    worker_cmd,
)
from selfheal.cli.errors import describe_validation_error, err_console, fail
from selfheal.core.logging import configure_logging
from selfheal.core.settings import get_settings

app = typer.Typer(
    name="selfheal",
    help="Durable auto-remediation on Temporal: diagnose, plan, approve, act, validate, learn.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _logging() -> None:
    # Once per process, before any command: JSON lines on stderr unless SELFHEAL_LOG_FORMAT says
    # otherwise (`selfheal dev` switches to console rendering). A comment, not a docstring: a
    # callback's docstring would become the command's help.
    try:
        settings = get_settings()
        configure_logging(settings.log_level, fmt=settings.log_format or "json")
    except ValidationError as exc:
        fail(describe_validation_error(exc, source="settings"))
    except ValueError as exc:
        fail(f"SELFHEAL_LOG_LEVEL: {exc}")


app.add_typer(kb.kb_app, name="kb")
app.add_typer(kb.db_app, name="db")
app.add_typer(operator.fault_app, name="fault")
app.add_typer(rules.rules_app, name="rules")
operator.register(app)
worker_cmd.register(app)
dev.register(app)
guardrails.register(app)
serve.register(app)
detect.register(app)
forecast.register(app)
rca.register(app)


def main() -> None:
    """Run the command. Mistakes the parser catches (an unknown option, a value of the wrong
    type, a missing argument) are one line and exit code 2 like every other user error, not
    Typer's framed box: a script's log and a narrow terminal both want one line."""
    try:
        code = app(prog_name="selfheal", standalone_mode=False)
    except typer.TyperException as exc:  # Typer's own Click: UsageError and its kin
        ctx = getattr(exc, "ctx", None)
        show = getattr(exc, "show", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and callable(show):
            show()  # `selfheal` or `selfheal kb` alone: the help, as before
        else:
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            err_console.print(f"error: {exc.format_message()}{hint}", markup=False)
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("Aborted.", markup=False)
        sys.exit(1)
    # A command returns None; typer.Exit(n) comes back here as n.
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
