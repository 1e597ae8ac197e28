"""``selfheal detect FILE.csv``: scores every point; bad input is one line and exit code 2."""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from selfheal.cli.detect import DEFAULT_DETECTOR, register
from selfheal.detection.detectors import DETECTORS

app = typer.Typer()


@app.callback()
def _root() -> None:
    """Stands in for the selfheal app, which registers the command the same way."""


register(app)


def run(*args: str) -> Result:
    return CliRunner().invoke(app, ["detect", *args])


def series_csv(path: Path, *, unix: bool, spike_at: int = 80, n: int = 100) -> Path:
    rng = random.Random(5)
    lines = ["timestamp,value"]
    for i in range(n):
        value = 100 + rng.gauss(0, 2) + (40 if i == spike_at else 0)
        stamp = str(1_700_000_000 + 60 * i) if unix else f"2024-01-01 {i // 60:02d}:{i % 60:02d}:00"
        lines.append(f"{stamp},{value:.3f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def parse(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.parametrize("unix", [True, False])
def test_scores_every_point_and_the_spike_highest(tmp_path: Path, unix: bool) -> None:
    source = series_csv(tmp_path / "s.csv", unix=unix)
    result = run(str(source))
    assert result.exit_code == 0, result.output
    rows = parse(result.stdout)
    assert len(rows) == 100
    assert list(rows[0]) == ["timestamp", "value", "anomaly_score"]
    originals = parse(source.read_text())
    assert [(r["timestamp"], r["value"]) for r in rows] == [
        (o["timestamp"], o["value"]) for o in originals
    ]
    scores = [float(r["anomaly_score"]) for r in rows]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert max(range(100), key=scores.__getitem__) == 80
    assert scores[80] > 0.9


def test_output_file_detector_and_params(tmp_path: Path) -> None:
    source = series_csv(tmp_path / "s.csv", unix=True)
    out = tmp_path / "out.csv"
    result = run(str(source), "--detector", "ewma", "--param", "sigma=100", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    rows = parse(out.read_text())
    assert len(rows) == 100
    assert float(rows[80]["anomaly_score"]) < 0.5  # sigma=100 tolerates the spike


def test_every_registered_detector_runs(tmp_path: Path) -> None:
    source = series_csv(tmp_path / "s.csv", unix=True)
    assert DEFAULT_DETECTOR in DETECTORS
    for name in DETECTORS:
        result = run(str(source), "-d", name)
        assert result.exit_code == 0, (name, result.output)
        assert len(parse(result.stdout)) == 100


def test_columns_are_found_by_header_in_any_order(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("value,host,Timestamp\n1.5,a,1700000000\n2.5,a,1700000060\n")
    result = run(str(path))
    assert result.exit_code == 0, result.output
    assert [(r["timestamp"], r["value"]) for r in parse(result.stdout)] == [
        ("1700000000", "1.5"),
        ("1700000060", "2.5"),
    ]


def assert_one_line_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        ("time,value\n1,2\n", [":1:", "missing column timestamp"]),
        ("timestamp\n1\n", [":1:", "missing column value"]),
        ("", [":1:", "missing column timestamp, value"]),
        ("timestamp,value\n1700000000,1\n2024-13-01 00:00:00,2\n",
         [":3:", "timestamp '2024-13-01 00:00:00'", "YYYY-MM-DD HH:MM:SS or unix seconds"]),
        ("timestamp,value\n1700000000,1\n\n1700000060,fast\n", [":4:", "value 'fast'"]),
        ("timestamp,value\n1700000000,nan\n", [":2:", "value 'nan'", "finite"]),
        ("timestamp,value\n1700000060,1\n1700000000,2\n", [":3:", "earlier", "time order"]),
        ("timestamp,value\n1700000000\n", [":2:", "expected 2 columns, got 1"]),
    ],
)  # fmt: skip
def test_bad_csv_is_one_line_naming_the_problem(
    tmp_path: Path, content: str, fragments: list[str]
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    assert_one_line_error(run(str(path)), str(path), *fragments)


def test_unknown_detector(tmp_path: Path) -> None:
    source = series_csv(tmp_path / "s.csv", unix=True)
    assert_one_line_error(run(str(source), "-d", "magic"), "--detector", "'magic'", "zscore")


@pytest.mark.parametrize(
    ("param", "fragments"),
    [("sigma", ["KEY=VALUE", "'sigma'"]), ("sigma=x", ["--param", "sigma", "valid number"]),
     ("colour=red", ["--param", "colour", "Extra inputs"])],
)  # fmt: skip
def test_bad_params(tmp_path: Path, param: str, fragments: list[str]) -> None:
    source = series_csv(tmp_path / "s.csv", unix=True)
    assert_one_line_error(run(str(source), "-p", param), *fragments)


def test_missing_file_and_unwritable_output(tmp_path: Path) -> None:
    assert_one_line_error(run(str(tmp_path / "nope.csv")), "nope.csv", "cannot read")
    source = series_csv(tmp_path / "s.csv", unix=True)
    target = tmp_path / "no-such-dir" / "out.csv"
    assert_one_line_error(run(str(source), "-o", str(target)), "out.csv", "cannot write")
