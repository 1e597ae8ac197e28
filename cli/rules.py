"""``selfheal rules check PATH``: validate a rules file before the worker reloads it."""

from __future__ import annotations

from pathlib import Path

import typer

from selfheal.cli.errors import user_errors
from selfheal.diagnosis.rules import load_rules

rules_app = typer.Typer(help="Diagnosis rules (runbooks/rules.yaml).", no_args_is_help=True)


@rules_app.command("check")
@user_errors
def check(
    path: Path = typer.Argument(..., help="the rules file, e.g. runbooks/rules.yaml"),
) -> None:
    """Load the file as the worker would: every mistake with its file, line, rule and field.

    Exit 0 when it loads (a running worker picks it up on its next diagnosis), 2 when not (a
    running worker keeps its last good rules)."""
    ruleset = load_rules(path)
    fallback = sum(1 for r in ruleset.rules if r.fallback)
    causes = len({r.root_cause for r in ruleset.rules})
    typer.echo(
        f"{path}: {len(ruleset.rules)} rules ({fallback} fallback), {causes} root causes: ok"
    )
