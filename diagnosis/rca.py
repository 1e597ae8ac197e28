"""Root-cause localisation over metrics: which service moved first and most at a fault.

Pure (numpy, no I/O). ``rank_services`` takes, per service, per metric, ``(unix seconds, value)``
points around a fault and ranks services best first:

1. **Change score per metric.** The *normal* window is every point before the fault time, the
   *fault* window every point at or after it. A metric's score is the largest robust z-score of
   the fault window, ``|x - median(normal)| / scale``, where ``scale`` is the normal window's
   MAD (x1.4826), or, when more than half the normal points are equal (MAD 0), its mean absolute
   deviation, and never below a floor: 1 % of the normal level ``|median|`` and 1e-9. The floor
   is why a constant series that moves by a hair scores ~0 instead of infinity; scores are also
   capped (``SCORE_CAP``) so that no single series can be infinitely anomalous.
2. **Per service**, the score is its best metric's; the ``top_metrics`` best are listed.
3. **With a call graph** (caller -> callees), a cause explains its callers' symptoms. A service
   is *anomalous* from ``ANOMALOUS``; the candidates are the anomalous services reached from the
   ``symptom`` (the service an alert names; without one, from every anomalous service) through
   anomalous services only. A candidate with an anomalous callee is *explained* and ranks below
   the unexplained ones ("downstream-most anomalous"); within each group, by the weight of the
   best anomalous path to it (sum of ``log1p(score)``), so that the end of a long chain of
   anomalies beats an isolated spike. Services off those paths follow, by score.

Series with too few points in either window, non-finite values only, or too few distinct
values are skipped and reported (``Ranking.skipped``), never scored: missing data must not look
like a change. ``zscore_ranking`` is the plain baseline: ``|x - mean| / std`` of the normal
window, no graph.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from selfheal.domain.errors import ConfigError

Frame = Mapping[str, Mapping[str, Sequence[tuple[float, float]]]]
"""service -> metric -> (unix seconds, value) points"""
Graph = Mapping[str, Sequence[str]]
"""caller -> callees"""
Method = Literal["robust", "zscore"]

ANOMALOUS = 5.0
"""a robust z-score from which a service counts as anomalous (as the PetShop authors' MAD
baseline; 3 and 10 were compared: docs/rca.md)"""
SCORE_CAP = 1000.0
"""no series is more anomalous than this"""
FLAT_SCORE = ANOMALOUS
"""the score of a move of 1 % or more of a series that was flat before the fault: just
anomalous (no spread is known, so any real move is a change: an availability stuck at 100 %
that drops to 97 % is one)"""
MIN_NORMAL_POINTS = 2
MIN_FAULT_POINTS = 1
_MAD_TO_SIGMA = 1.4826
_REL_FLOOR = 0.01
_ABS_FLOOR = 1e-9
_PATH_BUDGET = 100_000


@dataclass(frozen=True)
class MetricScore:
    metric: str
    score: float


@dataclass(frozen=True)
class ServiceScore:
    service: str
    score: float
    metrics: list[MetricScore]


@dataclass(frozen=True)
class Skipped:
    service: str
    metric: str
    reason: str


@dataclass(frozen=True)
class Ranking:
    services: list[ServiceScore]
    skipped: list[Skipped] = field(default_factory=list)


# ------------------------------------------------------------------------------- scoring


def _scale(normal: npt.NDArray[np.float64], center: float, robust: bool) -> float:
    """The normal window's spread: MAD (x1.4826), or the std when over half the points are
    equal (MAD 0: the std still sees rare wiggles); 0 for a flat window."""
    if robust:
        scale = _MAD_TO_SIGMA * float(np.median(np.abs(normal - center)))
        if scale > 0.0:
            return scale
    return float(np.std(normal))


def change_score(
    normal: npt.NDArray[np.float64],
    fault: npt.NDArray[np.float64],
    recent: npt.NDArray[np.float64] | None = None,
    *,
    robust: bool = True,
) -> float:
    """The largest z-score of a ``fault`` point against the ``normal`` window.

    ``robust``: median and MAD, else mean and std. With ``recent`` (the normal points just
    before the fault), a point counts only as far as it also differs from their median: a level
    that was already there before the fault is no change at the fault. A flat normal window
    has no scale, so any real move is a change: a move of at least the relative floor (1 % of
    the level) scores ``FLAT_SCORE``, just anomalous, a smaller one proportionally less (a hair
    is no move). It can say "changed", never outweigh a series whose spread is known.
    """
    center = float(np.median(normal)) if robust else float(np.mean(normal))
    scale = _scale(normal, center, robust)
    deviation = np.abs(fault - center)
    if recent is not None and len(recent):
        deviation = np.minimum(deviation, np.abs(fault - float(np.median(recent))))
    if scale == 0.0:
        relative = deviation / np.maximum(np.maximum(np.abs(fault), abs(center)), _ABS_FLOOR)
        return min(float(np.max(relative)) / _REL_FLOOR, 1.0) * FLAT_SCORE
    scale = max(scale, _REL_FLOOR * abs(center), _ABS_FLOOR)
    return min(float(np.max(deviation)) / scale, SCORE_CAP)


def robust_score(normal: npt.NDArray[np.float64], fault: npt.NDArray[np.float64]) -> float:
    """``change_score`` with median and MAD, no recent window."""
    return change_score(normal, fault)


def plain_zscore(normal: npt.NDArray[np.float64], fault: npt.NDArray[np.float64]) -> float:
    """The baseline: the largest ``|x - mean| / std`` of ``fault``."""
    return change_score(normal, fault, robust=False)


Windows = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]


def _split(points: Sequence[tuple[float, float]], fault_time: float) -> Windows | str:
    """The normal, fault and recent windows of a series, or why it cannot be scored.

    ``recent``: the normal points within as long before the fault as the fault window lasts
    (at least the last one), the level a change at the fault is measured from too."""
    data = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    data = data[np.isfinite(data).all(axis=1)]
    if not len(data):
        return "no finite values"
    times, values = data[:, 0], data[:, 1]
    before = times < fault_time
    normal, fault = values[before], values[~before]
    if len(normal) < MIN_NORMAL_POINTS:
        return f"{len(normal)} point(s) before the fault time (need {MIN_NORMAL_POINTS})"
    if len(fault) < MIN_FAULT_POINTS:
        return "no point at or after the fault time"
    if np.all(values == values[0]):
        return "constant"
    span = float(np.max(times[~before])) - fault_time
    normal_times = times[before]
    recent = normal[normal_times >= min(fault_time - span, float(np.max(normal_times)))]
    return normal, fault, recent


def score_metrics(
    frame: Frame, fault_time: float, *, method: Method = "robust"
) -> tuple[dict[str, list[MetricScore]], list[Skipped]]:
    """Every scorable metric's change score, per service (best first), and what was skipped."""
    scored: dict[str, list[MetricScore]] = {}
    skipped: list[Skipped] = []
    for service, metrics in frame.items():
        for metric, points in metrics.items():
            split = _split(points, fault_time)
            if isinstance(split, str):
                skipped.append(Skipped(service, metric, split))
                continue
            normal, fault, recent = split
            if method == "robust":
                score = change_score(normal, fault, recent)
            else:
                score = change_score(normal, fault, robust=False)
            scored.setdefault(service, []).append(MetricScore(metric, score))
    for scores in scored.values():
        scores.sort(key=lambda m: (-m.score, m.metric))
    return scored, skipped


# ------------------------------------------------------------------------------- ranking


def analyse(
    frame: Frame,
    fault_time: float,
    graph: Graph | None = None,
    *,
    top_metrics: int = 3,
    symptom: str | None = None,
    method: Method = "robust",
) -> Ranking:
    """The ranking and what was skipped; ``rank_services`` without the skipped list."""
    scored, skipped = score_metrics(frame, fault_time, method=method)
    score = {service: metrics[0].score for service, metrics in scored.items()}
    order = sorted(score, key=lambda s: (-score[s], s))
    if graph is not None and method == "robust":
        order = _explain_away(order, score, graph, symptom)
    services = [ServiceScore(s, score[s], scored[s][:top_metrics]) for s in order]
    return Ranking(services, skipped)


def rank_services(
    frame: Frame,
    fault_time: float,
    graph: Graph | None = None,
    *,
    top_metrics: int = 3,
    symptom: str | None = None,
    method: Method = "robust",
) -> list[ServiceScore]:
    """Services ranked as the likely root cause of a fault at ``fault_time``, best first.

    ``frame``: service -> metric -> (unix seconds, value) points; ``graph``: caller -> callees;
    ``symptom``: the service the alert names (restricts the candidates to it and what it calls).
    Services none of whose series could be scored are left out.
    """
    return analyse(
        frame, fault_time, graph, top_metrics=top_metrics, symptom=symptom, method=method
    ).services


def zscore_ranking(frame: Frame, fault_time: float, *, top_metrics: int = 3) -> list[ServiceScore]:
    """The simple baseline: services by their largest plain z-score, no graph."""
    return rank_services(frame, fault_time, top_metrics=top_metrics, method="zscore")


def _explain_away(
    order: list[str], score: Mapping[str, float], graph: Graph, symptom: str | None
) -> list[str]:
    """``order`` regrouped along the call graph (see the module docstring): first the anomalous
    services reached from the symptom through anomalous services and explained by no anomalous
    callee, then the explained ones, each by their best path's weight; then everything else in
    score order."""
    anomalous = {s for s, value in score.items() if value >= ANOMALOUS}
    starts = [symptom] if symptom is not None else sorted(anomalous)
    weight = _path_weights(graph, starts, anomalous | set(starts), score)

    def key(service: str) -> tuple[int, float, int]:
        if service not in weight or service not in anomalous:
            return (2, 0.0, order.index(service))
        explained = any(callee in anomalous for callee in graph.get(service, ()))
        return (1 if explained else 0, -weight[service], order.index(service))

    return sorted(order, key=key)


def _path_weights(
    graph: Graph, starts: Sequence[str], within: set[str], score: Mapping[str, float]
) -> dict[str, float]:
    """For each service reached from ``starts`` through ``within``: the largest sum of
    ``log1p(score)`` over a simple path to it. Deeper causes on longer anomalous paths weigh
    more; the log keeps one huge score from outweighing the path. Bounded: a dense graph is
    searched for at most ``_PATH_BUDGET`` steps."""
    best: dict[str, float] = {}
    budget = _PATH_BUDGET
    for start in starts:
        stack: list[tuple[str, frozenset[str], float]] = [
            (start, frozenset({start}), math.log1p(score.get(start, 0.0)))
        ]
        while stack and budget > 0:
            budget -= 1
            node, path, total = stack.pop()
            best[node] = max(best.get(node, 0.0), total)
            for callee in graph.get(node, ()):
                if callee in within and callee not in path:
                    weight = total + math.log1p(score.get(callee, 0.0))
                    stack.append((callee, path | {callee}, weight))
    return best


# ------------------------------------------------------------------------------- inputs


@dataclass
class ParsedMetrics:
    """A metrics CSV as a frame, with what was dropped on the way."""

    frame: dict[str, dict[str, list[tuple[float, float]]]]
    notes: list[str]
    first: float
    last: float


def parse_metrics_csv(text: str, *, sep: str = "_") -> ParsedMetrics:
    """A CSV with a ``time`` column (unix seconds) and one column per ``<service><sep><metric>``
    (split at the first ``sep``). Messy rows are accepted: blank and non-numeric cells and rows
    without a usable time are dropped and counted in ``notes``; repeated timestamps are kept
    (the scores are order-free). Raises ``ConfigError`` naming the field for what cannot be
    read at all."""
    if not sep:
        raise ConfigError("sep: expected a non-empty separator")
    rows = csv.reader(io.StringIO(text))
    header = next(rows, None)
    if header is None:
        raise ConfigError("the file is empty; expected a header row with a 'time' column")
    names = [name.strip() for name in header]
    if "time" not in names:
        raise ConfigError(f"header: no 'time' column (got: {', '.join(names[:8]) or 'nothing'})")
    time_index = names.index("time")
    columns: list[tuple[int, str, str]] = []
    notes: list[str] = []
    seen: set[str] = set()
    for index, name in enumerate(names):
        if index == time_index:
            continue
        if sep not in name or name.startswith(sep) or name.endswith(sep):
            notes.append(f"column {name!r}: not <service>{sep}<metric>, skipped")
            continue
        if name in seen:
            notes.append(f"column {name!r}: repeated, the later one skipped")
            continue
        seen.add(name)
        service, metric = name.split(sep, 1)
        columns.append((index, service, metric))
    if not columns:
        raise ConfigError(f"header: no <service>{sep}<metric> column besides 'time'")
    frame: dict[str, dict[str, list[tuple[float, float]]]] = {}
    bad_time = bad_cells = 0
    times: list[float] = []
    for row in rows:
        if not any(cell.strip() for cell in row):
            continue
        at = _number(row[time_index]) if time_index < len(row) else None
        if at is None:
            bad_time += 1
            continue
        times.append(at)
        for index, service, metric in columns:
            value = _number(row[index]) if index < len(row) else None
            if value is None:
                bad_cells += 1
                continue
            frame.setdefault(service, {}).setdefault(metric, []).append((at, value))
    if not times:
        raise ConfigError("time: no row with a numeric unix time")
    empty = [f"{sv}{sep}{m}" for _, sv, m in columns if m not in frame.get(sv, {})]
    if empty:
        notes.append(f"{len(empty)} column(s) without a numeric value: {', '.join(empty[:5])}")
    if bad_time:
        notes.append(f"{bad_time} row(s) without a numeric time, skipped")
    if bad_cells:
        notes.append(f"{bad_cells} blank or non-numeric cell(s), skipped")
    if len(set(times)) < len(times):
        notes.append(f"{len(times) - len(set(times))} repeated timestamp(s), kept")
    return ParsedMetrics(frame, notes, min(times), max(times))


def _number(cell: str) -> float | None:
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_graph_csv(text: str) -> dict[str, list[str]]:
    """An adjacency matrix: a header row of names (first cell blank), then one row per caller
    starting with its name; a non-zero cell means the row's service calls the column's."""
    rows = [row for row in csv.reader(io.StringIO(text)) if any(c.strip() for c in row)]
    if not rows:
        raise ConfigError("the graph file is empty; expected a header row of service names")
    callees_by_column = [name.strip() for name in rows[0][1:]]
    graph: dict[str, list[str]] = {}
    for line, row in enumerate(rows[1:], start=2):
        caller = row[0].strip() if row else ""
        if not caller:
            raise ConfigError(f"line {line}: expected the caller's name in the first column")
        if len(row) - 1 > len(callees_by_column):
            raise ConfigError(
                f"line {line}: {len(row) - 1} cells for {len(callees_by_column)} columns"
            )
        callees = graph.setdefault(caller, [])
        for column, cell in enumerate(row[1:]):
            value = _number(cell) if cell.strip() else 0.0
            if value is None:
                raise ConfigError(
                    f"line {line}: column {callees_by_column[column]!r}: expected 0 or 1, "
                    f"got {cell!r}"
                )
            if value and callees_by_column[column] != caller:
                callees.append(callees_by_column[column])
    return graph


def graph_from_mapping(data: object) -> dict[str, list[str]]:
    """A graph from a loaded YAML/JSON mapping ``caller: [callee, ...]``."""
    if not isinstance(data, Mapping):
        raise ConfigError("expected a mapping caller: [callee, ...]")
    graph: dict[str, list[str]] = {}
    for caller, callees in data.items():
        if callees is None:
            callees = []
        if not isinstance(callees, list) or not all(isinstance(c, str) for c in callees):
            raise ConfigError(f"{caller}: expected a list of callee names")
        graph[str(caller)] = [c for c in callees if c != caller]
    return graph


def services_of(graph: Graph) -> Iterable[str]:
    """Every service a graph names, callers and callees."""
    names = dict.fromkeys(graph)
    for callees in graph.values():
        names.update(dict.fromkeys(callees))
    return names
