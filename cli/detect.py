"""``selfheal detect FILE.csv``: score an exported time series, to tune detectors offline."""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import typer
from pydantic import BaseModel, ValidationError

from selfheal.cli.errors import UserError, describe_validation_error, err_console, user_errors
from selfheal.detection.detectors import DETECTORS
from selfheal.detection.series_csv import SeriesRow, read_series_csv

# Chosen on NAB (bench/nab.py: one threshold for every series); see bench/results/nab.md.
DEFAULT_DETECTOR = "likelihood"


def register(app: typer.Typer) -> None:
    app.command("detect")(detect)


@user_errors
def detect(
    file: Path = typer.Argument(..., help="CSV with a header row and columns timestamp,value"),
    detector: str = typer.Option(
        DEFAULT_DETECTOR,
        "--detector",
        "-d",
        help="one of: " + ", ".join(f"{name} ({kind.summary})" for name, kind in DETECTORS.items()),
    ),
    param: list[str] = typer.Option(
        [],
        "--param",
        "-p",
        help="detector parameter as KEY=VALUE (repeatable), e.g. warmup=50 (likelihood), "
        "sigma=4 (zscore, ewma); KEY=null turns off an optional one (range_margin=null)",
    ),
    output: Path | None = typer.Option(None, "--output", "-o", help="write here instead of stdout"),
) -> None:
    """Score every point of FILE.csv; writes timestamp,value,anomaly_score (score in [0, 1],
    0.5 = the detector's threshold). Timestamps: unix seconds, YYYY-MM-DD HH:MM:SS or ISO 8601
    (UTC unless they say otherwise). Points are scored in file order, as a streaming detector
    sees them; rows with a blank or non-numeric value are skipped, with a warning naming them."""
    kind = DETECTORS.get(detector)
    if kind is None:
        raise UserError(
            f"--detector: unknown detector {detector!r}; expected one of " + ", ".join(DETECTORS)
        )
    try:
        params = kind.params.model_validate(_params(param))
    except ValidationError as exc:
        raise UserError(describe_validation_error(exc, source="--param")) from None
    scorer = kind.make(params)
    series = read_series_csv(file)
    for warning in series.warnings("scored in file order"):
        err_console.print(f"warning: {warning}", markup=False)
    rows = series.rows
    if not rows:
        raise UserError(f"{file}: no row with a usable timestamp and value")
    learning = _learning_points(params)
    if len(rows) <= learning:
        err_console.print(
            f"warning: {file}: {len(rows)} points; {detector} learns from the first "
            f"{learning} before it scores any, so every score is 0",
            markup=False,
        )
    if output is None:
        _write(sys.stdout, rows, scorer.update)
        return
    try:
        with output.open("w", newline="", encoding="utf-8") as out:
            _write(out, rows, scorer.update)
    except OSError as exc:
        raise UserError(f"{output}: cannot write: {exc.strerror or exc}") from None


def _learning_points(params: BaseModel) -> int:
    """Points a detector learns before its first score (its ``warmup`` or ``min_points``)."""
    counts = [getattr(params, name, 0) for name in ("warmup", "min_points")]
    return max((c for c in counts if isinstance(c, int)), default=0)


def _params(items: list[str]) -> dict[str, str | None]:
    """KEY=VALUE pairs for the detector's params model; ``null`` is None (as in YAML)."""
    params: dict[str, str | None] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--param: expected KEY=VALUE, got {item!r}")
        value = value.strip()
        params[key.strip()] = None if value == "null" else value
    return params


def _write(out: TextIO, rows: list[SeriesRow], score: Callable[[float, float], float]) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["timestamp", "value", "anomaly_score"])
    for row in rows:
        writer.writerow([row.stamp, row.raw, f"{score(row.at, row.value):.6f}"])
