"""The one reader of a ``timestamp,value`` CSV, shared by ``selfheal detect`` and
``selfheal forecast``.

Real exports are messy, and a streaming detector sees points as they arrive, so the reader
accepts what it can and says what it did:

- rows that repeat a timestamp or step back in time are kept, in file order, and counted
  (``out_of_order``, with the first such line);
- a row whose value is blank, not a number, not finite or beyond ±``LARGEST_VALUE``, whose
  timestamp cannot be read or lies past the year 9999, or that has too few columns is skipped
  and recorded with its line (``skipped``);
- what cannot be read at all is a ``ConfigError`` of one line: a missing ``timestamp`` or
  ``value`` column, text that is not UTF-8, a file that is not CSV.

Timestamps: unix seconds, ``YYYY-MM-DD HH:MM:SS`` or ISO 8601; without a zone, UTC. A numeric
timestamp too large for seconds (from 1e11, past the year 5000) is read as milliseconds (or
micro-, nanoseconds), with a warning.
``warnings`` turns what was accepted into the lines a command prints; the parser prints nothing.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from selfheal.domain.errors import ConfigError
from selfheal.domain.forecast import LARGEST_VALUE

COLUMNS = ("timestamp", "value")
LATEST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()
"""Later (or as early before 1970) numeric timestamps are skipped: no clock says so."""
WARNING_LINES = 5
"""skipped rows named one by one before the rest are counted"""


@dataclass(frozen=True)
class SeriesRow:
    line: int
    stamp: str
    """the timestamp as written"""
    raw: str
    """the value as written"""
    at: float
    """unix seconds"""
    value: float


_KINDS = {"columns": "too few columns", "timestamp": "a bad timestamp", "value": "a bad value"}


@dataclass(frozen=True)
class SkippedRow:
    line: int
    kind: str
    """``value``, ``timestamp`` or ``columns``: what was wrong"""
    reason: str


@dataclass(frozen=True)
class SeriesCsv:
    source: str
    rows: list[SeriesRow] = field(default_factory=list)
    skipped: list[SkippedRow] = field(default_factory=list)
    out_of_order: int = 0
    """rows whose timestamp repeats or precedes one already read"""
    first_out_of_order_line: int | None = None
    epoch_units: dict[str, int] = field(default_factory=dict)
    """numeric timestamps read in a unit other than seconds, by unit (e.g. milliseconds)"""

    @property
    def times(self) -> list[float]:
        return [row.at for row in self.rows]

    @property
    def values(self) -> list[float]:
        return [row.value for row in self.rows]

    def warnings(self, order: str, *, limit: int = WARNING_LINES) -> list[str]:
        """One line per thing accepted with a change; ``order`` says what the command does with
        rows out of time order (e.g. ``scored in file order``)."""
        lines: list[str] = []
        for unit, count in self.epoch_units.items():
            lines.append(
                f"{self.source}: {count} timestamp(s) too large for seconds since the epoch; "
                f"read as {unit}"
            )
        if self.out_of_order:
            rows = "row repeats or steps" if self.out_of_order == 1 else "rows repeat or step"
            lines.append(
                f"{self.source}: {self.out_of_order} {rows} back in time "
                f"(first at line {self.first_out_of_order_line}); {order}"
            )
        for row in self.skipped[:limit]:
            lines.append(f"{self.source}:{row.line}: {row.reason}; skipped")
        rest = self.skipped[limit:]
        if rest:
            kinds = Counter(row.kind for row in rest)
            what = ", ".join(
                f"{count} with {_KINDS[kind]}" for kind, count in sorted(kinds.items())
            )
            lines.append(f"{self.source}: {len(rest)} more rows skipped ({what})")
        return lines


def read_series_csv(path: Path) -> SeriesCsv:
    """``parse_series_csv`` of a file; a file that cannot be opened is a ``ConfigError``."""
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    with handle:
        return parse_series_csv(handle, str(path))


def parse_series_csv(lines: Iterable[str], source: str) -> SeriesCsv:
    """Rows of a CSV whose header names ``timestamp`` and ``value`` (any case, any order, other
    columns ignored), in file order. ``lines`` as ``csv.reader`` takes them (a file opened with
    ``newline=""``); ``source`` names it in messages."""
    reader = csv.reader(lines)
    rows: list[SeriesRow] = []
    skipped: list[SkippedRow] = []
    out_of_order = 0
    first_out_of_order: int | None = None
    epoch_units: dict[str, int] = {}
    try:
        header = [cell.strip().lower() for cell in next(reader, [])]
        missing = [name for name in COLUMNS if name not in header]
        if missing:
            raise ConfigError(
                f"{source}:1: missing column {', '.join(missing)}; expected a header row "
                "with timestamp,value"
            )
        t_col, v_col = header.index("timestamp"), header.index("value")
        latest = -math.inf
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            line = reader.line_num
            if len(row) <= max(t_col, v_col):
                reason = f"expected {len(header)} columns, got {len(row)}"
                skipped.append(SkippedRow(line, "columns", reason))
                continue
            stamp, raw = row[t_col].strip(), row[v_col].strip()
            at = parse_timestamp(stamp)
            if at is None:
                reason = f"timestamp {stamp!r} is not unix seconds, YYYY-MM-DD HH:MM:SS or ISO 8601"
                skipped.append(SkippedRow(line, "timestamp", reason))
                continue
            if abs(at) > LATEST:
                reason = f"timestamp {stamp!r} is past the year 9999 in any unit"
                skipped.append(SkippedRow(line, "timestamp", reason))
                continue
            value = _value(raw)
            if isinstance(value, str):
                skipped.append(SkippedRow(line, "value", value))
                continue
            unit = _numeric_unit(stamp)
            if unit is not None:
                epoch_units[unit] = epoch_units.get(unit, 0) + 1
            if at <= latest:
                out_of_order += 1
                first_out_of_order = first_out_of_order or line
            latest = max(latest, at)
            rows.append(SeriesRow(line, stamp, raw, at, value))
    except csv.Error as exc:
        raise ConfigError(f"{source}:{reader.line_num}: not valid CSV: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: not UTF-8 text") from None
    return SeriesCsv(source, rows, skipped, out_of_order, first_out_of_order, epoch_units)


def _numeric_unit(stamp: str) -> str | None:
    """The unit a numeric timestamp was read in, when not seconds."""
    try:
        number = float(stamp)
    except ValueError:
        return None
    unit = epoch_scale(number)[1]
    return None if unit == "seconds" else unit


def parse_timestamp(text: str) -> float | None:
    """Unix seconds of ``text`` (unix seconds, ``YYYY-MM-DD HH:MM:SS`` or ISO 8601, UTC unless
    it says otherwise); None when it is none of these."""
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    if not math.isfinite(seconds):
        return None
    return seconds / epoch_scale(seconds)[0]


EPOCH_UNITS = ((1e17, 1e9, "nanoseconds"), (1e14, 1e6, "microseconds"), (1e11, 1e3, "milliseconds"))
"""A number of seconds from 1e11 on is past the year 5000: such a timestamp counts smaller units
(Grafana and most JavaScript export milliseconds)."""


def epoch_scale(number: float) -> tuple[float, str]:
    """(divisor, unit) that turns a numeric timestamp into seconds."""
    for at_least, divisor, unit in EPOCH_UNITS:
        if abs(number) >= at_least:
            return divisor, unit
    return 1.0, "seconds"


def _value(text: str) -> float | str:
    """The number, or why it is not one."""
    if not text:
        return "value is blank"
    try:
        value = float(text)
    except ValueError:
        return f"value {text!r} is not a number"
    if not math.isfinite(value):
        return f"value {text!r} is not a finite number"
    if abs(value) > LARGEST_VALUE:
        return f"value {text!r} is beyond ±{LARGEST_VALUE:g}"
    return value
