"""``selfheal forecast FILE.csv --threshold X``: when does a resource series run out? The model
is ``detection.forecast`` (pure); this module reads the CSV (the same reader as
``selfheal detect``), prints warnings about what it skipped, and the forecast. docs/forecasting.md.

``selfheal schedules sync|list``: the Temporal Schedules that forecast the rules of
``runbooks/forecasts.yaml`` in production (``healings.schedules``). A command group of its own:
a Typer command cannot take both a positional FILE and subcommands.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.table import Table

from selfheal.cli.errors import UserError, err_console, user_errors
from selfheal.cli.operator import run_async
from selfheal.cli.render import make_console
from selfheal.core.catalog import load_services
from selfheal.core.forecasts import FORECASTS_FILE, load_forecast_rules
from selfheal.core.settings import get_settings
from selfheal.core.temporal import connect
from selfheal.detection.forecast import Direction, Forecast, forecast
from selfheal.detection.series_csv import read_series_csv
from selfheal.domain.errors import ConfigError
from selfheal.domain.forecast import parse_horizon
from selfheal.healings.schedules import (
    ForecastSchedule,
    ScheduleSync,
    list_forecast_schedules,
    sync_forecast_schedules,
)
from selfheal.workflows.contract import forecast_schedule_id

DIRECTIONS: tuple[Direction, ...] = ("up", "down")
EXTRAPOLATION = 10
"""a horizon longer than this many times the history is warned about"""


schedules_app = typer.Typer(
    help="The Temporal Schedules of the forecast rules (runbooks/forecasts.yaml).",
    no_args_is_help=True,
)
console = make_console()


def register(app: typer.Typer) -> None:
    app.command("forecast")(forecast_command)
    app.add_typer(schedules_app, name="schedules")


@user_errors
def forecast_command(
    file: Path = typer.Argument(..., help="CSV with a header row and columns timestamp,value"),
    threshold: float = typer.Option(
        ..., "--threshold", "-t", help="the level that must not be crossed"
    ),
    horizon: str = typer.Option(
        "24h", "--horizon", "-H", help="how far ahead: seconds or 90m, 24h, 7d"
    ),
    direction: str = typer.Option(
        "up",
        "--direction",
        help="up: the series rises to the threshold (disk used, memory); "
        "down: it falls to it (free bytes, certificate days left)",
    ),
    as_json: bool = typer.Option(False, "--json", help="print the forecast as JSON"),
) -> None:
    """Forecast FILE.csv (timestamp,value, as `selfheal detect` reads it) over the horizon: the
    probability that it crosses THRESHOLD, when, its trend and prediction interval."""
    if direction not in DIRECTIONS:
        raise UserError(f"--direction: expected up or down, got {direction!r}")
    try:
        horizon_s = parse_horizon(horizon)
    except ValueError as exc:
        raise UserError(f"--horizon: {exc}") from None
    series = read_series_csv(file)
    for warning in series.warnings("sorted by time, values of a repeated timestamp averaged"):
        err_console.print(f"warning: {warning}", markup=False)
    if not series.rows:
        raise UserError(f"{file}: no row with a usable timestamp and value")
    times = series.times
    history_s = max(times) - min(times)
    if horizon_s > EXTRAPOLATION * history_s:
        err_console.print(
            f"warning: {file}: the horizon ({_span(horizon_s)}) is more than {EXTRAPOLATION} "
            f"times the history ({_span(history_s)}); the trend is extrapolated far past "
            "what the data shows",
            markup=False,
        )
    try:
        result = forecast(
            times,
            series.values,
            threshold=threshold,
            horizon_s=horizon_s,
            direction="up" if direction == "up" else "down",
        )
    except ConfigError as exc:
        raise UserError(f"{file}: {exc}") from None
    # what the reader skipped counts too: a script reading --json sees every row not used
    result = result.model_copy(
        update={"points_skipped": result.points_skipped + len(series.skipped)}
    )
    if as_json:
        typer.echo(json.dumps(result.model_dump(mode="json"), indent=2))
    else:
        typer.echo(summary(result))


def summary(result: Forecast) -> str:
    """The human reading of a forecast, a few lines."""
    word = "rises to" if result.direction == "up" else "falls to"
    lines = [
        f"P(series {word} {result.threshold:g} within {_span(result.horizon_s)}): "
        f"{result.probability:.0%}"
    ]
    if result.already_crossed:
        other = "down" if result.direction == "up" else "up"
        lines.append(
            f"already beyond the threshold (expected level now {result.level:.4g}); if the "
            f"series must not {'fall' if other == 'down' else 'rise'} to it: --direction {other}"
        )
    elif result.crossing_at is not None:
        line = (
            f"expected crossing: {_utc(result.crossing_at)} "
            f"(in {_span(result.crossing_at - result.now)})"
        )
        if result.crossing_p10_at is not None:
            line += f"; 10 % of paths by {_utc(result.crossing_p10_at)}"
        lines.append(line)
    elif result.crossing_p10_at is not None:
        lines.append(
            "expected crossing: not within the horizon (fewer than half of the paths cross); "
            f"10 % of paths by {_utc(result.crossing_p10_at)}"
        )
    else:
        lines.append("expected crossing: not within the horizon")
    season = f", {_span(result.seasonal_period_s)} seasonality" if result.seasonal_period_s else ""
    lines.append(
        f"level now {result.level:.4g} at {_utc(result.now)}; trend {result.trend_per_hour:+.4g}"
        f"/h over the last {_span(result.trend_window_s)}{season}; noise {result.noise:.3g}"
    )
    end = result.path[-1]
    lines.append(
        f"at {_utc(end.at)}: {end.mean:.4g} ({result.interval:.0%} interval "
        f"{end.lower:.4g} .. {end.upper:.4g})"
    )
    notes = []
    if result.points_skipped:
        notes.append(f"{result.points_skipped} skipped")
    if result.repeated_timestamps:
        notes.append(f"{result.repeated_timestamps} repeated timestamps averaged")
    lines.append(f"points: {result.points_used} used" + "".join(f", {n}" for n in notes))
    return "\n".join(lines)


def _utc(seconds: float) -> str:
    try:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, ValueError, OSError):  # past the year 9999
        return f"{seconds:.0f} (unix seconds)"


def _span(seconds: float) -> str:
    if seconds >= 86_400 and seconds % 86_400 == 0:
        return f"{seconds / 86_400:g}d"
    if seconds >= 3600:
        return f"{seconds / 3600:.3g}h"
    if seconds >= 60:
        return f"{seconds / 60:.3g}m"
    return f"{seconds:.3g}s"


# -------------------------------------------------------------------------- schedules sync, list


@schedules_app.command("sync")
@user_errors
def sync_schedules(
    rules_path: Path | None = typer.Option(
        None, "--rules", help="the forecast rules (default: SELFHEAL_RUNBOOKS_DIR/forecasts.yaml)"
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="say what would change, change nothing"),
    as_json: bool = typer.Option(False, "--json", help="print what changed as JSON"),
) -> None:
    """Make the Schedules forecast-<rule> match the rules: create the missing ones, update
    those whose rule changed (a paused one stays paused), delete ours whose rule is gone. Rules
    are checked against the service catalog first (the services.yaml beside them, else
    SELFHEAL_RUNBOOKS_DIR's). Sync from the rules the workers read: a Schedule whose rule a
    worker does not have fails at every run. Exit 1 when a rule's Schedule id is taken by a
    Schedule that is not ours."""
    settings = get_settings()
    path = rules_path or settings.runbooks_dir / FORECASTS_FILE
    # the catalog beside the rules, as `selfheal rules check` reads it
    beside = path.parent / "services.yaml"
    catalog = load_services(beside if beside.is_file() else settings.runbooks_dir / "services.yaml")
    rules = load_forecast_rules(path, catalog=catalog)
    every = {forecast_schedule_id(r.name): _span(r.every_s) for r in rules.forecasts}

    async def work() -> ScheduleSync:
        client = await connect(settings.temporal, tracing=False)
        return await sync_forecast_schedules(
            client, rules, task_queue=settings.temporal.task_queue, dry_run=dry_run
        )

    result = run_async(work())
    if as_json:
        typer.echo(json.dumps(result.model_dump(mode="json"), indent=2))
    else:
        would = "would be " if dry_run else ""
        for what, ids in (
            ("created", result.created),
            ("updated", result.updated),
            ("deleted", result.deleted),
        ):
            for schedule_id in ids:
                detail = f" (every {every[schedule_id]})" if schedule_id in every else ""
                typer.echo(f"{schedule_id}: {would}{what}{detail}")
        typer.echo(
            f"{path}: {len(rules.forecasts)} rules; {len(result.created)} {would}created, "
            f"{len(result.updated)} {would}updated, {len(result.deleted)} {would}deleted, "
            f"{len(result.unchanged)} unchanged (task queue {settings.temporal.task_queue})"
        )
    for conflict in result.conflicts:
        err_console.print(f"error: {conflict}", markup=False)
    if result.conflicts:
        raise typer.Exit(1)


@schedules_app.command("list")
@user_errors
def list_schedules(
    as_json: bool = typer.Option(False, "--json", help="print JSON for scripts"),
) -> None:
    """The forecast Schedules on the Temporal server: each rule's interval, whether it is
    paused, its next forecast and its latest one."""
    settings = get_settings()

    async def work() -> list[ForecastSchedule]:
        client = await connect(settings.temporal, tracing=False)
        return await list_forecast_schedules(client)

    found = run_async(work())
    if as_json:
        typer.echo(json.dumps([s.model_dump(mode="json") for s in found], indent=2))
        return
    if not found:
        console.print("no forecast schedules (selfheal schedules sync creates them)", markup=False)
        return
    table = Table("schedule", "every", "state", "next", "latest")
    for one in found:
        table.add_row(
            one.id,
            _span(one.every_s) if one.every_s is not None else "-",
            "paused" + (f" ({one.note})" if one.note else "") if one.paused else "active",
            _when(one.next_at),
            _when(one.last_at) + (f" {one.last_workflow_id}" if one.last_workflow_id else ""),
        )
    console.print(table)


def _when(at: datetime | None) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if at is not None else "-"
