"""``selfheal rca`` on the PetShop root-cause dataset: AC@1, AC@3 and Avg@5 per traffic scenario.

    .venv/bin/python -m bench.petshop [--dataset /work/shared/datasets/petshop] [--no-write]

Each case (``train/`` and ``test/`` issues of every scenario) becomes the input of
``selfheal rca`` in a temporary directory: ``metrics.csv`` with a ``time`` column and one
``<component>|<metric>.<statistic>`` column per series (``--sep '|'``: component names hold
``_``), and the scenario's ``graph.csv`` as it is (the adjacency format ``rca`` reads). Both
files go through the same parsers as the command.

The normal history that precedes a fault: a case holds only 25 minutes (5 steps of 5 minutes),
two of them before the fault. The scenario's ``noissue/metrics.csv`` (normal operation, recorded
months later) is the normal history, as the dataset's authors use it, placed step by step so
that it ends ``GAP_S`` (a day) before the case: it was recorded at another time, and the level
just before the fault (``rca``'s *recent* level) must be the case's own, not the history's.
The two ``temporal_traffic`` scenarios have no ``noissue``: their history is the pre-fault steps
of the scenario's other cases (leave-one-out), which are normal operation too.

The fault time: CloudWatch labels a 5-minute datapoint with the *start* of its period, so the
row whose period holds ``target.timestamp`` (the last row at or before it) is the first one that
can show the fault; the fault time given to ``rca`` is that row's time. (Taking the first row
after ``target.timestamp`` instead, as the first version of this bench did, looks for the fault
one step late, after its peak in many cases.)

What an alert says is used, as the dataset's authors do: the symptom service (``target.json``'s
``target.node``) is given to the method (candidates are reached from it through the call graph),
and every ranker looks at the series of the symptom's metric and statistic only
(``target.metric`` and ``target.agg``, e.g. ``latency.Average``). The z-score baseline gets no
graph. ``published traversal`` re-implements the authors' simple baseline
(``code/baseline_anomaly_traversal.py``: MAD detectors fitted on the normal rows only, the first
point from the fault on where the symptom is anomalous, anomalous nodes without an anomalous
callee that reach the symptom through anomalous nodes, by the sum of scores on the path) to
check this conversion against their published numbers.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import platform
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from selfheal.diagnosis.rca import (
    Frame,
    Graph,
    ServiceScore,
    parse_graph_csv,
    parse_metrics_csv,
    rank_services,
    zscore_ranking,
)

DATASET = Path("/work/shared/datasets/petshop")
RESULTS = Path(__file__).resolve().parent / "results"
SCENARIOS = ("high_traffic", "low_traffic", "temporal_traffic1", "temporal_traffic2")
SEP = "|"
STEP_S = 300.0
GAP_S = 86_400.0
"""between the end of the normal history and a case: they were recorded at different times"""
KS = (1, 2, 3, 4, 5)
TRAVERSAL = "published traversal (reproduced)"
GROUPS = ("high_traffic", "low_traffic", "temporal_traffic")
PUBLISHED = {
    "high_traffic latency": (0.571, 0.786),
    "high_traffic availability": (0.667, 1.0),
    "low_traffic latency": (0.571, 0.571),
    "low_traffic availability": (0.833, 1.0),
    "temporal_traffic latency": (1.0, 1.0),
    "temporal_traffic availability": (0.75, 1.0),
}
"""the authors' traversal baseline, AC@1 and AC@3 (code/RCA-Dataset-Eval.ipynb, its outputs)"""


@dataclass(frozen=True)
class Table:
    """A PetShop metrics file: column names and rows of (time, cells)."""

    columns: list[str]
    rows: list[tuple[float, list[str]]]


@dataclass(frozen=True)
class Case:
    scenario: str
    name: str
    table: Table
    fault_time: float
    """the start of the 5-minute period that holds ``target.timestamp``"""
    symptom: str
    symptom_metric: str
    """``<metric>.<statistic>`` of the symptom, e.g. ``latency.Average``"""
    root_cause: str


def read_table(path: Path) -> Table:
    """Three header rows (component, metric, statistic), a ``unix_timestamp`` row, then data."""
    with path.open(newline="") as handle:
        lines = list(csv.reader(handle))
    components, metrics, statistics = lines[0][1:], lines[1][1:], lines[2][1:]
    columns = [f"{c}{SEP}{m}.{s}" for c, m, s in zip(components, metrics, statistics, strict=True)]
    rows = [(float(line[0]), line[1:]) for line in lines[4:] if line and line[0].strip()]
    return Table(columns, rows)


def load_cases(dataset: Path, scenario: str) -> list[Case]:
    cases = []
    for split in ("train", "test"):
        issues = sorted((dataset / scenario / split).iterdir(), key=lambda p: int(p.name[6:]))
        for issue in issues:
            target = json.loads((issue / "target.json").read_text())
            table = read_table(issue / "metrics.csv")
            cases.append(
                Case(
                    scenario,
                    f"{split}/{issue.name}",
                    table,
                    period_start(table, float(target["target"]["timestamp"])),
                    target["target"]["node"],
                    f"{target['target']['metric']}.{target['target']['agg']}",
                    target["root_cause"]["node"],
                )
            )
    return cases


def period_start(table: Table, at: float) -> float:
    """The time of the row whose period (CloudWatch: labelled by its start) holds ``at``."""
    starts = [t for t, _ in table.rows if t <= at]
    return max(starts) if starts else table.rows[0][0]


def history_for(case: Case, cases: Sequence[Case], noissue: Table | None) -> list[list[str]]:
    """Normal rows to place before ``case``, their cells aligned on its columns."""
    if noissue is not None:
        rows = [(noissue.columns, cells) for _, cells in noissue.rows]
    else:
        rows = [
            (other.table.columns, cells)
            for other in cases
            if other is not case
            for t, cells in other.table.rows
            if t < other.fault_time
        ]
    index = {name: i for i, name in enumerate(case.table.columns)}
    aligned: list[list[str]] = []
    for columns, cells in rows:
        out = [""] * len(case.table.columns)
        for name, cell in zip(columns, cells, strict=False):
            if name in index:
                out[index[name]] = cell
        aligned.append(out)
    return aligned


def case_csv(case: Case, history: list[list[str]]) -> str:
    """The ``selfheal rca`` metrics CSV: history on 5-minute steps, ending ``GAP_S`` before the
    case's rows."""
    first = case.table.rows[0][0]
    start = first - GAP_S - STEP_S * len(history)
    lines = [",".join(["time", *(_quote(c) for c in case.table.columns)])]
    for i, cells in enumerate(history):
        lines.append(",".join([f"{start + i * STEP_S:.0f}", *cells]))
    for t, cells in case.table.rows:
        lines.append(",".join([f"{t:.0f}", *cells]))
    return "\n".join(lines) + "\n"


def _quote(name: str) -> str:
    return f'"{name}"' if "," in name or '"' in name else name


def symptom_frame(frame: Frame, metric: str) -> Frame:
    """Only the series of the symptom's metric and statistic, as the dataset's authors rank."""
    return {service: {m: p for m, p in metrics.items() if m == metric}
            for service, metrics in frame.items()}  # fmt: skip


def traversal_baseline(case: Case, history: list[list[str]], graph: Graph) -> list[str]:
    """The authors' simple baseline (``baseline_anomaly_traversal.py`` with its default
    ``MedianDeviationScorer``, threshold 5), re-implemented to validate this conversion: per
    node, a detector fitted on the normal rows only (fewer than 10 points: none; no spread: any
    deviation is anomalous), the case's third row or the first later one where the symptom is
    anomalous, then the anomalous nodes without an anomalous callee whose path up to the
    symptom is anomalous throughout, by the largest sum of scores on such a path."""
    wanted = [i for i, c in enumerate(case.table.columns) if c.endswith(SEP + case.symptom_metric)]
    names = [case.table.columns[i].split(SEP, 1)[0] for i in wanted]
    normal = np.array([[_cell(row[i]) for i in wanted] for row in history]).reshape(-1, len(wanted))
    rows = np.array([[_cell(cells[i]) for i in wanted] for _, cells in case.table.rows])
    scores = np.zeros_like(rows)
    threshold = np.full(len(wanted), np.inf)
    for j in range(len(wanted)):
        x = normal[:, j][np.isfinite(normal[:, j])]
        if len(x) < 10:
            continue
        center = float(np.median(x)) if np.std(x) else float(np.mean(x))
        mad = float(np.median(np.abs(x - center))) * 1.4826 if np.std(x) else 1.0
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.abs(rows[:, j] - center) / mad
        scores[:, j] = np.where(np.isnan(ratio), 0.0, ratio)  # inf stays, as in theirs
        threshold[j] = 5.0 if np.std(x) else 0.0
    anomalous = scores > threshold
    target = names.index(case.symptom)
    at = next((i for i in range(2, len(rows)) if anomalous[i, target]), 2)
    if not anomalous[at, target]:
        return []
    score = {n: float(scores[at, j]) for j, n in enumerate(names) if anomalous[at, j]}
    callers: dict[str, list[str]] = {}
    for caller, callees in graph.items():
        for callee in callees:
            callers.setdefault(callee, []).append(caller)
    best: dict[str, float] = {}
    for root in score:
        if any(c in score for c in graph.get(root, ())):
            continue
        stack: list[tuple[str, tuple[str, ...]]] = [(root, (root,))]
        while stack:
            node, path = stack.pop()
            if node == case.symptom:
                best[root] = max(best.get(root, -np.inf), sum(score[n] for n in path))
                continue
            stack += [
                (c, (*path, c)) for c in callers.get(node, ()) if c in score and c not in path
            ]
    return sorted(best, key=lambda n: -best[n])


def _cell(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


Ranker = Callable[[Case, Frame, Graph], list[ServiceScore]]

RANKERS: dict[str, Ranker] = {
    "method": lambda case, frame, graph: rank_services(
        frame, case.fault_time, graph, symptom=case.symptom
    ),
    "method, no graph": lambda case, frame, graph: rank_services(frame, case.fault_time),
    "baseline z-score": lambda case, frame, graph: zscore_ranking(frame, case.fault_time),
}


def hits(ranking: Sequence[ServiceScore], truth: str) -> dict[int, bool]:
    return hits_names([s.service for s in ranking], truth)


def hits_names(names: Sequence[str], truth: str) -> dict[int, bool]:
    return {k: truth in names[:k] for k in KS}


def summary(rows: Sequence[dict[int, bool]]) -> dict[str, float]:
    n = len(rows)
    ac = {k: sum(r[k] for r in rows) / n for k in KS}
    return {"n": n, "AC@1": ac[1], "AC@3": ac[3], "Avg@5": sum(ac.values()) / len(KS)}


def run(dataset: Path) -> dict[str, Any]:
    per_case: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="petshop-rca-") as tmp:
        for scenario in SCENARIOS:
            folder = dataset / scenario
            noissue_path = folder / "noissue" / "metrics.csv"
            noissue = read_table(noissue_path) if noissue_path.exists() else None
            cases = load_cases(dataset, scenario)
            graph = Path(tmp) / scenario / "graph.csv"
            graph.parent.mkdir(parents=True)
            graph.write_text((folder / "graph.csv").read_text())
            call_graph = parse_graph_csv(graph.read_text())
            for case in cases:
                metrics = graph.parent / f"{case.name.replace('/', '-')}.csv"
                history = history_for(case, cases, noissue)
                metrics.write_text(case_csv(case, history))
                row: dict[str, Any] = {
                    "scenario": scenario,
                    "case": case.name,
                    "split": case.name.split("/")[0],
                    "symptom_metric": case.symptom_metric,
                    "root_cause": case.root_cause,
                }
                parsed = parse_metrics_csv(metrics.read_text(), sep=SEP)
                frame = symptom_frame(parsed.frame, case.symptom_metric)
                for name, ranker in RANKERS.items():
                    ranking = ranker(case, frame, call_graph)
                    row[name] = {
                        "top5": [s.service for s in ranking[:5]],
                        "hits": hits(ranking, case.root_cause),
                    }
                published = traversal_baseline(case, history, call_graph)
                row[TRAVERSAL] = {
                    "top5": published[:5],
                    "hits": hits_names(published, case.root_cause),
                }
                per_case.append(row)
    names = [*RANKERS, TRAVERSAL]
    results: dict[str, Any] = {}
    for name in names:
        results[name] = {
            scenario: summary([r[name]["hits"] for r in per_case if in_scenario(r, scenario)])
            for scenario in [*SCENARIOS, "overall"]
        }
    by_metric: dict[str, Any] = {}
    for name in names:
        by_metric[name] = {
            f"{group} {metric}": summary(
                [
                    r[name]["hits"]
                    for r in per_case
                    if r["scenario"].startswith(group) and r["symptom_metric"].startswith(metric)
                ]
            )
            for group in GROUPS
            for metric in ("latency", "availability")
        }
    by_split: dict[str, Any] = {}
    for name in names:
        by_split[name] = {
            f"{split} {scenario}": summary(
                [
                    r[name]["hits"]
                    for r in per_case
                    if r["split"] == split and in_scenario(r, scenario)
                ]
            )
            for split in ("train", "test")
            for scenario in [*SCENARIOS, "overall"]
        }
    return {"summary": results, "by_metric": by_metric, "by_split": by_split, "cases": per_case}


def in_scenario(row: dict[str, Any], scenario: str) -> bool:
    return scenario == "overall" or row["scenario"] == scenario


def machine_line() -> str:
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    return (
        f"{platform.machine()}, Python {platform.python_version()} "
        f"({platform.python_implementation()}), {today}"
    )


def _row(name: str, label: str, row: dict[str, float]) -> str:
    return (
        f"| {name} | {label} | {row['n']:.0f} | {row['AC@1']:.2f} | {row['AC@3']:.2f} | "
        f"{row['Avg@5']:.2f} |"
    )


def markdown(results: dict[str, Any], machine: str) -> str:
    high = results["summary"]["method"]["high_traffic"]["AC@1"]
    verdict = "reached" if high >= 0.8 else "not reached"
    header = ["| ranker | cases | n | AC@1 | AC@3 | Avg@5 |", "|---|---|---|---|---|---|"]
    lines = [
        "# `selfheal rca` on PetShop",
        "",
        f"- Machine: {machine}.",
        "- Rerun: `.venv/bin/python -m bench.petshop` (writes this file and `petshop.json`).",
        "- Dataset: /work/shared/datasets/petshop (amazon-science/petshop-root-cause-analysis, "
        "CC-BY-4.0), train and test issues of every scenario; see `bench/petshop.py` for the "
        "conversion and `docs/rca.md` for the method and the variants measured.",
        "- `method`: `rank_services` (robust change scores + call graph + the symptom service "
        "from `target.json`, as an alert names its service). `method, no graph`: the same scores "
        "alone. `baseline z-score`: largest plain z-score, no graph, no symptom. "
        f"`{TRAVERSAL}`: the authors' simple baseline re-implemented in the bench, to validate "
        "the conversion against their published numbers.",
        "- Nothing was fitted on these cases: the one threshold (`ANOMALOUS` = 5, the authors') "
        "is also the best of 3 / 5 / 10 on the train issues alone (`docs/rca.md`).",
        "",
        f"Target on `high_traffic`: AC@1 >= 0.8 (issue 9): **{verdict}** ({high:.2f}).",
        "",
        "## Per traffic scenario (train + test)",
        "",
        *header,
    ]
    for name, table in results["summary"].items():
        lines += [_row(name, scenario, row) for scenario, row in table.items()]
    lines += [
        "",
        "## Per symptom metric, as the authors publish (published: their notebook's AC@1 / AC@3)",
        "",
        "| ranker | cases | n | AC@1 | AC@3 | Avg@5 | published AC@1 / AC@3 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, table in results["by_metric"].items():
        for label, row in table.items():
            one, three = PUBLISHED[label]
            lines.append(f"{_row(name, label, row)} {one:.2f} / {three:.2f} |")
    lines += [
        "",
        f"`{TRAVERSAL}` matches the published numbers on `high_traffic` and `low_traffic` "
        "exactly. On the `temporal_traffic` scenarios it finds nothing: the released data has no "
        "`noissue` for them, and the 7 pre-fault rows of the other cases are fewer than the 10 "
        "its detectors need (the authors' notebook must have had other normal data).",
        "",
        "## Train and test issues apart",
        "",
        *header,
    ]
    for name, table in results["by_split"].items():
        lines += [_row(name, label, row) for label, row in table.items()]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    results = run(args.dataset)
    machine = machine_line()
    text = markdown(results, machine)
    print(text)
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "petshop.md").write_text(text)
        payload = {"machine": machine, **results}
        (RESULTS / "petshop.json").write_text(json.dumps(payload, indent=1) + "\n")


if __name__ == "__main__":
    main()
