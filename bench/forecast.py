"""``detection.forecast`` against series whose crossing is known: lead time before the crossing
and false predictions per series-day (issue 12 §2).

    .venv/bin/python -m bench.forecast [--series 8] [--every-h 2] [--seed-base N] [--dataset PATH]
        [--no-write]

A *prediction* is a forecast, made at an origin, whose probability of crossing within the
horizon (24 h) is at least ``P_ALERT`` (0.7). Origins are every ``--every-h`` hours after a
warm-up of two days; each forecast sees only the points up to its origin.

- **Crossing series** (synthetic, ``--series`` of each family, seeds of their own — none of them
  used by the tests): the truth is the first *observation* beyond the threshold. The lead time
  is the time from the first prediction made within the horizon before the truth (origin in
  [truth - 24 h, truth)) to the truth; a series without one is *missed* (lead 0). Reported: hit
  rate, median and p10 of the lead over all series (misses as 0), the error of the expected
  crossing time at that first prediction, and *early* predictions (a prediction whose crossing
  came later than the horizon said, per series-day before the truth - 24 h).
- **Non-crossing series** (synthetic; and PetShop's normal operation, real): every prediction is
  false. A run of consecutive predictions is one false alarm (one alert); reported per
  series-day of origins, and the share of origins that predicted.
- **PetShop memory-leak cases**: the six issues injected with the Lambda status updater's leak
  (``inject = true`` in its code, ``target.json``'s reproducibility command), on the root
  cause's own availability (``lambdastatusupdater_AWS::Lambda::Function|availability.Average``,
  crossing ``down`` through 95 %), preceded by the scenario's normal history as in
  ``bench/petshop.py``. The dataset has no memory series: the leak shows as availability that
  drops between two 5-minute rows.

Families, each with noise and most with a daily season: ``memory_leak`` (flat, then a linear
leak), ``disk_fill`` (cumulative writes whose rate follows the day), ``queue_saturation``
(exponential growth), ``pool_exhaustion`` (free connections falling, ``down``),
``cert_expiry`` (days left, exactly linear, ``down`` through 7); non-crossing: ``flat``
(Gaussian noise), ``heavy_tails`` (Student t, 3 degrees of freedom), ``seasonal`` (daily),
``weekly`` (daily and weekly, 15 days), ``wander`` (AR(1), rho 0.98), ``sawtooth`` (a disk that
fills by day and is cleaned each night), ``level_shift`` (a step up, then flat). Non-crossing
thresholds are above the series' whole recording by a quarter of its range above the median.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import load_1min, machine_facts, machine_line, percentile, write_results
from bench.petshop import DATASET, GAP_S, read_table
from selfheal.detection.forecast import DEFAULT_HORIZON_S, Direction, forecast

HOUR = 3600.0
DAY = 86_400.0
P_ALERT = 0.7
WARMUP_S = 2 * DAY
START = 1_704_067_200.0  # 2024-01-01 00:00 UTC
SEED_BASE = 7_000
PETSHOP_HORIZON_S = 6 * HOUR
"""PetShop's normal recordings last two days: a 24 h horizon would leave no origin"""
LEAK_CASES = (
    ("high_traffic", "test/issue_11"),
    ("high_traffic", "test/issue_13"),
    ("low_traffic", "test/issue_14"),
    ("low_traffic", "test/issue_15"),
    ("temporal_traffic1", "test/issue_5"),
    ("temporal_traffic2", "test/issue_3"),
)
LEAK_SERIES = "lambdastatusupdater_AWS::Lambda::Function|availability.Average"
LEAK_THRESHOLD = 95.0


@dataclass(frozen=True)
class Series:
    family: str
    t: np.ndarray
    y: np.ndarray
    threshold: float
    direction: Direction
    crossing: float | None
    """the first observation beyond the threshold; None: never"""


Rng = np.random.Generator


def _daily(t: np.ndarray, phase: float) -> np.ndarray:
    return np.asarray(np.sin(2 * np.pi * ((t - START) / DAY + phase)))


def _first(t: np.ndarray, beyond: np.ndarray) -> float | None:
    return float(t[np.argmax(beyond)]) if beyond.any() else None


def memory_leak(rng: Rng) -> Series:
    t = START + np.arange(0.0, 9 * DAY, 300.0)
    base, amp, sigma = rng.uniform(30, 60), rng.uniform(0, 8), rng.uniform(0.5, 2.0)
    threshold = base + amp + rng.uniform(15, 35)
    onset = START + rng.uniform(3.0, 5.0) * DAY
    rate = (threshold - base) / rng.uniform(24 * HOUR, 72 * HOUR)
    y = base + amp * _daily(t, rng.uniform()) + rate * np.maximum(t - onset, 0.0)
    y = y + rng.normal(0, sigma, len(t))
    return Series("memory_leak", t, y, threshold, "up", _first(t, y >= threshold))


def disk_fill(rng: Rng) -> Series:
    t = START + np.arange(0.0, 10 * DAY, 600.0)
    start, threshold = rng.uniform(30, 60), 90.0
    days = rng.uniform(5.0, 9.0)
    rate = (threshold - start) / (days * DAY)  # mean rate; writes follow the day
    phase = rng.uniform()
    swing = np.cos(2 * np.pi * phase) - np.cos(2 * np.pi * ((t - START) / DAY + phase))
    written = rate * ((t - START) + 0.8 * DAY / (2 * np.pi) * swing)
    y = start + written + rng.normal(0, rng.uniform(0.05, 0.3), len(t))
    return Series("disk_fill", t, y, threshold, "up", _first(t, y >= threshold))


def queue_saturation(rng: Rng) -> Series:
    t = START + np.arange(0.0, 9 * DAY, 300.0)
    base, sigma = rng.uniform(50, 200), rng.uniform(2, 10)
    growth = math.log(10) / (rng.uniform(4, 7) * DAY)  # x10 in 4-7 days
    onset = START + rng.uniform(1.0, 2.5) * DAY
    y = base * np.exp(growth * np.maximum(t - onset, 0.0)) + rng.normal(0, sigma, len(t))
    threshold = base * rng.uniform(4, 8)
    return Series("queue_saturation", t, y, threshold, "up", _first(t, y >= threshold))


def pool_exhaustion(rng: Rng) -> Series:
    t = START + np.arange(0.0, 9 * DAY, 300.0)
    size = 100.0
    busy = rng.uniform(20, 40) + rng.uniform(0, 15) * _daily(t, rng.uniform())
    onset = START + rng.uniform(3.0, 5.0) * DAY
    leak = (size - 5 - busy.max()) / rng.uniform(24 * HOUR, 72 * HOUR) * 1.2
    free = size - busy - leak * np.maximum(t - onset, 0.0) + rng.normal(0, 2.0, len(t))
    free = np.round(np.maximum(free, 0.0))
    return Series("pool_exhaustion", t, free, 5.0, "down", _first(t, free <= 5.0))


def cert_expiry(rng: Rng) -> Series:
    t = START + np.arange(0.0, 25 * DAY, HOUR)
    expires = START + rng.uniform(15, 24) * DAY
    days_left = (expires - t) / DAY
    return Series("cert_expiry", t, days_left, 7.0, "down", _first(t, days_left <= 7.0))


def _not_crossing(family: str, t: np.ndarray, y: np.ndarray) -> Series:
    median = float(np.median(y))
    threshold = float(y.max()) + 0.25 * (float(y.max()) - median)
    return Series(family, t, y, threshold, "up", None)


def flat(rng: Rng) -> Series:
    t = START + np.arange(0.0, 8 * DAY, 300.0)
    return _not_crossing("flat", t, rng.uniform(20, 70) + rng.normal(0, rng.uniform(1, 5), len(t)))


def heavy_tails(rng: Rng) -> Series:
    t = START + np.arange(0.0, 8 * DAY, 300.0)
    y = rng.uniform(20, 70) + rng.uniform(1, 3) * rng.standard_t(3, len(t))
    return _not_crossing("heavy_tails", t, y)


def seasonal(rng: Rng) -> Series:
    t = START + np.arange(0.0, 8 * DAY, 300.0)
    y = 50 + rng.uniform(5, 20) * _daily(t, rng.uniform()) + rng.normal(0, 1.5, len(t))
    return _not_crossing("seasonal", t, y)


def weekly(rng: Rng) -> Series:
    t = START + np.arange(0.0, 15 * DAY, 600.0)
    weekday = ((t - START) // DAY) % 7
    weekend = np.where(weekday >= 5, -rng.uniform(5, 15), 0.0)
    y = 50 + rng.uniform(5, 15) * _daily(t, rng.uniform()) + weekend
    return _not_crossing("weekly", t, y + rng.normal(0, 1.5, len(t)))


def wander(rng: Rng) -> Series:
    t = START + np.arange(0.0, 8 * DAY, 300.0)
    shocks = rng.normal(0, 1.0, len(t))
    y = np.empty(len(t))
    y[0] = 0.0
    for i in range(1, len(t)):
        y[i] = 0.98 * y[i - 1] + shocks[i]
    return _not_crossing("wander", t, 50 + y)


def sawtooth(rng: Rng) -> Series:
    t = START + np.arange(0.0, 8 * DAY, 600.0)
    hours = ((t - START) / HOUR + rng.uniform(0, 24)) % 24
    y = rng.uniform(30, 50) + rng.uniform(1, 2) * hours + rng.normal(0, 0.3, len(t))
    return _not_crossing("sawtooth", t, y)


def level_shift(rng: Rng) -> Series:
    t = START + np.arange(0.0, 8 * DAY, 300.0)
    shift = np.where(t > START + rng.uniform(2.5, 5) * DAY, rng.uniform(5, 15), 0.0)
    y = 40 + shift + rng.normal(0, rng.uniform(0.5, 2), len(t))
    return _not_crossing("level_shift", t, y)


CROSSING: tuple[Callable[[Rng], Series], ...] = (
    memory_leak, disk_fill, queue_saturation, pool_exhaustion, cert_expiry,
)  # fmt: skip
NOT_CROSSING: tuple[Callable[[Rng], Series], ...] = (
    flat, heavy_tails, seasonal, weekly, wander, sawtooth, level_shift,
)  # fmt: skip


# --------------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class Origin:
    at: float
    probability: float
    crossing_at: float | None


def run_origins(series: Series, every_s: float, horizon_s: float, first: float) -> list[Origin]:
    last = series.crossing if series.crossing is not None else float(series.t[-1]) - horizon_s
    out = []
    at = first
    while at < last:
        seen = series.t <= at
        result = forecast(
            series.t[seen], series.y[seen], threshold=series.threshold, horizon_s=horizon_s,
            direction=series.direction,
        )  # fmt: skip
        out.append(Origin(at, result.probability, result.crossing_at))
        at += every_s
    return out


def crossing_score(series: Series, origins: list[Origin], horizon_s: float) -> dict[str, Any]:
    assert series.crossing is not None
    truth = series.crossing
    hit = next((o for o in origins if o.probability >= P_ALERT and o.at >= truth - horizon_s), None)
    early = [o for o in origins if o.probability >= P_ALERT and o.at < truth - horizon_s]
    early_days = sum(1 for o in origins if o.at < truth - horizon_s) * _step(origins) / DAY
    error = None
    if hit is not None and hit.crossing_at is not None:
        error = (hit.crossing_at - truth) / HOUR
    return {
        "family": series.family,
        "lead_h": (truth - hit.at) / HOUR if hit else 0.0,
        "hit": hit is not None,
        "crossing_error_h": error,
        "early_alarms": _episodes([o for o in origins if o.at < truth - horizon_s]),
        "early_origins": len(early),
        "days_before_horizon": early_days,
    }


def false_score(family: str, origins: list[Origin]) -> dict[str, Any]:
    return {
        "family": family,
        "false_alarms": _episodes(origins),
        "positive_origins": sum(o.probability >= P_ALERT for o in origins),
        "origins": len(origins),
        "days": len(origins) * _step(origins) / DAY,
    }


def _episodes(origins: list[Origin]) -> int:
    runs, inside = 0, False
    for origin in origins:
        positive = origin.probability >= P_ALERT
        runs += positive and not inside
        inside = positive
    return runs


def _step(origins: list[Origin]) -> float:
    return origins[1].at - origins[0].at if len(origins) > 1 else 0.0


# --------------------------------------------------------------------------------- PetShop


def petshop_normal(dataset: Path, every_s: float) -> list[dict[str, Any]]:
    rows = []
    for scenario in ("high_traffic", "low_traffic"):
        table = read_table(dataset / scenario / "noissue" / "metrics.csv")
        times = np.array([t for t, _ in table.rows])
        for index, column in enumerate(table.columns):
            cells = [_number(cells[index]) for _, cells in table.rows]
            values = np.array(cells)
            finite = np.isfinite(values)
            if finite.sum() < 0.8 * len(values) or np.std(values[finite]) == 0:
                continue
            t, y = times[finite], values[finite]
            down = column.split("|", 1)[1].startswith("availability")
            median = float(np.median(y))
            spread = 1.4826 * float(np.median(np.abs(y - median))) or 0.01 * abs(median) or 1.0
            threshold = float(y.min()) - spread if down else float(y.max()) + spread
            series = Series("petshop_normal", t, y, threshold, "down" if down else "up", None)
            origins = run_origins(series, every_s, PETSHOP_HORIZON_S, float(t[0]) + DAY)
            if origins:
                rows.append(false_score(f"petshop_normal/{scenario}", origins) | {"series": column})
    return rows


def petshop_leaks(dataset: Path) -> list[dict[str, Any]]:
    out = []
    for scenario, name in LEAK_CASES:
        case = read_table(dataset / scenario / name / "metrics.csv")
        history_dir = dataset / scenario / "noissue"
        index = case.columns.index(LEAK_SERIES)
        points = [(t, _number(cells[index])) for t, cells in case.rows]
        if history_dir.exists():
            normal = read_table(history_dir / "metrics.csv")
            h_index = normal.columns.index(LEAK_SERIES) if LEAK_SERIES in normal.columns else None
            history = [_number(cells[h_index]) if h_index is not None else math.nan
                       for _, cells in normal.rows]  # fmt: skip
        else:  # the temporal_traffic scenarios have no normal recording
            history = []
        first = case.rows[0][0]
        start = first - GAP_S - 300.0 * len(history)
        series_t = np.array(
            [start + 300.0 * i for i in range(len(history))] + [t for t, _ in points]
        )
        series_y = np.array(history + [v for _, v in points])
        finite = np.isfinite(series_y)
        t, y = series_t[finite], series_y[finite]
        truth = _first(t, y <= LEAK_THRESHOLD)
        origins = []
        for at, _ in points:
            if truth is not None and at >= truth:
                break
            seen = t <= at
            if seen.sum() < 6:
                continue
            result = forecast(t[seen], y[seen], threshold=LEAK_THRESHOLD,
                              horizon_s=DEFAULT_HORIZON_S, direction="down")  # fmt: skip
            origins.append({"at": at, "probability": round(result.probability, 3)})
        hit = next((o for o in origins if o["probability"] >= P_ALERT), None)
        out.append({
            "case": f"{scenario}/{name}", "history_points": int(np.isfinite(history).sum()),
            "truth": truth, "origins": origins,
            "lead_h": (truth - hit["at"]) / HOUR if hit and truth else 0.0,
        })  # fmt: skip
    return out


def _number(cell: str) -> float:
    try:
        return float(cell)
    except ValueError:
        return math.nan


# ------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=8, help="series per synthetic family")
    parser.add_argument("--every-h", type=float, default=2.0, help="hours between origins")
    parser.add_argument(
        "--seed-base", type=int, default=SEED_BASE, help="another value: other synthetic series"
    )
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    every_s = args.every_h * HOUR
    horizon = DEFAULT_HORIZON_S
    load_before = load_1min()
    began = time.perf_counter()
    forecasts = 0

    crossing: list[dict[str, Any]] = []
    for f_index, family in enumerate(CROSSING):
        for i in range(args.series):
            series = family(np.random.default_rng(args.seed_base + 100 * f_index + i))
            assert series.crossing is not None, (series.family, i)
            origins = run_origins(series, every_s, horizon, float(series.t[0]) + WARMUP_S)
            forecasts += len(origins)
            crossing.append(crossing_score(series, origins, horizon) | {"seed_index": i})
    quiet: list[dict[str, Any]] = []
    for f_index, family in enumerate(NOT_CROSSING):
        for i in range(args.series):
            series = family(np.random.default_rng(args.seed_base + 5000 + 100 * f_index + i))
            origins = run_origins(series, every_s, horizon, float(series.t[0]) + WARMUP_S)
            forecasts += len(origins)
            quiet.append(false_score(series.family, origins) | {"seed_index": i})
    petshop: list[dict[str, Any]] = []
    leaks: list[dict[str, Any]] = []
    if args.dataset.exists():
        petshop = petshop_normal(args.dataset, every_s)
        forecasts += sum(r["origins"] for r in petshop)
        leaks = petshop_leaks(args.dataset)
    elapsed = time.perf_counter() - began

    machine = machine_facts() | {"load_1min_before": load_before, "load_1min_after": load_1min()}
    data = {
        "parameters": {
            "series_per_family": args.series, "every_h": args.every_h, "horizon_s": horizon,
            "p_alert": P_ALERT, "warmup_s": WARMUP_S, "seed_base": args.seed_base,
            "petshop_horizon_s": PETSHOP_HORIZON_S, "dataset": str(args.dataset),
        },
        "summary": summarise(crossing, quiet, petshop),
        "crossing": crossing,
        "not_crossing": quiet,
        "petshop_normal": petshop,
        "petshop_leaks": leaks,
        "forecasts": forecasts,
        "ms_per_forecast": round(1000 * elapsed / max(forecasts, 1), 2),
        "machine": machine,
    }  # fmt: skip
    markdown = render(data, machine)
    print(markdown)
    if not args.no_write:
        write_results("forecast", data, markdown)


def summarise(
    crossing: list[dict[str, Any]], quiet: list[dict[str, Any]], petshop: list[dict[str, Any]]
) -> dict[str, Any]:
    def lead(rows: list[dict[str, Any]]) -> dict[str, Any]:
        leads = [r["lead_h"] for r in rows]
        errors = [abs(r["crossing_error_h"]) for r in rows if r["crossing_error_h"] is not None]
        days = sum(r["days_before_horizon"] for r in rows)
        return {
            "series": len(rows), "hit_rate": sum(r["hit"] for r in rows) / len(rows),
            "lead_median_h": percentile(leads, 50), "lead_p10_h": percentile(leads, 10),
            "crossing_abs_error_median_h": percentile(errors, 50) if errors else None,
            "early_alarms_per_series_day": sum(r["early_alarms"] for r in rows) / days
            if days else 0.0,
        }  # fmt: skip

    def false(rows: list[dict[str, Any]]) -> dict[str, Any]:
        days = sum(r["days"] for r in rows)
        return {
            "series": len(rows), "series_days": days,
            "false_alarms_per_series_day": sum(r["false_alarms"] for r in rows) / days,
            "positive_origin_share": sum(r["positive_origins"] for r in rows)
            / sum(r["origins"] for r in rows),
        }  # fmt: skip

    families = sorted({r["family"] for r in crossing})
    quiet_families = sorted({r["family"] for r in quiet})
    out: dict[str, Any] = {
        "crossing": lead(crossing),
        "crossing_by_family": {
            f: lead([r for r in crossing if r["family"] == f]) for f in families
        },
        "not_crossing": false(quiet),
        "not_crossing_by_family": {
            f: false([r for r in quiet if r["family"] == f]) for f in quiet_families
        },
    }
    if petshop:
        out["petshop_normal"] = false(petshop)
    return out


def render(data: dict[str, Any], machine: dict[str, Any]) -> str:
    s = data["summary"]
    p = data["parameters"]
    lines = [
        "# Forecast: lead time and false predictions",
        "",
        f"`.venv/bin/python -m bench.forecast --series {p['series_per_family']} --every-h "
        f"{p['every_h']:g} --seed-base {p['seed_base']}`: a prediction is P(cross within "
        f"{p['horizon_s'] / HOUR:g} h) >= {p['p_alert']}; origins every {p['every_h']:g} h "
        f"after a {p['warmup_s'] / DAY:g}-day "
        "warm-up. Lead: from the first prediction within the horizon before the first "
        "observation beyond the threshold (misses count 0). Method: bench/forecast.py.",
        "",
        "## Series that cross",
        "",
        "| family | series | hit rate | lead median (h) | lead p10 (h) "
        "| |crossing error| median (h) | early alarms / series-day |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = [*s["crossing_by_family"].items(), ("**all**", s["crossing"])]
    for family, r in rows:
        error = r["crossing_abs_error_median_h"]
        lines.append(
            f"| {family} | {r['series']} | {r['hit_rate']:.0%} | {r['lead_median_h']:.1f} | "
            f"{r['lead_p10_h']:.1f} | {'-' if error is None else f'{error:.1f}'} | "
            f"{r['early_alarms_per_series_day']:.3f} |"
        )
    lines += [
        "",
        "## Series that do not cross",
        "",
        "| family | series | series-days | false alarms / series-day | origins predicting |",
        "|---|---|---|---|---|",
    ]
    rows = [*s["not_crossing_by_family"].items(), ("**all synthetic**", s["not_crossing"])]
    if "petshop_normal" in s:
        rows.append((f"PetShop normal operation (horizon {PETSHOP_HORIZON_S / HOUR:g} h)",
                     s["petshop_normal"]))  # fmt: skip
    for family, r in rows:
        lines.append(
            f"| {family} | {r['series']} | {r['series_days']:.1f} | "
            f"{r['false_alarms_per_series_day']:.3f} | {r['positive_origin_share']:.2%} |"
        )
    if data["petshop_leaks"]:
        lines += [
            "",
            "## PetShop memory-leak cases",
            "",
            f"`{LEAK_SERIES}` crossing down through {LEAK_THRESHOLD:g} %, 24 h horizon, "
            "forecast at each 5-minute row before the crossing:",
            "",
            "| case | history points | P at the origins before the crossing | lead (h) |",
            "|---|---|---|---|",
        ]
        for case in data["petshop_leaks"]:
            probabilities = ", ".join(f"{o['probability']:.2f}" for o in case["origins"])
            lines.append(
                f"| {case['case']} | {case['history_points']} | {probabilities or '-'} | "
                f"{case['lead_h']:.2f} |"
            )
    lines += [
        "",
        f"- {data['forecasts']} forecasts, {data['ms_per_forecast']:.1f} ms each on average.",
        machine_line(machine),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
