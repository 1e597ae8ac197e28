"""``selfheal kb ...`` (the solution catalog) and ``selfheal db ...`` (the schema)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich import box
from rich.table import Table

from selfheal.activities.actions import default_registry
from selfheal.cli.errors import UserError, user_errors
from selfheal.cli.render import make_console
from selfheal.core.database import make_engine, make_session_factory, resolve_database_url
from selfheal.core.settings import get_settings
from selfheal.domain import SelfhealError, Solution
from selfheal.models import KnowledgeBase, load_catalog
from selfheal.models.base import display_url
from selfheal.models.knowledge_base import HitRate, KnowledgeStats
from selfheal.models.migrate import current_revision, downgrade, upgrade

kb_app = typer.Typer(help="The knowledge base of solutions.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)

console = make_console()

RATE_FORMULA = "rate = (successes + prior successes + 1) / (attempts + prior attempts + 2)"


@db_app.command("upgrade")
@user_errors
def db_upgrade(
    revision: str = typer.Option("head", "--revision", "-r", help="target revision"),
) -> None:
    """Migrate the database schema up to REVISION (default: the latest)."""
    with _reported():
        url = _database_url()
        upgrade(url, revision)
        now = current_revision(url)
    typer.echo(f"{display_url(url)}: schema at revision {now}")


@db_app.command("downgrade")
@user_errors
def db_downgrade(
    revision: str = typer.Argument(..., help="target revision; 'base' removes every table"),
) -> None:
    """Migrate the database schema down to REVISION."""
    with _reported():
        url = _database_url()
        downgrade(url, revision)
        now = current_revision(url)
    typer.echo(f"{display_url(url)}: schema at revision {now or 'base'}")


@kb_app.command("import")
@user_errors
def kb_import(
    directory: Path | None = typer.Argument(
        None, help="catalog directory (searched recursively) or file; default: the runbooks dir"
    ),
) -> None:
    """Import the solution catalog: new solutions, and a new version of each changed one."""
    source = directory or get_settings().runbooks_dir
    with _reported():
        specs = load_catalog(source, registry=default_registry())
        with _knowledge_base() as kb:
            report = kb.import_solutions(specs)
    typer.echo(
        f"{source}: {len(specs)} solutions: {len(report.created)} created, "
        f"{len(report.updated)} updated (new version), {len(report.unchanged)} unchanged"
    )


@kb_app.command("list")
@user_errors
def kb_list(
    as_json: bool = typer.Option(False, "--json", help="print JSON for scripts"),
) -> None:
    """The current version of every solution, with what it has learned."""
    with _reported(), _knowledge_base() as kb:
        solutions = kb.list_solutions()
    if as_json:
        rows = [{**s.model_dump(mode="json"), "success_rate": s.success_rate} for s in solutions]
        typer.echo(json.dumps(rows, indent=2))
        return
    if not solutions:
        typer.echo("no solutions yet: selfheal kb import")
        return
    console.print(_table(solutions))


def _table(solutions: list[Solution]) -> Table:
    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        caption=f"learned, prior: successes/attempts. {RATE_FORMULA}",
        caption_justify="left",
    )
    # Every column but the name folds on a narrow terminal: nothing is cut off or dropped.
    table.add_column("name", no_wrap=True)
    for header in ("v", "pattern", "service", "risk", "learned", "prior", "rate", "TTR", "used"):
        numeric = header in {"v", "learned", "prior", "rate", "TTR"}
        table.add_column(header, overflow="fold", justify="right" if numeric else "left")
    for s in solutions:
        table.add_row(
            s.name if s.enabled else f"{s.name} (disabled)",
            str(s.version),
            s.pattern,
            s.service or "*",
            s.risk.value,
            f"{s.successes}/{s.attempts}",
            f"{s.prior_successes}/{s.prior_attempts}",
            f"{s.success_rate:.2f}",
            "-" if s.mean_time_to_recover_s is None else f"{s.mean_time_to_recover_s:.0f}s",
            _ago(s.last_used_at),
            style=None if s.enabled else "dim",
        )
    return table


@kb_app.command("stats")
@user_errors
def kb_stats(
    as_json: bool = typer.Option(False, "--json", help="print JSON for scripts"),
) -> None:
    """What the knowledge base learned: per solution and service, success rates with their 90 %
    credible interval (recent outcomes weigh more); per rule and root cause, how often the top
    hypothesis was confirmed."""
    with _reported(), _knowledge_base() as kb:
        stats = kb.stats()
    if as_json:
        typer.echo(stats.model_dump_json(indent=2))
        return
    if not stats.solutions:
        typer.echo("no solution tried yet")
    else:
        console.print(_stats_table(stats))
    if not stats.rules:
        typer.echo("no diagnosed healing yet")
        return
    console.print(_hit_rate_table("rule", stats.rules))
    console.print(_hit_rate_table("root cause", stats.root_causes))


def _stats_table(stats: KnowledgeStats) -> Table:
    mass = f"{stats.credible_mass:.0%}"
    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        title="solutions per service acted on",
        caption=(
            f"learned: successes/attempts; weighted: the same, an outcome counting half after "
            f"{_duration(stats.half_life_s)}. rate: posterior mean with the priors, and its "
            f"{mass} credible interval. ranked by: this service's record, or the solution's "
            f"over every service below {stats.min_service_attempts:g} weighted attempts here."
        ),
        caption_justify="left",
    )
    table.add_column("solution", no_wrap=True)
    for header in ("v", "service", "learned", "weighted", "rate", mass, "TTR", "used", "ranked by"):
        numeric = header in {"v", "learned", "weighted", "rate", mass, "TTR"}
        table.add_column(header, overflow="fold", justify="right" if numeric else "left")
    for s in stats.solutions:
        table.add_row(
            s.solution if s.current else f"{s.solution} (old)",
            str(s.version),
            s.service,
            f"{s.successes}/{s.attempts}",
            f"{s.weighted_successes:.1f}/{s.weighted_attempts:.1f}",
            f"{s.success_rate:.2f}",
            f"{s.success_rate_lower:.2f}-{s.success_rate_upper:.2f}",
            "-" if s.mean_time_to_recover_s is None else f"{s.mean_time_to_recover_s:.0f}s",
            _ago(s.last_used_at),
            s.ranked_by if s.current else "-",  # an old version is no longer offered
            style=None if s.current else "dim",
        )
    return table


def _hit_rate_table(by: str, rates: list[HitRate]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title=f"top hypothesis per {by}")
    table.add_column(by, no_wrap=True)
    for header in ("confirmed", "decided", "healings", "hit rate"):
        table.add_column(header, justify="right")
    for r in rates:
        table.add_row(
            r.key,
            str(r.confirmed),
            str(r.decided),
            str(r.healings),
            "-" if r.hit_rate is None else f"{r.hit_rate:.2f}",
        )
    return table


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _ago(at: datetime | None) -> str:
    if at is None:
        return "never"
    seconds = max(0.0, (datetime.now(UTC) - at).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def _database_url() -> str:
    return resolve_database_url(get_settings())


@contextmanager
def _knowledge_base() -> Iterator[KnowledgeBase]:
    settings = get_settings()
    engine = make_engine(_database_url(), pool_size=settings.database.pool_size)
    try:
        yield KnowledgeBase(make_session_factory(engine), learning=settings.learning)
    finally:
        engine.dispose()


@contextmanager
def _reported() -> Iterator[None]:
    """Errors selfheal raises on purpose are the user's to fix: one line, exit code 2."""
    try:
        yield
    except SelfhealError as exc:
        raise UserError(str(exc)) from exc
