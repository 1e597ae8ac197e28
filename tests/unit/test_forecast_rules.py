"""The forecast rules (``runbooks/forecasts.yaml``): the loader's errors say where, the rules are
held against the service catalog, the worker follows edits, ``selfheal rules check`` knows the
file; and the pure choices of the forecast activities (which series, which window)."""

from __future__ import annotations

import os
import re
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from selfheal.activities.forecast import Busy, candidates, chosen, nearest_series
from selfheal.cli.main import app
from selfheal.core.catalog import ServiceCatalog, load_services
from selfheal.core.forecasts import ForecastRulesSource, load_forecast_rules
from selfheal.core.prometheus import Series
from selfheal.core.yaml_source import parse_yaml
from selfheal.detection.maintenance import rank_windows
from selfheal.domain import ConfigError
from selfheal.domain.forecast import ForecastRule, ForecastRules

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "runbooks" / "forecasts.yaml"

CATALOG = ServiceCatalog.model_validate(
    {
        "services": [
            {
                "name": "db",
                "targets": [
                    {"name": "db-1", "kind": "postgres"},
                    {"name": "db-2", "kind": "postgres"},
                ],
                "evidence": {
                    "metrics": {
                        "queries": {
                            "disk_free": 'node_filesystem_avail_bytes{instance="${target}"}',
                            "broken": 'pool{x="${nope}"}',
                        }
                    }
                },
            },
            {"name": "empty"},
        ]
    }
)

VALID = """\
forecasts:
  - name: db-disk
    service: db
    target: db-2
    kind: disk_fill
    metric: disk_free
    threshold: 5.0e9
    direction: down
    horizon: 12h
    every: 30m
    lookback: 3d
  - name: db-memory
    service: db
    kind: memory_leak
    metric: 'container_memory_working_set_bytes{pod=~"db-.*"}'
    threshold: 1.9e9
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "forecasts.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str, catalog: ServiceCatalog | None = CATALOG) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_forecast_rules(path, catalog=catalog)
    message = str(caught.value)
    assert message.startswith(f"{path}:"), message
    return message.removeprefix(f"{path}:")


LINES = {"name": 2, "service": 3, "kind": 4, "metric": 5, "threshold": 6}
"""the line of each field of ``one_rule``'s base rule"""


def one_rule(**fields: object) -> str:
    rule = {
        "name": "r1",
        "service": "db",
        "kind": "disk_fill",
        "metric": "disk_free",
        "threshold": "10",
        **fields,
    }
    lines = [
        f"  - {k}: {v}" if i == 0 else f"    {k}: {v}" for i, (k, v) in enumerate(rule.items())
    ]
    return "forecasts:\n" + "\n".join(lines) + "\n"


class TestLoad:
    def test_a_valid_file_loads_with_its_defaults(self, tmp_path: Path) -> None:
        rules = load_forecast_rules(write(tmp_path, VALID), catalog=CATALOG)
        disk, memory = rules.forecasts
        assert (disk.name, disk.target, disk.direction) == ("db-disk", "db-2", "down")
        assert (disk.horizon_s, disk.every_s, disk.lookback_s) == (12 * 3600, 1800, 3 * 86400)
        assert disk.fault_type == "predicted_disk_fill"
        assert (memory.direction, memory.horizon_s, memory.every_s) == ("up", 86400, 3600)
        assert memory.min_probability == 0.7
        assert rules.get("db-memory") is memory and rules.get("nope") is None

    def test_a_missing_file_is_no_rules(self, tmp_path: Path) -> None:
        assert load_forecast_rules(tmp_path / "forecasts.yaml", catalog=CATALOG).forecasts == []

    @pytest.mark.parametrize(
        ("field", "value", "expected"),
        [
            (
                "horizon",
                "soon",
                "horizon: expected a positive duration like 900, 15m or 1h; got 'soon'",
            ),
            ("lookback", "-3d", "lookback: expected a positive duration"),
            ("every", "30s", "every: expected at least 60s, got '30s'"),
            ("min_probability", "0", "min_probability: Input should be greater than 0"),
            ("name", "Disk_1", "name: expected lowercase letters, digits and '-'"),
            ("kind", "disk_full", "kind: Input should be 'disk_fill', "),
            ("direction", "sideways", "direction: Input should be 'up' or 'down'"),
            ("threshold", ".inf", "threshold: expected a finite number within ±1e+150, got inf"),
            ("threshold", "1e200", "threshold: expected a finite number within ±1e+150"),
            ("horizon", "3651d", "horizon: expected at most 3650d, got '3651d'"),
        ],
    )
    def test_a_bad_field_is_named_with_its_line_and_rule(
        self, tmp_path: Path, field: str, value: str, expected: str
    ) -> None:
        message = load_error(tmp_path, one_rule(**{field: value}))
        line = LINES.get(field, 7)  # fields not in one_rule's base come after it
        assert message.startswith(f"{line}: forecasts[0]"), message
        assert expected in message, message

    def test_a_bad_threshold_and_a_bad_horizon_are_named_together(self, tmp_path: Path) -> None:
        """One run of `rules check` names both: the threshold is checked with the fields."""
        message = load_error(tmp_path, one_rule(threshold=".inf", horizon="2w"))
        assert "6: forecasts[0] (r1): threshold: expected a finite number" in message, message
        assert "horizon: expected a positive duration" in message, message

    def test_an_unknown_field_is_refused(self, tmp_path: Path) -> None:
        message = load_error(tmp_path, one_rule(treshold=3))
        assert message.startswith("7: forecasts[0] (r1): treshold: Extra inputs"), message

    def test_a_name_defined_twice_is_named_at_its_second_place(self, tmp_path: Path) -> None:
        text = VALID + VALID.removeprefix("forecasts:\n")
        message = load_error(tmp_path, text)
        assert (
            message == "17: forecasts[2] (db-disk): name: forecast rule 'db-disk' is defined twice"
        )

    def test_not_a_mapping_says_what_is_expected(self, tmp_path: Path) -> None:
        message = load_error(tmp_path, "- name: x\n")
        assert message == "1: expected a mapping with a 'forecasts' list, got list"


class TestAgainstTheCatalog:
    def test_an_unknown_service_is_named_with_the_known_ones(self, tmp_path: Path) -> None:
        message = load_error(tmp_path, one_rule(service="dbs"))
        assert message == "3: forecasts[0] (r1): service: unknown service 'dbs' (known: db, empty)"

    def test_a_target_of_another_service_is_refused(self, tmp_path: Path) -> None:
        message = load_error(tmp_path, one_rule(target="db-3"))
        assert message == (
            "7: forecasts[0] (r1): target: 'db-3' is not a target of 'db' (targets: db-1, db-2)"
        )

    def test_a_service_without_targets_cannot_have_a_predicted_fault(self, tmp_path: Path) -> None:
        message = load_error(tmp_path, one_rule(service="empty"))
        assert message.startswith("3: forecasts[0] (r1): service: service 'empty' declares no "
                                  "target"), message  # fmt: skip

    def test_a_query_with_an_unknown_placeholder_is_refused(self, tmp_path: Path) -> None:
        message = load_error(tmp_path, one_rule(metric="broken"))
        assert message.startswith("5: forecasts[0] (r1): metric: query 'broken': unknown "
                                  "placeholder ${nope}"), message  # fmt: skip

    def test_every_problem_is_reported(self, tmp_path: Path) -> None:
        text = one_rule(service="dbs") + one_rule(name="r2", target="x").removeprefix(
            "forecasts:\n"
        )
        message = load_error(tmp_path, text)
        assert "forecasts[0] (r1): service: unknown service 'dbs'" in message
        assert "forecasts[1] (r2): target: 'x' is not a target of 'db'" in message

    def test_without_a_catalog_only_the_file_is_checked(self, tmp_path: Path) -> None:
        rules = load_forecast_rules(write(tmp_path, one_rule(service="dbs")), catalog=None)
        assert [r.service for r in rules.forecasts] == ["dbs"]


class TestShipped:
    def test_the_shipped_file_loads_against_the_shipped_catalog(self) -> None:
        catalog = load_services(REPO / "runbooks" / "services.yaml")
        load_forecast_rules(SHIPPED, catalog=catalog)

    def test_its_commented_examples_are_valid_rules_one_per_kind(self) -> None:
        text = SHIPPED.read_text()
        start = text.index("# forecasts:")
        example = "\n".join(
            line.removeprefix("#").removeprefix(" ") for line in text[start:].splitlines()
        )
        rules = parse_yaml(example, "examples").validate(ForecastRules)
        assert sorted(rule.kind for rule in rules.forecasts) == sorted(
            ["disk_fill", "memory_leak", "pool_saturation", "queue_saturation", "cert_expiry"]
        )


class TestReload:
    def test_an_edit_applies_and_a_broken_edit_keeps_the_last_good_rules(
        self, tmp_path: Path
    ) -> None:
        path = write(tmp_path, one_rule(threshold=10))
        source = ForecastRulesSource(path, CATALOG)
        assert source.get("r1").threshold == 10  # type: ignore[union-attr]

        bump(path, one_rule(threshold=20), 1)
        assert source.get("r1").threshold == 20  # type: ignore[union-attr]

        bump(path, one_rule(threshold=20, service="nope"), 2)
        assert source.get("r1").threshold == 20  # type: ignore[union-attr]
        assert source.last_error is not None and "unknown service 'nope'" in source.last_error

        path.unlink()
        assert source.current().forecasts == []

    def test_the_first_load_must_succeed(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="not valid YAML"):
            ForecastRulesSource(write(tmp_path, "forecasts: [\n"), CATALOG)


def bump(path: Path, text: str, seconds: int) -> None:
    """Write ``text`` with a later modification time: an edit within the same clock tick and of
    the same size must still be seen."""
    path.write_text(textwrap.dedent(text))
    stat = path.stat()
    os.utime(path, (stat.st_atime, stat.st_mtime + seconds))


class TestRulesCheck:
    def test_a_forecasts_file_is_checked_against_the_catalog_beside_it(
        self, tmp_path: Path
    ) -> None:
        (tmp_path / "services.yaml").write_text(
            "services:\n  - name: db\n    targets: [{name: db-1, kind: postgres}]\n"
        )
        good = write(tmp_path, one_rule(metric="'pg_disk{}'"))
        result = CliRunner().invoke(app, ["rules", "check", str(good)])
        assert result.exit_code == 0, result.output
        assert result.output.strip() == (
            f"{good}: 1 forecast rules (1 disk_fill), checked against "
            f"{tmp_path / 'services.yaml'}: ok"
        )

        bad = write(tmp_path, one_rule(metric="'pg_disk{}'", target="db-9"))
        result = CliRunner().invoke(app, ["rules", "check", str(bad)])
        assert result.exit_code == 2
        assert (
            f"{bad}:7: forecasts[0] (r1): target: 'db-9' is not a target of 'db'" in result.output
        )
        assert "Traceback" not in result.output

    def test_the_shipped_forecasts_check(self) -> None:
        result = CliRunner().invoke(app, ["rules", "check", str(SHIPPED)])
        assert result.exit_code == 0, result.output
        assert re.search(r"0 forecast rules, checked against .*services\.yaml: ok", result.output)


# --- the pure choices of the activities ------------------------------------------------------


def rule(direction: str = "up", threshold: float = 90.0) -> ForecastRule:
    return ForecastRule.model_validate(
        {
            "name": "r",
            "service": "db",
            "kind": "disk_fill",
            "metric": "m",
            "threshold": threshold,
            "direction": direction,
        }
    )


def series(name: str, *values: float) -> Series:
    return Series({"pod": name}, [(float(i), v) for i, v in enumerate(values)])


class TestNearestSeries:
    def test_up_takes_the_highest_recent_level_and_down_the_lowest(self) -> None:
        found = [series("a", 10, 80, 50, 50, 50, 50), series("b", 40, 60, 60), series("c")]
        picked = nearest_series(found, rule("up"))
        assert picked is not None and picked.series.labels == {"pod": "b"} and picked.of == 2
        picked = nearest_series(found, rule("down", threshold=5))
        assert picked is not None and picked.series.labels == {"pod": "a"}

    def test_a_series_beyond_the_threshold_comes_first(self) -> None:
        found = [series("a", 89), series("b", 95), series("c", 91)]
        picked = nearest_series(found, rule("up"))
        assert picked is not None and picked.series.labels == {"pod": "b"}

    def test_no_points_no_series(self) -> None:
        assert nearest_series([series("a")], rule()) is None
        assert nearest_series([], rule()) is None


NOW = datetime(2024, 6, 5, 10, 0, tzinfo=UTC)


class TestCandidates:
    def test_busy_healings_weigh_on_now_and_on_a_window_in_progress_only(self) -> None:
        busy = Busy(
            holding=frozenset({"heal-a"}),
            acted=(("heal-b", NOW - timedelta(minutes=20)), ("heal-c", NOW - timedelta(hours=3))),
        )
        in_progress = (NOW - timedelta(minutes=30), NOW + timedelta(minutes=30), True)
        later = (NOW + timedelta(hours=5), NOW + timedelta(hours=6), True)
        act_now, (current, future) = candidates([in_progress, later], NOW, busy)
        assert (act_now.conflicts, act_now.resources_free) == (1, False)
        assert (current.conflicts, current.resources_free) == (2, False)  # heal-a, heal-b
        assert (future.conflicts, future.resources_free) == (0, True)

    def test_without_a_database_nothing_counts_as_free(self) -> None:
        later = (NOW + timedelta(hours=5), NOW + timedelta(hours=6), True)
        act_now, (future,) = candidates([later], NOW, None)
        assert not act_now.resources_free and not future.resources_free

    def test_the_chosen_option_names_itself_and_the_runner_up(self) -> None:
        later = (NOW + timedelta(hours=2), NOW + timedelta(hours=3), True)
        act_now, windows = candidates([later], NOW, Busy(frozenset(), ()))
        crossing = NOW + timedelta(hours=10)
        best = chosen(rank_windows(windows, now=NOW, crossing_at=crossing, act_now=act_now), [])
        assert not best.act_now and best.start == later[0] and best.end == later[1]
        assert best.reasons[-1].startswith("next best: now (score +20")

        too_soon = NOW + timedelta(hours=2, minutes=30)
        best = chosen(rank_windows(windows, now=NOW, crossing_at=too_soon, act_now=act_now), [])
        assert best.act_now and best.end is None and best.start == NOW
        assert "too late" in best.reasons[-1]


def test_a_bare_number_of_seconds_is_a_duration(tmp_path: Path) -> None:
    """``every: 900`` in YAML is seconds, as ``--horizon 3600`` is on the command line."""
    path = write(
        tmp_path,
        """
        forecasts:
          - {name: disk, service: db, kind: disk_fill, metric: m, threshold: 90,
             every: 900, horizon: 86400, lookback: 604800.0}
        """,
    )
    [rule] = load_forecast_rules(path).forecasts
    assert (rule.every_s, rule.horizon_s, rule.lookback_s) == (900.0, 86400.0, 604800.0)
    with pytest.raises(ConfigError, match="every"):
        load_forecast_rules(
            write(
                tmp_path,
                "forecasts:\n  - {name: d, service: db, "
                "kind: disk_fill, metric: m, threshold: 1, every: 30}\n",
            )
        )


def test_a_placeholder_in_promql_as_written_is_a_problem(tmp_path: Path) -> None:
    """Only the service's evidence queries are rendered: ``${service}`` in a rule's own PromQL
    would reach Prometheus as written and match nothing, forever."""
    message = load_error(
        tmp_path,
        """
        forecasts:
          - {name: disk, service: db, kind: disk_fill, threshold: 90,
             metric: 'disk_used{service="${service}"}'}
        """,
    )
    assert "forecasts[0]" in message and "metric" in message
    assert "placeholders such as ${service} are filled in the service's evidence queries only" in (
        message
    )
