"""``selfheal rca``: rank the services that may have caused a fault, from a metrics CSV or a live
Prometheus. The ranking itself is ``diagnosis.rca`` (pure); this module reads files, asks
Prometheus, and prints. Method and formats: docs/rca.md."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

import httpx
import typer
import yaml

from selfheal.cli.errors import UserError, err_console, user_errors
from selfheal.core.catalog import ServiceCatalog, load_services, query_variables
from selfheal.core.prometheus import (
    Limits,
    PrometheusClient,
    PrometheusError,
    limits_of,
    render_query,
)
from selfheal.core.settings import get_settings
from selfheal.diagnosis.rca import (
    Ranking,
    analyse,
    graph_from_mapping,
    parse_graph_csv,
    parse_metrics_csv,
)
from selfheal.domain.errors import ConfigError
from selfheal.domain.maintenance import parse_duration


def register(app: typer.Typer) -> None:
    app.command("rca")(rca)


@user_errors
def rca(
    metrics: Path | None = typer.Option(
        None, "--metrics", help="CSV: a 'time' column (unix s), one <service><sep><metric> column"
    ),
    fault_time: str | None = typer.Option(
        None, "--fault-time", help="when the fault began: unix seconds or ISO 8601"
    ),
    graph: Path | None = typer.Option(
        None, "--graph", help="call graph: CSV adjacency matrix or YAML 'caller: [callee, ...]'"
    ),
    sep: str = typer.Option("_", "--sep", help="separates service from metric in column names"),
    symptom: str | None = typer.Option(
        None, "--symptom", help="the service the alert names: candidates are what it calls"
    ),
    prometheus: str | None = typer.Option(
        None, "--prometheus", help="Prometheus URL: rank live series instead of a CSV"
    ),
    service: str | None = typer.Option(
        None, "--service", help="with --prometheus: the faulted service (catalog name)"
    ),
    at: str | None = typer.Option(
        None, "--at", help="with --prometheus: the fault time, unix seconds or ISO 8601"
    ),
    window: str | None = typer.Option(
        None,
        "--window",
        help="with --prometheus: normal window before --at, e.g. 15m (default: "
        "SELFHEAL_EVIDENCE__WINDOW_BEFORE_S)",
    ),
    after: str | None = typer.Option(
        None,
        "--after",
        help="with --prometheus: looked at after --at, e.g. 2m (default: "
        "SELFHEAL_EVIDENCE__WINDOW_AFTER_S)",
    ),
    catalog: Path | None = typer.Option(
        None, "--catalog", help="with --prometheus: services.yaml (default: the runbooks')"
    ),
    top: int = typer.Option(10, "--top", help="services to print"),
    as_json: bool = typer.Option(False, "--json", help="a JSON list, best first"),
) -> None:
    """Rank services as the likely root cause of a fault, each with the metrics that moved most."""
    if top < 1:
        raise UserError(f"--top: expected a positive number, got {top}")
    if prometheus is not None:
        if metrics is not None:
            raise UserError("--metrics: give either --metrics or --prometheus, not both")
        ranking = _from_prometheus(prometheus, service, at, window, after, catalog)
    else:
        if metrics is None:
            raise UserError("--metrics: required (or --prometheus URL --service S --at T)")
        if fault_time is None:
            raise UserError("--fault-time: required with --metrics")
        ranking = _from_csv(metrics, _time("--fault-time", fault_time), graph, sep, symptom)
    _print(ranking, top, as_json)


# ---------------------------------------------------------------------------------- CSV


def _from_csv(
    path: Path, fault_time: float, graph_path: Path | None, sep: str, symptom: str | None
) -> Ranking:
    if not sep:
        raise UserError("--sep: expected a non-empty separator")
    try:
        parsed = parse_metrics_csv(_read(path, "--metrics"), sep=sep)
    except ConfigError as exc:
        raise UserError(f"--metrics {path}: {exc}") from None
    if not parsed.first < fault_time <= parsed.last:
        raise UserError(
            f"--fault-time: {fault_time:g} is outside the data: expected after the first time "
            f"({parsed.first:g}) and at most the last ({parsed.last:g})"
        )
    graph = _graph(graph_path) if graph_path is not None else None
    for note in parsed.notes:
        err_console.print(f"note: --metrics: {note}", markup=False)
    return analyse(parsed.frame, fault_time, graph, symptom=symptom)


def _graph(path: Path) -> dict[str, list[str]]:
    text = _read(path, "--graph")
    try:
        if path.suffix.lower() in (".yaml", ".yml", ".json"):
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise ConfigError(f"not YAML: {str(exc).splitlines()[0]}") from None
            return graph_from_mapping(data)
        return parse_graph_csv(text)
    except ConfigError as exc:
        raise UserError(f"--graph {path}: {exc}") from None


def _read(path: Path, option: str) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise UserError(f"{option} {path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UserError(f"{option} {path}: not UTF-8 text") from None


def _time(option: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"{option}: expected unix seconds or ISO 8601, got {text!r}") from None
    if moment.tzinfo is None:
        raise UserError(f"{option}: {text!r} has no time zone (add Z or +00:00)")
    return moment.timestamp()


def _duration(option: str, text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UserError(f"{option}: {exc}") from None


# --------------------------------------------------------------------------- Prometheus


def _from_prometheus(
    url: str,
    service: str | None,
    at: str | None,
    window: str | None,
    after: str | None,
    catalog_path: Path | None,
) -> Ranking:
    if service is None:
        raise UserError("--service: required with --prometheus")
    if at is None:
        raise UserError("--at: required with --prometheus")
    settings = get_settings()
    fault_time = _time("--at", at)
    before_s = _duration("--window", window) if window else settings.evidence.window_before_s
    after_s = _duration("--after", after) if after else settings.evidence.window_after_s
    if after_s <= 0:
        raise UserError("--after: expected a positive duration (the fault window)")
    catalog = load_services(catalog_path or settings.runbooks_dir / "services.yaml")
    spec = catalog.get(service)
    if spec is None:
        known = ", ".join(s.name for s in catalog.services) or "none"
        raise UserError(f"--service: {service!r} is not in the service catalog (known: {known})")
    services = [service, *catalog.dependencies(service)]
    queries = _queries(catalog, services, service)
    if not queries:
        raise UserError(
            f"--service: {service!r} and its dependencies declare no evidence.metrics.queries "
            "in the service catalog"
        )
    limits = limits_of(settings.evidence)
    frame, failures = asyncio.run(
        _fetch(url, queries, fault_time - before_s, fault_time + after_s,
               settings.evidence.step_s, limits)
    )  # fmt: skip
    for failure in failures:
        err_console.print(f"note: {failure}", markup=False)
    if not frame:
        raise UserError(
            f"--prometheus {url}: no series around --at for {', '.join(services)} "
            f"({len(queries) - len(failures)} queries answered empty, {len(failures)} failed)"
        )
    graph = {name: list(spec_of.depends_on) for name in services
             if (spec_of := catalog.get(name)) is not None}  # fmt: skip
    return analyse(frame, fault_time, graph, symptom=service)


def _queries(
    catalog: ServiceCatalog, services: Sequence[str], faulted: str
) -> list[tuple[str, str, str]]:
    """(service, query name, PromQL) for each service: its own templates, or the faulted
    service's when it declares none, rendered with its own variables."""
    fallback = catalog.get(faulted)
    out: list[tuple[str, str, str]] = []
    for name in services:
        spec = catalog.get(name)
        templates = (spec.evidence.metrics.queries if spec is not None else {}) or (
            fallback.evidence.metrics.queries if fallback is not None else {}
        )
        variables = query_variables(catalog, name)
        for query_name, template in templates.items():
            try:
                out.append((name, query_name, render_query(template, variables)))
            except KeyError as exc:
                raise UserError(
                    f"--catalog: {name}: evidence.metrics.queries.{query_name}: {exc.args[0]}"
                ) from None
    return out


async def _fetch(
    url: str,
    queries: Sequence[tuple[str, str, str]],
    start: float,
    end: float,
    step_s: float,
    limits: Limits,
) -> tuple[dict[str, dict[str, list[tuple[float, float]]]], list[str]]:
    frame: dict[str, dict[str, list[tuple[float, float]]]] = {}
    failures: list[str] = []
    async with httpx.AsyncClient() as http:
        client = PrometheusClient(http, url, limits)
        answers = await asyncio.gather(
            *(client.query_range(promql, start, end, step_s) for _, _, promql in queries),
            return_exceptions=True,
        )
    for (service, name, _), answer in zip(queries, answers, strict=True):
        if isinstance(answer, PrometheusError):
            failures.append(f"{service} {name}: {answer}")
            continue
        if isinstance(answer, BaseException):
            raise answer
        for series in answer:
            metric = name if len(answer) == 1 else f"{name}{_labels(series.labels)}"
            frame.setdefault(service, {})[metric] = list(series.points)
    return frame, failures


def _labels(labels: Mapping[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    return "{" + inner + "}"


# ------------------------------------------------------------------------------ output


def _print(ranking: Ranking, top: int, as_json: bool) -> None:
    if ranking.skipped:
        reasons: dict[str, int] = {}
        for item in ranking.skipped:
            reasons[item.reason] = reasons.get(item.reason, 0) + 1
        summary = "; ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
        err_console.print(f"note: skipped {len(ranking.skipped)} series: {summary}", markup=False)
    services = ranking.services[:top]
    if as_json:
        payload = [
            {
                "service": s.service,
                "score": round(s.score, 4),
                "metrics": [{"metric": m.metric, "score": round(m.score, 4)} for m in s.metrics],
            }
            for s in services
        ]
        typer.echo(json.dumps(payload, indent=2))
        return
    if not services:
        typer.echo("no service could be scored (see the notes above)")
        return
    for rank, s in enumerate(services, start=1):
        moved = ", ".join(f"{m.metric} {m.score:.1f}" for m in s.metrics)
        typer.echo(f"{rank:>2}. {s.service}  {s.score:.1f}  ({moved})")
