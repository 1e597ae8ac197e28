"""The forecast rules (``runbooks/forecasts.yaml``): which series of which service run out, read
through the one YAML door and checked against the service catalog.

``load_forecast_rules(path, catalog=...)`` reads the file (a missing file is no rules) and
refuses a threshold that is not a finite number within ±1e150; with a catalog, also a rule whose
``service`` is not in it, whose ``target`` is not one of that service's targets, whose service
declares no target at all (its predicted fault could not be resolved), or whose ``metric``
names one of the service's evidence queries that cannot be rendered (an unknown placeholder).
Every problem reads ``file:LINE: forecasts[i] (name): field: problem``, as the other runbooks do.

``ForecastRulesSource`` is the file as a worker sees it: re-read when it changes, so that an
edited threshold applies at the next forecast; a broken edit keeps the last good rules.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import structlog

from selfheal.core.catalog import ServiceCatalog, query_variables
from selfheal.core.prometheus import render_query
from selfheal.core.yaml_source import Check, ErrorFilter, Problem, ReloadingFile, read_yaml
from selfheal.domain.forecast import ForecastRule, ForecastRules

log = structlog.get_logger(__name__)

FORECASTS_FILE = "forecasts.yaml"
_DUPLICATE = "is defined twice"


def load_forecast_rules(path: Path, *, catalog: ServiceCatalog | None = None) -> ForecastRules:
    """Read and check ``path``; no file, no rules. ``ConfigError`` names the file, line, rule
    and field of every problem (with ``catalog``: the references to it too)."""
    if not path.exists():
        return ForecastRules()
    document = read_yaml(path, what="forecast rules")
    checks: list[Check[ForecastRules]] = []
    if catalog is not None:
        checks.append(lambda rules: forecast_problems(rules, catalog))
    return document.validate(
        ForecastRules,
        checks=checks,
        error_filter=_locate_duplicate(document.data),
        expected="a mapping with a 'forecasts' list",
    )


def forecast_problems(rules: ForecastRules, catalog: ServiceCatalog) -> Iterator[Problem]:
    """Every rule that refers to something the catalog does not declare."""
    known = sorted(service.name for service in catalog.services)
    for index, rule in enumerate(rules.forecasts):
        at = ("forecasts", index)
        service = catalog.get(rule.service)
        if service is None:
            yield Problem(
                (*at, "service"),
                f"unknown service {rule.service!r} (known: {_names(known)})",
            )
            continue
        targets = [target.name for target in service.targets]
        if not targets:
            yield Problem(
                (*at, "service"),
                f"service {rule.service!r} declares no target: its predicted fault could not "
                "be resolved",
            )
            continue
        if rule.target is not None and rule.target not in targets:
            yield Problem(
                (*at, "target"),
                f"{rule.target!r} is not a target of {rule.service!r} (targets: {_names(targets)})",
            )
            continue
        queries = service.evidence.metrics.queries
        template = queries.get(rule.metric)
        if template is not None:
            try:
                render_query(template, query_variables(catalog, rule.service))
            except KeyError as exc:
                yield Problem((*at, "metric"), f"query {rule.metric!r}: {exc.args[0]}")
        elif "${" in rule.metric:
            # PromQL as written is sent as written: a placeholder would reach Prometheus as is
            yield Problem(
                (*at, "metric"),
                f"{rule.metric!r} is not a query of {rule.service!r} (queries: "
                f"{_names(sorted(queries))}), and placeholders such as ${{service}} are filled "
                "in the service's evidence queries only",
            )


def _locate_duplicate(data: Any) -> ErrorFilter:
    """The model says a name is defined twice without saying where: point at the second one."""

    def where(error: dict[str, Any]) -> dict[str, Any]:
        if error.get("loc") or _DUPLICATE not in str(error.get("msg", "")):
            return error
        items = data.get("forecasts") if isinstance(data, dict) else None
        seen: set[str] = set()
        for index, item in enumerate(items if isinstance(items, list) else []):
            name = item.get("name") if isinstance(item, dict) else None
            if isinstance(name, str) and name in seen:
                return {**error, "loc": ("forecasts", index, "name")}
            if isinstance(name, str):
                seen.add(name)
        return error

    return where


def _names(names: list[str]) -> str:
    return ", ".join(names) if names else "none"


class ForecastRulesSource(ReloadingFile[ForecastRules]):
    """The rules file, re-read when it changes (its modification time or size). The first
    load must succeed; a later broken edit keeps the last good rules, logged once per edit
    (``last_error``), and is read again at the next change; a removed file is no rules."""

    def __init__(self, path: Path, catalog: ServiceCatalog | None = None) -> None:
        super().__init__(
            path,
            lambda p: load_forecast_rules(p, catalog=catalog),
            what="forecast rules",
            missing_is_empty=True,
        )

    def get(self, name: str) -> ForecastRule | None:
        return self.current().get(name)
