"""The ``selfheal`` command. Thin: parse arguments, call the rooms below."""

from __future__ import annotations

import typer

from selfheal.cli import detect, dev, guardrails, kb, operator, serve, worker_cmd

app = typer.Typer(
    name="selfheal",
    help="Durable auto-remediation on Temporal: diagnose, plan, approve, act, validate, learn.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

app.add_typer(kb.kb_app, name="kb")
app.add_typer(kb.db_app, name="db")
app.add_typer(operator.fault_app, name="fault")
operator.register(app)
worker_cmd.register(app)
dev.register(app)
guardrails.register(app)
serve.register(app)
detect.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
