"""``selfheal forecast FILE.csv --threshold X``: the same CSV as ``selfheal detect``, a summary or
JSON; bad input is one line and exit code 2."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner, Result

from selfheal.cli.forecast import register

app = typer.Typer()


@app.callback()
def _root() -> None:
    """Stands in for the selfheal app, which registers the command the same way."""


register(app)

START = 1_700_006_400  # a midnight, UTC
HOUR = 3600


def run(*args: str) -> Result:
    return CliRunner().invoke(app, ["forecast", *args])


def disk_csv(path: Path, *, extra: str = "", iso: bool = False) -> Path:
    """Disk used %, 1 % per hour from 20 % with a little noise, every 10 minutes for 2 days:
    the last point is at 67.8 %, 90 % is reached 22.2 h later."""
    rng = np.random.default_rng(0)
    lines = ["timestamp,value"]
    for i in range(288):
        at = START + 600 * i
        stamp = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S") if iso else str(at)
        lines.append(f"{stamp},{20 + i / 6 + rng.normal(0, 0.2):.3f}")
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def test_json_says_when_the_disk_fills(tmp_path: Path) -> None:
    result = run(str(disk_csv(tmp_path / "d.csv")), "--threshold", "90", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["probability"] >= 0.7
    assert data["horizon_s"] == 86_400
    expected = START + 600 * 287 + 22.2 * HOUR
    assert abs(data["crossing_at"] - expected) < 1.5 * HOUR
    assert data["trend_per_hour"] == pytest.approx(1.0, rel=0.05)
    assert data["points_used"] == 288
    assert len(data["path"]) >= 2


def test_a_horizon_short_of_the_crossing(tmp_path: Path) -> None:
    source = disk_csv(tmp_path / "d.csv")
    for horizon in ("90m", "5400", "6h"):
        result = run(str(source), "--threshold", "90", "--horizon", horizon, "--json")
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        assert data["probability"] < 0.05, horizon
        assert data["crossing_at"] is None
    assert (
        json.loads(run(str(source), "-t", "90", "-H", "90m", "--json").stdout)["horizon_s"] == 5400
    )


def test_human_summary(tmp_path: Path) -> None:
    result = run(str(disk_csv(tmp_path / "d.csv", iso=True)), "--threshold", "90")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "P(series rises to 90 within 1d): 100%"
    assert lines[1].startswith("expected crossing: ") and " UTC (in 2" in lines[1]
    trend = re.search(r"trend ([-+][0-9.e+-]+)/h", result.stdout)
    assert trend is not None and float(trend[1]) == pytest.approx(1.0, rel=0.05)
    assert "80% interval" in result.stdout


def test_downwards(tmp_path: Path) -> None:
    path = tmp_path / "free.csv"
    path.write_text(
        "timestamp,value\n" + "".join(f"{START + HOUR * i},{100 - i}\n" for i in range(48))
    )  # 53 left at the last point, 1 per hour
    result = run(str(path), "-t", "40", "--direction", "down", "--json")
    data = json.loads(result.stdout)
    assert data["probability"] == 1.0
    assert data["crossing_at"] == pytest.approx(START + 60 * HOUR, abs=1)
    upward = json.loads(run(str(path), "-t", "110", "--json").stdout)
    assert upward["probability"] == 0.0
    assert json.loads(run(str(path), "-t", "40", "--json").stdout)["already_crossed"]


def test_messy_rows_are_warned_about_and_the_forecast_still_runs(tmp_path: Path) -> None:
    extra = f"{START},55\n{START + 600},abc\n{START + 1200},\n"  # a step back, two bad values
    source = disk_csv(tmp_path / "d.csv", extra=extra)
    result = run(str(source), "--threshold", "90", "--json")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        f"warning: {source}: 1 row repeats or steps back in time (first at line 290); "
        "sorted by time, values of a repeated timestamp averaged",
        f"warning: {source}:291: value 'abc' is not a number; skipped",
        f"warning: {source}:292: value is blank; skipped",
    ]
    data = json.loads(result.stdout)
    assert data["repeated_timestamps"] == 1
    assert data["points_used"] == 288
    assert data["points_skipped"] == 2  # the rows the reader skipped count as well


def test_corrupt_rows_are_skipped_not_fatal(tmp_path: Path) -> None:
    """A value no metric has (1e308: squaring it overflows) and a timestamp no clock has (1e30,
    past the year 9999 even as nanoseconds) are bad rows: named, skipped, and the forecast is
    that of the other rows, in valid JSON."""
    extra = f"{START + 600 * 288},1e308\n1e30,50\n"
    source = disk_csv(tmp_path / "d.csv", extra=extra)
    result = run(str(source), "--threshold", "90", "--json")
    assert result.exit_code == 0, result.output
    assert f"{source}:290: value '1e308' is beyond ±1e+150; skipped" in result.stderr
    assert f"{source}:291: timestamp '1e30' is past the year 9999" in result.stderr
    data = json.loads(result.stdout)  # strict JSON: no NaN
    clean = json.loads(run(str(disk_csv(tmp_path / "c.csv")), "-t", "90", "--json").stdout)
    assert (data["points_used"], data["points_skipped"]) == (288, 2)
    assert data["crossing_at"] == clean["crossing_at"]
    assert data["level"] == clean["level"]


def test_a_horizon_far_past_the_history_is_warned_about(tmp_path: Path) -> None:
    result = run(str(disk_csv(tmp_path / "d.csv")), "-t", "900", "-H", "3650d")
    assert result.exit_code == 0, result.output
    assert "the horizon (3650d) is more than 10 times the history (47.8h)" in result.stderr
    assert "warning" not in run(str(disk_csv(tmp_path / "d.csv")), "-t", "900").stderr


def test_already_beyond_suggests_the_other_direction(tmp_path: Path) -> None:
    path = tmp_path / "free.csv"
    path.write_text(
        "timestamp,value\n" + "".join(f"{START + HOUR * i},{100 - i}\n" for i in range(48))
    )
    lines = run(str(path), "-t", "10").stdout.splitlines()
    assert lines[1] == (
        "already beyond the threshold (expected level now 53); "
        "if the series must not fall to it: --direction down"
    )
    lines = run(str(path), "-t", "60", "--direction", "down").stdout.splitlines()
    assert lines[1].endswith("if the series must not rise to it: --direction up")


def assert_one_line_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--horizon", "soon"], ["--horizon", "'soon'", "15m"]),
        (["--horizon", "0"], ["--horizon", "positive"]),
        (["--horizon", "3651d"], ["--horizon", "at most 3650d", "'3651d'"]),
        (["--direction", "sideways"], ["--direction", "up or down", "'sideways'"]),
    ],
)
def test_bad_options(tmp_path: Path, args: list[str], fragments: list[str]) -> None:
    source = disk_csv(tmp_path / "d.csv")
    assert_one_line_error(run(str(source), "--threshold", "90", *args), *fragments)


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        ("time,value\n1,2\n", [":1:", "missing column timestamp"]),
        ("timestamp,value\n1700000000,1\n1700000060,2\n", ["2 usable points", "at least"]),
        ("timestamp,value\n1700000000,x\n", ["no row with a usable timestamp and value"]),
    ],
)
def test_bad_files(tmp_path: Path, content: str, fragments: list[str]) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    assert_one_line_error(run(str(path), "--threshold", "1"), *fragments)


def test_missing_file(tmp_path: Path) -> None:
    assert_one_line_error(run(str(tmp_path / "nope.csv"), "-t", "1"), "nope.csv", "cannot read")
