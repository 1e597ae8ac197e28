"""``selfheal rules check PATH``: validate a rules file before the worker reloads it — the
diagnosis rules (``runbooks/rules.yaml``) or the forecast rules (``runbooks/forecasts.yaml``,
recognised by its ``forecasts`` key), the latter against the service catalog."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer

from selfheal.cli.errors import user_errors
from selfheal.core.catalog import load_services
from selfheal.core.forecasts import load_forecast_rules
from selfheal.core.settings import get_settings
from selfheal.core.yaml_source import read_yaml
from selfheal.diagnosis.rules import load_rules

rules_app = typer.Typer(help="Diagnosis and forecast rules (runbooks/).", no_args_is_help=True)

FORECASTS_KEY = "forecasts"


@rules_app.command("check")
@user_errors
def check(
    path: Path = typer.Argument(
        ..., help="the rules file, e.g. runbooks/rules.yaml or runbooks/forecasts.yaml"
    ),
    services: Path | None = typer.Option(
        None,
        "--services",
        help="the service catalog forecast rules refer to (default: services.yaml beside PATH, "
        "else SELFHEAL_RUNBOOKS_DIR/services.yaml)",
    ),
) -> None:
    """Load the file as the worker would: every mistake with its file, line, rule and field.

    Exit 0 when it loads (a running worker picks it up on its next diagnosis or forecast), 2
    when not (a running worker keeps its last good rules)."""
    document = read_yaml(path, what="rules file")
    if isinstance(document.data, dict) and FORECASTS_KEY in document.data:
        check_forecasts(path, services)
        return
    ruleset = load_rules(path)
    fallback = sum(1 for r in ruleset.rules if r.fallback)
    causes = len({r.root_cause for r in ruleset.rules})
    typer.echo(
        f"{path}: {len(ruleset.rules)} rules ({fallback} fallback), {causes} root causes: ok"
    )


def check_forecasts(path: Path, services: Path | None) -> None:
    catalog_path = services
    if catalog_path is None:
        beside = path.parent / "services.yaml"
        catalog_path = beside if beside.exists() else get_settings().runbooks_dir / "services.yaml"
    catalog = load_services(catalog_path)
    rules = load_forecast_rules(path, catalog=catalog)
    kinds = Counter(rule.kind for rule in rules.forecasts)
    shown = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
    typer.echo(
        f"{path}: {len(rules.forecasts)} forecast rules"
        + (f" ({shown})" if shown else "")
        + f", checked against {catalog_path}: ok"
    )
