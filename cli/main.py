"""The ``selfheal`` command. Thin: parse arguments, call the rooms below."""

from __future__ import annotations

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
from selfheal.cli.errors import describe_validation_error, fail
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
    app()


if __name__ == "__main__":
    main()
