"""``selfheal detect FILE.csv``: score an exported time series, to tune detectors offline."""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import typer
from pydantic import ValidationError

from selfheal.cli.errors import UserError, describe_validation_error, user_errors
from selfheal.detection.detectors import DETECTORS

# Chosen by bench/detectors.py (best F1 on injected anomalies); see bench/results/detectors.md.
DEFAULT_DETECTOR = "zscore"

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


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
        [], "--param", "-p", help="detector parameter as KEY=VALUE (repeatable), e.g. sigma=4"
    ),
    output: Path | None = typer.Option(None, "--output", "-o", help="write here instead of stdout"),
) -> None:
    """Score every point of FILE.csv; writes timestamp,value,anomaly_score (score in [0, 1],
    0.5 = the detector's threshold). Timestamps: YYYY-MM-DD HH:MM:SS (UTC) or unix seconds."""
    kind = DETECTORS.get(detector)
    if kind is None:
        raise UserError(
            f"--detector: unknown detector {detector!r}; expected one of " + ", ".join(DETECTORS)
        )
    try:
        scorer = kind.make(_params(param))
    except ValidationError as exc:
        raise UserError(describe_validation_error(exc, source="--param")) from None
    rows = list(_read(file))
    if output is None:
        _write(sys.stdout, rows, scorer.update)
        return
    try:
        with output.open("w", newline="", encoding="utf-8") as out:
            _write(out, rows, scorer.update)
    except OSError as exc:
        raise UserError(f"{output}: cannot write: {exc.strerror or exc}") from None


def _params(items: list[str]) -> dict[str, str]:
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--param: expected KEY=VALUE, got {item!r}")
        params[key.strip()] = value.strip()
    return params


def _read(file: Path) -> Iterator[tuple[str, str, float, float]]:
    """(timestamp text, value text, timestamp s, value) per data row; UserError names the line."""
    try:
        handle = file.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise UserError(f"{file}: cannot read: {exc.strerror or exc}") from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = [cell.strip().lower() for cell in next(reader, [])]
            missing = [name for name in ("timestamp", "value") if name not in header]
            if missing:
                raise UserError(
                    f"{file}:1: missing column {', '.join(missing)}; expected a header row "
                    "with timestamp,value"
                )
            t_col, v_col = header.index("timestamp"), header.index("value")
            previous = -math.inf
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                line = reader.line_num
                if len(row) <= max(t_col, v_col):
                    raise UserError(
                        f"{file}:{line}: expected {len(header)} columns, got {len(row)}"
                    )
                stamp, raw = row[t_col].strip(), row[v_col].strip()
                seconds = _timestamp(stamp, file, line)
                if seconds < previous:
                    raise UserError(
                        f"{file}:{line}: timestamp {stamp!r} is earlier than the row before; "
                        "expected rows in time order"
                    )
                previous = seconds
                yield stamp, raw, seconds, _value(raw, file, line)
        except csv.Error as exc:
            raise UserError(f"{file}:{reader.line_num}: not valid CSV: {exc}") from None
        except UnicodeDecodeError:
            raise UserError(f"{file}: not UTF-8 text") from None


def _timestamp(text: str, file: Path, line: int) -> float:
    try:
        seconds = float(text)
    except ValueError:
        try:
            return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=UTC).timestamp()
        except ValueError:
            raise UserError(
                f"{file}:{line}: timestamp {text!r}: expected YYYY-MM-DD HH:MM:SS or unix seconds"
            ) from None
    if not math.isfinite(seconds):
        raise UserError(f"{file}:{line}: timestamp {text!r}: expected a finite number")
    return seconds


def _value(text: str, file: Path, line: int) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise UserError(f"{file}:{line}: value {text!r}: expected a finite number")
    return value


def _write(
    out: TextIO, rows: list[tuple[str, str, float, float]], score: Callable[[float, float], float]
) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["timestamp", "value", "anomaly_score"])
    for stamp, raw, seconds, value in rows:
        writer.writerow([stamp, raw, f"{score(seconds, value):.6f}"])
