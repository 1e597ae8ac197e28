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
from tests.unit.test_detectors import spiky_series

app = typer.Typer()


@app.callback()
def _root() -> None:
    """Stands in for the selfheal app, which registers the command the same way."""


register(app)


def run(*args: str) -> Result:
    return CliRunner().invoke(app, ["detect", *args])


N = 400
SPIKE = 300  # after the default detector's warm-up (150 points)


def series_csv(path: Path, *, unix: bool, spike_at: int = SPIKE, n: int = N) -> Path:
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
    assert len(rows) == N
    assert list(rows[0]) == ["timestamp", "value", "anomaly_score"]
    originals = parse(source.read_text())
    assert [(r["timestamp"], r["value"]) for r in rows] == [
        (o["timestamp"], o["value"]) for o in originals
    ]
    scores = [float(r["anomaly_score"]) for r in rows]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert max(range(N), key=scores.__getitem__) == SPIKE
    assert scores[SPIKE] > 0.9


def test_output_file_detector_and_params(tmp_path: Path) -> None:
    source = series_csv(tmp_path / "s.csv", unix=True)
    out = tmp_path / "out.csv"
    result = run(str(source), "--detector", "ewma", "--param", "sigma=100", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    rows = parse(out.read_text())
    assert len(rows) == N
    assert float(rows[SPIKE]["anomaly_score"]) < 0.5  # sigma=100 tolerates the spike


def test_null_turns_off_an_optional_param(tmp_path: Path) -> None:
    """A series spiking one point in five, then a value beyond all of them: the range rule
    scores it 1; with ``range_margin=null`` the likelihood alone (used to big jolts) does not."""
    values = spiky_series(2000)
    values.append(max(values) + 10)
    source = tmp_path / "spiky.csv"
    rows = (f"{1_700_000_000 + 60 * i},{v:.6f}" for i, v in enumerate(values))
    source.write_text("timestamp,value\n" + "\n".join(rows) + "\n")
    params = ("-p", "hold=0")
    on, off = run(str(source), *params), run(str(source), *params, "-p", "range_margin=null")
    assert on.exit_code == 0 and off.exit_code == 0, (on.output, off.output)
    assert float(parse(on.stdout)[-1]["anomaly_score"]) == 1.0
    assert float(parse(off.stdout)[-1]["anomaly_score"]) < 0.5
    assert_one_line_error(run(str(source), "-p", "warmup=null"), "--param", "warmup", "integer")


def test_every_registered_detector_runs(tmp_path: Path) -> None:
    source = series_csv(tmp_path / "s.csv", unix=True)
    assert DEFAULT_DETECTOR in DETECTORS
    for name in DETECTORS:
        result = run(str(source), "-d", name)
        assert result.exit_code == 0, (name, result.output)
        assert len(parse(result.stdout)) == N


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
        ("timestamp,value\n1700000000,1\n1700000060," + "9" * 200_000 + "\n",
         [":3:", "not valid CSV", "field larger than field limit"]),
    ],
)  # fmt: skip
def test_a_file_that_cannot_be_read_is_one_line(
    tmp_path: Path, content: str, fragments: list[str]
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    assert_one_line_error(run(str(path)), str(path), *fragments)


def test_text_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("timestamp,value\n1700000000,1\n1700000060,caf\xe9\n".encode("latin-1"))
    assert_one_line_error(run(str(path)), str(path), "not UTF-8")


def warnings_of(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("warning: ")]


def reader_warnings(result: Result) -> list[str]:
    """The warnings about the file's rows, without the one about a series shorter than the
    detector's warm-up (the short files here all are)."""
    return [line for line in warnings_of(result) if "before it scores any" not in line]


def test_out_of_order_and_repeated_rows_are_scored_in_file_order_with_a_count(
    tmp_path: Path,
) -> None:
    stamps = [1_700_000_000 + 60 * i for i in range(30)]
    # a repeat at data row 11 (line 12), a step back at row 21 and the row after it
    stamps[10] = stamps[9]
    stamps[20], stamps[21] = stamps[5], stamps[6]
    path = tmp_path / "messy.csv"
    path.write_text("timestamp,value\n" + "".join(f"{t},{i}\n" for i, t in enumerate(stamps)))
    result = run(str(path))
    assert result.exit_code == 0, result.output
    rows = parse(result.stdout)
    assert [r["value"] for r in rows] == [str(i) for i in range(30)]  # file order, all kept
    assert [r["timestamp"] for r in rows] == [str(t) for t in stamps]
    assert reader_warnings(result) == [
        f"warning: {path}: 3 rows repeat or step back in time (first at line 12); "
        "scored in file order"
    ]


def test_millisecond_timestamps_are_read_as_such_with_a_warning(tmp_path: Path) -> None:
    """Grafana exports milliseconds: read as seconds they would put the series in the year
    55,000 and every step 1000 times too long (a daily season never seen)."""
    seconds = series_csv(tmp_path / "s.csv", unix=True)
    millis = tmp_path / "ms.csv"
    body = seconds.read_text().splitlines()
    millis.write_text(
        "\n".join([body[0], *(f"{int(t) * 1000},{v}" for t, v in (r.split(",") for r in body[1:]))])
        + "\n"
    )
    in_seconds, in_millis = run(str(seconds), "-d", "ewma"), run(str(millis), "-d", "ewma")
    assert in_millis.exit_code == 0, in_millis.output
    scores = [r["anomaly_score"] for r in parse(in_millis.stdout)]
    assert scores == [r["anomaly_score"] for r in parse(in_seconds.stdout)]
    assert warnings_of(in_millis) == [
        f"warning: {millis}: {N} timestamp(s) too large for seconds since the epoch; "
        "read as milliseconds"
    ]
    assert warnings_of(in_seconds) == []


def test_blank_and_non_numeric_values_are_skipped_with_their_line(tmp_path: Path) -> None:
    lines = ["timestamp,value", "1700000000,1", "1700000060,", "1700000120,abc",
             "2024-13-01 00:00:00,3", "1700000180,nan", "1700000240", "1700000300,4",
             "2024-01-01T00:10:00Z,5"]  # fmt: skip
    path = tmp_path / "holes.csv"
    path.write_text("\n".join(lines) + "\n")
    result = run(str(path))
    assert result.exit_code == 0, result.output
    assert [r["value"] for r in parse(result.stdout)] == ["1", "4", "5"]
    assert reader_warnings(result) == [
        f"warning: {path}:3: value is blank; skipped",
        f"warning: {path}:4: value 'abc' is not a number; skipped",
        f"warning: {path}:5: timestamp '2024-13-01 00:00:00' is not unix seconds, "
        "YYYY-MM-DD HH:MM:SS or ISO 8601; skipped",
        f"warning: {path}:6: value 'nan' is not a finite number; skipped",
        f"warning: {path}:7: expected 2 columns, got 1; skipped",
    ]


def test_many_bad_rows_are_named_up_to_a_limit_then_counted(tmp_path: Path) -> None:
    body = "".join(f"{1_700_000_000 + 60 * i},{'x' if i % 2 else i}\n" for i in range(40))
    path = tmp_path / "many.csv"
    path.write_text("timestamp,value\n" + body)
    result = run(str(path))
    assert result.exit_code == 0, result.output
    assert len(parse(result.stdout)) == 20
    warned = reader_warnings(result)
    assert len(warned) == 6
    assert warned[0] == f"warning: {path}:3: value 'x' is not a number; skipped"
    assert warned[-1] == f"warning: {path}: 15 more rows skipped (15 with a bad value)"


def test_every_detector_scores_a_messy_file_without_failing(tmp_path: Path) -> None:
    rng = random.Random(3)
    lines = ["timestamp,value"]
    for i in range(200):
        stamp = 1_700_000_000 + 60 * i + rng.choice([0, 0, 0, -120, -60])  # repeats, steps back
        lines.append(f"{stamp},{rng.choice(['', 'n/a']) if i % 17 == 0 else rng.gauss(5, 1)}")
    path = tmp_path / "messy.csv"
    path.write_text("\n".join(lines) + "\n")
    for name in DETECTORS:
        result = run(str(path), "-d", name)
        assert result.exit_code == 0, (name, result.output)
        assert len(parse(result.stdout)) == 200 - len(range(0, 200, 17)), name
        assert "Traceback" not in result.output


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
    assert_one_line_error(run(str(source), "-d", "zscore", "-p", param), *fragments)


def test_missing_file_and_unwritable_output(tmp_path: Path) -> None:
    assert_one_line_error(run(str(tmp_path / "nope.csv")), "nope.csv", "cannot read")
    source = series_csv(tmp_path / "s.csv", unix=True)
    target = tmp_path / "no-such-dir" / "out.csv"
    assert_one_line_error(run(str(source), "-o", str(target)), "out.csv", "cannot write")


def test_a_file_without_a_usable_row_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("timestamp,value\n")
    assert_one_line_error(run(str(path)), "empty.csv", "no row with a usable timestamp and value")


def test_fewer_points_than_the_warm_up_are_warned_about(tmp_path: Path) -> None:
    short = series_csv(tmp_path / "short.csv", unix=True, n=150, spike_at=140)
    result = run(str(short))
    assert result.exit_code == 0, result.output
    assert {r["anomaly_score"] for r in parse(result.stdout)} == {"0.000000"}
    assert warnings_of(result) == [
        f"warning: {short}: 150 points; likelihood learns from the first 150 before it scores "
        "any, so every score is 0"
    ]
    assert warnings_of(run(str(short), "-d", "zscore")) == []  # it learns 10
    assert warnings_of(run(str(short), "-p", "warmup=100")) == []


def test_wild_values_and_impossible_times_are_skipped(tmp_path: Path) -> None:
    source = series_csv(tmp_path / "s.csv", unix=True)
    path = tmp_path / "wild.csv"
    path.write_text(source.read_text() + "1700030000,-1e151\n1e30,5\n")
    result = run(str(path))
    assert result.exit_code == 0, result.output
    assert len(parse(result.stdout)) == N
    assert warnings_of(result) == [
        f"warning: {path}:402: value '-1e151' is beyond ±1e+150; skipped",
        f"warning: {path}:403: timestamp '1e30' is past the year 9999 in any unit; skipped",
    ]
