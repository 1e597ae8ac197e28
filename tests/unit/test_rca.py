"""``diagnosis.rca`` and ``selfheal rca``: robust change scores, the call graph, messy CSVs, and
one-line errors for bad input."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from selfheal.cli.rca import register
from selfheal.diagnosis.rca import (
    ServiceScore,
    analyse,
    graph_from_mapping,
    parse_graph_csv,
    parse_metrics_csv,
    rank_services,
    zscore_ranking,
)
from selfheal.domain.errors import ConfigError

FAULT = 1000.0
STEP = 10.0


def series(
    before: int = 60, after: int = 6, *, level: float = 10.0, noise: float = 1.0,
    jump: float = 0.0, seed: int = 0,
) -> list[tuple[float, float]]:  # fmt: skip
    """Points every STEP s around FAULT: gaussian noise, plus ``jump`` from FAULT on."""
    rng = random.Random(seed)
    points = []
    for i in range(-before, after):
        t = FAULT + i * STEP
        points.append((t, level + rng.gauss(0, noise) + (jump if t >= FAULT else 0.0)))
    return points


def names(ranking: list[ServiceScore]) -> list[str]:
    return [s.service for s in ranking]


# ------------------------------------------------------------------------------ scores


def test_a_jumping_service_ranks_first_with_its_metric() -> None:
    frame = {
        "api": {"latency": series(seed=1), "errors": series(seed=2)},
        "db": {"latency": series(seed=3, jump=12.0), "cpu": series(seed=4)},
        "cache": {"hits": series(seed=5)},
    }
    ranking = rank_services(frame, FAULT)
    assert names(ranking)[0] == "db"
    assert ranking[0].metrics[0].metric == "latency"
    assert ranking[0].score > 5 > ranking[1].score


def test_a_flat_series_moving_by_a_hair_does_not_dominate() -> None:
    flat = [(t, 5.0) for t, _ in series()]
    hair = [(t, v + (1e-4 if t >= FAULT else 0.0)) for t, v in flat]
    zero_flat = [(t, 0.0) for t, _ in series()]
    zero_hair = [(t, 1e-7 if t >= FAULT else 0.0) for t, _ in zero_flat]
    frame = {
        "web": {"latency": series(seed=1, jump=6.0)},
        "queue": {"depth": hair},
        "batch": {"errors": zero_hair},
    }
    ranking = rank_services(frame, FAULT)
    assert names(ranking)[0] == "web"
    scores = {s.service: s.score for s in ranking}
    assert scores["queue"] < 1
    assert math.isfinite(scores["batch"]) and scores["batch"] < scores["web"]


def test_a_flat_availability_that_drops_is_anomalous_and_its_callee_is_the_cause() -> None:
    # Availabilities stuck at 100 % have no spread: a drop of a few percent is still a change
    # (just anomalous), and the graph puts the callee that dropped first; a drop already there
    # before the fault is none.
    def availability(drop: float, *, early: bool = False) -> list[tuple[float, float]]:
        return [(t, 100.0 - (drop if t >= FAULT - (10 * STEP if early else 0.0) else 0.0))
                for t, _ in series()]  # fmt: skip

    frame = {
        "web": {"availability": availability(2.5)},
        "api": {"availability": availability(4.0)},
        "old": {"availability": availability(30.0, early=True)},
        "hair": {"availability": availability(1e-4)},
    }
    scores = {s.service: s.score for s in rank_services(frame, FAULT)}
    assert scores["web"] == scores["api"] == pytest.approx(5.0)
    assert scores["hair"] < 1
    graph = {"web": ["api", "old", "hair"]}
    assert names(rank_services(frame, FAULT, graph, symptom="web"))[:2] == ["api", "web"]


def test_missing_nan_and_constant_series_are_skipped_and_said() -> None:
    sparse = [(FAULT + 5.0, 3.0)]  # nothing before the fault
    nans = [(t, math.nan) for t, _ in series()]
    constant = [(t, 7.0) for t, _ in series()]
    frame = {
        "web": {"latency": series(seed=1, jump=8.0), "sparse": sparse},
        "db": {"nan": nans, "constant": constant},
    }
    result = analyse(frame, FAULT)
    assert names(result.services) == ["web"]
    reasons = {(s.service, s.metric): s.reason for s in result.skipped}
    assert reasons[("db", "nan")] == "no finite values"
    assert reasons[("db", "constant")] == "constant"
    assert "before the fault" in reasons[("web", "sparse")]


def test_repeated_timestamps_and_unordered_points_are_accepted() -> None:
    points = series(seed=1, jump=9.0)
    doubled = points + [(t, v + 0.01) for t, v in points]
    random.Random(7).shuffle(doubled)
    frame = {"a": {"m": doubled}, "b": {"m": series(seed=2)}}
    assert names(rank_services(frame, FAULT))[0] == "a"


def test_the_baseline_ranks_by_plain_zscore() -> None:
    frame = {"a": {"m": series(seed=1)}, "b": {"m": series(seed=2, jump=10.0)}}
    ranking = zscore_ranking(frame, FAULT)
    assert names(ranking) == ["b", "a"]


@settings(max_examples=40, deadline=None)
@given(
    scale=st.floats(min_value=1e-3, max_value=1e3),
    shift=st.floats(min_value=-1e3, max_value=1e3),
    seed=st.integers(min_value=0, max_value=1000),
)
def test_a_score_is_invariant_to_rescaling_a_series(scale: float, shift: float, seed: int) -> None:
    # Level 100 and noise 5: the relative floor (1 % of the level) stays below the spread after
    # any shift that keeps the level's magnitude within a few hundred.
    points = series(level=100.0, noise=5.0, jump=20.0, seed=seed)
    moved = [(t, v * scale + shift * scale) for t, v in points]
    if abs(100.0 + shift) * 0.01 * scale > 5.0 * scale * 0.5:
        return  # the floor would bind: a different regime, not an invariance
    (one,) = rank_services({"s": {"m": points}}, FAULT)
    (two,) = rank_services({"s": {"m": moved}}, FAULT)
    assert two.score == pytest.approx(one.score, rel=1e-6)


# ------------------------------------------------------------------------------- graph


def test_a_callee_whose_anomaly_reaches_its_caller_ranks_above_the_caller() -> None:
    # web -> api -> db; db breaks and api, which waits on it, looks even worse.
    frame = {
        "web": {"latency": series(seed=1, jump=3.0)},
        "api": {"latency": series(seed=2, jump=30.0)},
        "db": {"latency": series(seed=3, jump=15.0)},
        "mail": {"latency": series(seed=4)},
    }
    graph = {"web": ["api", "mail"], "api": ["db"]}
    assert names(rank_services(frame, FAULT))[0] == "api"  # no graph: the loudest
    ranked = names(rank_services(frame, FAULT, graph))
    assert ranked.index("db") < ranked.index("api")
    assert names(rank_services(frame, FAULT, graph, symptom="web"))[0] == "db"


def test_services_the_symptom_does_not_call_rank_after_those_it_does() -> None:
    frame = {
        "web": {"latency": series(seed=1, jump=8.0)},
        "db": {"latency": series(seed=2, jump=10.0)},
        "batch": {"latency": series(seed=3, jump=40.0)},  # loud, but nothing web calls
    }
    graph = {"web": ["db"], "batch": []}
    assert names(rank_services(frame, FAULT, graph, symptom="web"))[:2] == ["db", "web"]


# ------------------------------------------------------------------------------ inputs


def test_a_messy_csv_is_read_and_what_was_dropped_is_said() -> None:
    text = (
        "time,web_latency,web_errors,db_cpu,junk\n"
        "1,1.0,0,5\n"
        "1,1.1,,5,\n"
        "2,n/a,0,5,x\n"
        "oops,1,1,1,1\n"
        "\n"
        "4,1.2,3,inf,\n"
    )
    parsed = parse_metrics_csv(text)
    assert parsed.frame["web"]["latency"] == [(1.0, 1.0), (1.0, 1.1), (4.0, 1.2)]
    assert parsed.frame["db"]["cpu"] == [(1.0, 5.0), (1.0, 5.0), (2.0, 5.0)]
    assert (parsed.first, parsed.last) == (1.0, 4.0)
    notes = " | ".join(parsed.notes)
    assert "'junk'" in notes and "1 row(s) without a numeric time" in notes
    assert "repeated timestamp" in notes and "blank or non-numeric" in notes


def test_the_separator_splits_at_its_first_occurrence() -> None:
    parsed = parse_metrics_csv("time,a|b_c|d\n1,2\n", sep="|")
    assert parsed.frame == {"a": {"b_c|d": [(1.0, 2.0)]}}


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("", "empty"),
        ("when,web_latency\n1,2\n", "header: no 'time' column"),
        ("time,latency\n1,2\n", "header: no <service>_<metric> column"),
        ("time,web_latency\nx,2\n", "time: no row with a numeric unix time"),
    ],
)
def test_a_csv_that_cannot_be_read_names_the_field(text: str, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        parse_metrics_csv(text)


def test_graph_formats() -> None:
    matrix = ",web,api,db\nweb,0,1,0\napi,0,0,1\ndb,0,0,0\n"
    assert parse_graph_csv(matrix) == {"web": ["api"], "api": ["db"], "db": []}
    with pytest.raises(ConfigError, match="line 3: column 'db': expected 0 or 1"):
        parse_graph_csv(",web,api,db\nweb,0,1,0\napi,0,0,yes\n")
    assert graph_from_mapping({"web": ["api"], "db": None}) == {"web": ["api"], "db": []}
    with pytest.raises(ConfigError, match="web: expected a list"):
        graph_from_mapping({"web": "api"})


# -------------------------------------------------------------------------------- CLI

app = typer.Typer()


@app.callback()
def _root() -> None:
    """Stands in for the selfheal app, which registers the command the same way."""


register(app)


def run(*args: str) -> Result:
    return CliRunner().invoke(app, ["rca", *args])


def write_csv(path: Path) -> Path:
    frame = {
        "web": {"latency": series(seed=1, jump=4.0)},
        "api": {"latency": series(seed=2, jump=20.0), "errors": series(seed=5)},
        "db": {"latency": series(seed=3, jump=10.0)},
    }
    columns = [(s, m) for s, metrics in frame.items() for m in metrics]
    lines = ["time," + ",".join(f"{s}_{m}" for s, m in columns)]
    times = [t for t, _ in frame["web"]["latency"]]
    for i, t in enumerate(times):
        lines.append(f"{t:g}," + ",".join(f"{frame[s][m][i][1]:.4f}" for s, m in columns))
    lines.append(f"{times[-1]:g},,oops,1")  # a repeated time with blank and bad cells
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_json_is_a_list_of_services_best_first(tmp_path: Path) -> None:
    metrics = write_csv(tmp_path / "m.csv")
    result = run("--metrics", str(metrics), "--fault-time", f"{FAULT:g}", "--json", "--top", "2")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert [item["service"] for item in payload] == ["api", "db"]
    assert set(payload[0]) == {"service", "score", "metrics"}
    assert payload[0]["metrics"][0]["metric"] == "latency"
    assert set(payload[0]["metrics"][0]) == {"metric", "score"}
    assert payload[0]["score"] >= payload[1]["score"]
    assert "blank or non-numeric" in result.stderr


def test_cli_with_a_yaml_graph_puts_the_callee_first(tmp_path: Path) -> None:
    metrics = write_csv(tmp_path / "m.csv")
    graph = tmp_path / "graph.yaml"
    graph.write_text("web: [api]\napi: [db]\n")
    args = ["--metrics", str(metrics), "--fault-time", f"{FAULT:g}", "--graph", str(graph)]
    result = run(*args, "--symptom", "web")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith(" 1. db ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--metrics", "missing.csv", "--fault-time", "1000"], "--metrics missing.csv: cannot"),
        (["--fault-time", "1000"], "--metrics: required"),
        (["--metrics", "{csv}"], "--fault-time: required"),
        (["--metrics", "{csv}", "--fault-time", "5"], "--fault-time: 5 is outside the data"),
        (["--metrics", "{csv}", "--fault-time", "soon"], "--fault-time: expected unix seconds"),
        (["--metrics", "{csv}", "--fault-time", "1000", "--top", "0"], "--top: expected"),
        (["--metrics", "{notime}", "--fault-time", "1000"], "header: no 'time' column"),
        (["--metrics", "{csv}", "--fault-time", "1000", "--graph", "{badgraph}"], "--graph"),
        (["--prometheus", "http://127.0.0.1:9", "--at", "1000"], "--service: required"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    files = {
        "csv": str(write_csv(tmp_path / "m.csv")),
        "notime": str(tmp_path / "notime.csv"),
        "badgraph": str(tmp_path / "graph.csv"),
    }
    (tmp_path / "notime.csv").write_text("when,web_latency\n1,2\n")
    (tmp_path / "graph.csv").write_text(",web\nweb,maybe\n")
    result = run(*(a.format(**files) for a in args))
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
