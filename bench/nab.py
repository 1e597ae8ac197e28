"""NAB scoring: the Numenta Anomaly Benchmark's method, and detectors measured with it.

The method (Lavin & Ahmad 2015; reference code ``nab/sweeper.py`` of numenta/NAB):

- Each labelled anomaly has a *window* around it (``labels/combined_windows.json``; NAB centres
  them on the labels, 10 % of the file's length shared between its windows, overlaps merged).
- The first 15 % of each file is *probationary*: ``min(floor(0.15 n), 750)`` rows whose
  detections are ignored.
- A detection is a row whose anomaly score is ``>= threshold``. Inside a window only the earliest
  detection counts: ``tp * sigma(-(right - i + 1) / width) / sigma(-1)`` where ``sigma(x) =
  2 / (1 + exp(5 x)) - 1`` is the scaled sigmoid, so a detection on the window's first row is
  worth exactly ``tp`` and one on its last row about 0. Later detections in the window are free.
- A detection outside every window costs ``fp * sigma((i - right) / (width - 1))`` measured from
  the end of the preceding window (so soon after a window it costs less), ``-fp`` when no window
  precedes it or it is 3 window widths past one.
- A window without a detection costs ``-fn``.
- The raw score of a corpus is the sum over its files; one threshold per profile serves the whole
  corpus and is the one that maximises that sum (every distinct score value is tried).
- Normalised score: ``100 * (raw - null) / (perfect - null)``, ``null`` being the best raw score
  of a detector that scores every row 0.5 (it can only detect everything or nothing) and
  ``perfect`` = ``tp`` * the number of windows.

Profiles (NAB's ``config/profiles.json``): standard {tp 1, fp 0.11, fn 1}, reward_low_FP_rate
{tp 1, fp 0.22, fn 1}, reward_low_FN_rate {tp 1, fp 0.11, fn 2}.

``bench/nab_reference.py`` is a line-by-line port of the reference sweeper; the CLI checks that
both give the same scores, and that NAB's windowed Gaussian reproduces the published per-file
scores.

    .venv/bin/python -m bench.nab [--data DIR] [--detectors windowed_gaussian,zscore,...]

Results overwrite bench/results/nab.{json,md}.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

from bench.common import RESULTS_DIR, machine_facts, write_results
from selfheal.detection.detectors import DETECTORS, Detector

DATA = Path("/work/shared/datasets/nab-dev")
PROBATION_PERCENT = 0.15
# NAB's sweeper caps the probationary period at 15 % of 5000 rows.
PROBATION_CAP = PROBATION_PERCENT * 5000
PUBLISHED = RESULTS_DIR / "nab_published_windowedGaussian.json"


@dataclass(frozen=True)
class Profile:
    name: str
    tp: float
    fp: float
    fn: float


PROFILES: dict[str, Profile] = {
    "standard": Profile("standard", 1.0, 0.11, 1.0),
    "reward_low_FP_rate": Profile("reward_low_FP_rate", 1.0, 0.22, 1.0),
    "reward_low_FN_rate": Profile("reward_low_FN_rate", 1.0, 0.11, 2.0),
}


def scaled_sigmoid(position: float) -> float:
    """NAB's weight of a detection at ``position`` relative to a window (see the module doc)."""
    if position >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


MAX_TP = scaled_sigmoid(-1.0)


def probation_length(rows: int) -> float:
    return min(math.floor(PROBATION_PERCENT * rows), PROBATION_CAP)


@dataclass
class Series:
    """One labelled file: rows in file order, windows as inclusive row-index ranges."""

    name: str  # path relative to data/, e.g. realAWSCloudwatch/ec2_cpu_utilization_24ae8d.csv
    timestamps: list[datetime]
    values: list[float | None]  # None: a blank or unreadable value (the row is still scored)
    windows: list[tuple[int, int]]
    notes: list[str] = field(default_factory=list)

    @property
    def category(self) -> str:
        return self.name.split("/", 1)[0]

    def __len__(self) -> int:
        return len(self.timestamps)


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.strip())


def window_rows(timestamps: Sequence[datetime], start: datetime, end: datetime) -> tuple[int, int]:
    """Row range of a window: from the first row at ``start`` to the first row at ``end``.

    The reference enters a window on the row whose timestamp equals its start and measures it up
    to the first row equal to its end; windows whose limits fall between rows (not in NAB's
    labels) take the rows inside them.
    """
    first = next((i for i, t in enumerate(timestamps) if t == start), None)
    if first is None:
        first = next(i for i, t in enumerate(timestamps) if t >= start)
    last = next((i for i, t in enumerate(timestamps) if t == end), None)
    if last is None:
        last = max(i for i, t in enumerate(timestamps) if t <= end)
    return first, last


def read_series(path: Path, name: str, windows: Iterable[Sequence[str]]) -> Series:
    timestamps: list[datetime] = []
    values: list[float | None] = []
    notes: list[str] = []
    blank = 0
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["timestamp", "value"]:
            raise ValueError(f"{path}: expected a 'timestamp,value' header")
        for line, row in enumerate(reader, start=2):
            if not row or not row[0].strip():
                continue
            try:
                timestamps.append(_parse_time(row[0]))
            except ValueError:
                raise ValueError(f"{path}:{line}: timestamp {row[0]!r} is not a date") from None
            try:
                value = float(row[1])
                values.append(value if math.isfinite(value) else None)
            except (IndexError, ValueError):
                values.append(None)
            blank += values[-1] is None
    backwards = sum(1 for a, b in pairwise(timestamps) if b <= a)
    if blank:
        notes.append(f"{blank} rows without a finite value (scored 0, not fed to the detector)")
    if backwards:
        notes.append(f"{backwards} rows repeat or step back in time (kept, as NAB does)")
    limits = [window_rows(timestamps, _parse_time(a), _parse_time(b)) for a, b in windows]
    return Series(name, timestamps, values, limits, notes)


def load_corpus(root: Path, categories: Sequence[str] | None = None) -> list[Series]:
    """Every labelled file under ``root/data`` (``root/labels/combined_windows.json``)."""
    labels = json.loads((root / "labels" / "combined_windows.json").read_text())
    corpus = []
    for name in sorted(labels):
        if categories and name.split("/", 1)[0] not in categories:
            continue
        path = root / "data" / name
        if path.is_file():
            corpus.append(read_series(path, name, labels[name]))
    return corpus


# --- sweep: every threshold at once ---------------------------------------------------------


@dataclass(frozen=True)
class Row:
    score: float
    weight: float  # what the row adds if detected (the window's tp weight, or an fp cost)
    window: int  # global window id, -1 outside every window


def row_weights(series: Series, profile: Profile) -> list[tuple[float, int]]:
    """(weight, window index or -1) per row; None for probationary rows."""
    out: list[tuple[float, int]] = []
    windows = series.windows
    k = 0  # next window
    previous: tuple[int, int] | None = None
    for i in range(len(series)):
        while k < len(windows) and windows[k][1] < i:
            previous = windows[k]
            k += 1
        if k < len(windows) and windows[k][0] <= i <= windows[k][1]:
            left, right = windows[k]
            width = right - left + 1
            weight = scaled_sigmoid(-(right - i + 1) / width) * profile.tp / MAX_TP
            out.append((weight, k))
        else:
            if previous is None:
                position = 3.0
            else:
                left, right = previous
                width = right - left + 1
                position = (i - right) / (width - 1) if width > 1 else 2.0
            out.append((scaled_sigmoid(position) * profile.fp, -1))
    return out


def sweep_rows(
    series: Series, scores: Sequence[float], profile: Profile, base: int = 0
) -> list[Row]:
    """Scorable rows (after probation) of one file, window ids offset by ``base``."""
    if len(scores) != len(series):
        raise ValueError(f"{series.name}: {len(scores)} scores for {len(series)} rows")
    probation = probation_length(len(series))
    weights = row_weights(series, profile)
    return [
        Row(scores[i], weight, base + window if window >= 0 else -1)
        for i, (weight, window) in enumerate(weights)
        if i >= probation
    ]


@dataclass(frozen=True)
class Sweep:
    thresholds: list[float]  # descending; the first (> every score) detects nothing
    raw: list[float]  # raw score when detections are rows with score >= threshold

    def best(self) -> tuple[float, float]:
        """(threshold, raw) maximising the raw score; ties go to the higher threshold."""
        index = max(range(len(self.raw)), key=lambda i: (self.raw[i], -i))
        return self.thresholds[index], self.raw[index]

    def at(self, threshold: float) -> float:
        """Raw score with detections at ``score >= threshold``."""
        index = 0
        for i, t in enumerate(self.thresholds):
            if t >= threshold:
                index = i
            else:
                break
        return self.raw[index]


def sweep(rows: Sequence[Row], profile: Profile) -> Sweep:
    """Raw score at every distinct threshold, lowering it one score value at a time."""
    windows = {r.window for r in rows if r.window >= 0}
    best_in_window = dict.fromkeys(windows, -profile.fn)
    window_total = -profile.fn * len(windows)
    fp_total = 0.0
    ordered = sorted(rows, key=lambda r: r.score, reverse=True)
    thresholds = [math.inf]
    raw = [window_total]
    i = 0
    while i < len(ordered):
        threshold = ordered[i].score
        while i < len(ordered) and ordered[i].score == threshold:
            row = ordered[i]
            if row.window < 0:
                fp_total += row.weight
            elif row.weight > best_in_window[row.window]:
                window_total += row.weight - best_in_window[row.window]
                best_in_window[row.window] = row.weight
            i += 1
        thresholds.append(threshold)
        raw.append(window_total + fp_total)
    return Sweep(thresholds, raw)


# --- one threshold, file by file (the scorer's way: first TP per window, FPs by distance) ----


@dataclass(frozen=True)
class FileScore:
    name: str
    raw: float
    windows: int
    detected: int  # windows with a detection
    false_positives: int  # detections outside every window
    tp_rows: int
    fp_rows: int


def score_file(
    series: Series, scores: Sequence[float], profile: Profile, threshold: float
) -> FileScore:
    probation = probation_length(len(series))
    raw = 0.0
    detected = fps = tp_rows = 0
    for left, right in series.windows:
        if right < probation:
            continue  # wholly probationary: neither found nor missed
        first = next(
            (
                i
                for i in range(max(left, math.ceil(probation)), right + 1)
                if scores[i] >= threshold
            ),
            None,
        )
        tp_rows += sum(1 for i in range(max(left, math.ceil(probation)), right + 1)
                       if scores[i] >= threshold)  # fmt: skip
        if first is None:
            raw -= profile.fn
        else:
            detected += 1
            width = right - left + 1
            raw += scaled_sigmoid(-(right - first + 1) / width) * profile.tp / MAX_TP
    inside = {i for left, right in series.windows for i in range(left, right + 1)}
    for i in range(len(series)):
        if i < probation or i in inside or scores[i] < threshold:
            continue
        fps += 1
        preceding = [w for w in series.windows if w[1] < i]
        if not preceding:
            raw -= profile.fp
            continue
        left, right = preceding[-1]
        width = right - left + 1
        position = (i - right) / (width - 1) if width > 1 else 2.0
        raw += scaled_sigmoid(position) * profile.fp
    return FileScore(series.name, raw, len(series.windows), detected, fps, tp_rows, fps)


# --- normalisation and corpus scores ---------------------------------------------------------


def corpus_rows(
    corpus: Sequence[Series], scores: Sequence[Sequence[float]], profile: Profile
) -> list[Row]:
    rows: list[Row] = []
    base = 0
    for series, file_scores in zip(corpus, scores, strict=True):
        rows.extend(sweep_rows(series, file_scores, profile, base))
        base += len(series.windows)
    return rows


def null_raw(corpus: Sequence[Series], profile: Profile) -> float:
    """Best raw score of NAB's null detector (0.5 everywhere) with its threshold optimised."""
    constant = [[0.5] * len(s) for s in corpus]
    return sweep(corpus_rows(corpus, constant, profile), profile).best()[1]


def perfect_raw(corpus: Sequence[Series], profile: Profile) -> float:
    return profile.tp * sum(len(s.windows) for s in corpus)


def normalise(raw: float, null: float, perfect: float) -> float | None:
    """NAB's 0-100 scale; None where there is no window to find (perfect == null)."""
    if perfect == null:
        return None
    return 100.0 * (raw - null) / (perfect - null)


@dataclass(frozen=True)
class CorpusScore:
    profile: str
    threshold: float
    raw: float
    null: float
    perfect: float
    score: float | None
    files: list[FileScore]


def score_corpus(
    corpus: Sequence[Series],
    scores: Sequence[Sequence[float]],
    profile: Profile,
    threshold: float | None = None,
) -> CorpusScore:
    """NAB's score of a detector on ``corpus``: the threshold optimised unless given."""
    result = sweep(corpus_rows(corpus, scores, profile), profile)
    if threshold is None:
        threshold, raw = result.best()
    else:
        raw = result.at(threshold)
    files = [score_file(s, sc, profile, threshold) for s, sc in zip(corpus, scores, strict=True)]
    null = null_raw(corpus, profile)
    perfect = perfect_raw(corpus, profile)
    return CorpusScore(profile.name, threshold, raw, null, perfect, normalise(raw, null, perfect),
                       files)  # fmt: skip


# --- running detectors -----------------------------------------------------------------------


def epoch_seconds(moment: datetime) -> float:
    return moment.replace(tzinfo=UTC).timestamp() if moment.tzinfo is None else moment.timestamp()


def run_detector(make: Callable[[], Detector], series: Series) -> tuple[list[float], float]:
    """Scores per row (0 for rows without a value) and the seconds spent in ``update``."""
    detector = make()
    update = detector.update
    out: list[float] = []
    spent = 0.0
    for moment, value in zip(series.timestamps, series.values, strict=True):
        if value is None:
            out.append(0.0)
            continue
        t = epoch_seconds(moment)
        start = time.perf_counter()
        score = update(t, value)
        spent += time.perf_counter() - start
        if not 0.0 <= score <= 1.0:
            raise ValueError(f"{series.name}: score {score} outside [0, 1]")
        out.append(score)
    return out, spent


class WindowedGaussian:
    """NAB's windowed Gaussian detector, as published (``windowedGaussian_detector.py``).

    Score = 1 - Q(|x - mean| / std) over the last ``window_size`` values (numpy mean and
    population std, std 0 read as 1e-6), the window moving ``step_size`` values at a time once
    full. Its memory grows to 6400 floats per series: a benchmark baseline, not a product
    detector.
    """

    def __init__(self, window_size: int = 6400, step_size: int = 100) -> None:
        self.window_size = window_size
        self.step_size = step_size
        self.window: list[float] = []
        self.step: list[float] = []
        self.mean = 0.0
        self.std = 1.0

    def update(self, timestamp: float, value: float) -> float:
        score = 0.0
        if self.window:
            z = abs(value - self.mean) / self.std
            score = 1.0 - 0.5 * math.erfc(z / math.sqrt(2.0))
        if len(self.window) < self.window_size:
            self.window.append(value)
            self._refresh()
        else:
            self.step.append(value)
            if len(self.step) == self.step_size:
                self.window = self.window[self.step_size :] + self.step
                self.step = []
                self._refresh()
        return score

    def _refresh(self) -> None:
        import numpy as np

        data = np.asarray(self.window, dtype=np.float64)
        self.mean = float(np.mean(data))
        self.std = float(np.std(data)) or 0.000001


BASELINES: dict[str, Callable[[], Detector]] = {"windowed_gaussian": WindowedGaussian}


def detector_factory(name: str) -> Callable[[], Detector]:
    if name in BASELINES:
        return BASELINES[name]
    if name in DETECTORS:
        kind = DETECTORS[name]
        return lambda: kind.make()
    raise SystemExit(
        f"--detectors: unknown detector {name!r}; expected one of "
        f"{', '.join([*BASELINES, *DETECTORS])}"
    )


# --- reports ---------------------------------------------------------------------------------


def categories_of(corpus: Sequence[Series]) -> list[str]:
    return sorted({s.category for s in corpus})


def evaluate(corpus: Sequence[Series], scores: Sequence[Sequence[float]]) -> dict[str, Any]:
    """All profiles: the corpus with one threshold, each category under that threshold, and
    each category alone with its own threshold (what it would score if it were the corpus)."""
    out: dict[str, Any] = {}
    for profile in PROFILES.values():
        together = score_corpus(corpus, scores, profile)
        by_category: dict[str, Any] = {}
        for category in categories_of(corpus):
            picked = [i for i, s in enumerate(corpus) if s.category == category]
            sub = [corpus[i] for i in picked]
            sub_scores = [scores[i] for i in picked]
            shared = score_corpus(sub, sub_scores, profile, together.threshold)
            alone = score_corpus(sub, sub_scores, profile)
            by_category[category] = {
                "files": len(sub),
                "windows": sum(len(s.windows) for s in sub),
                "shared_threshold": _summary(shared),
                "alone": _summary(alone),
            }
        out[profile.name] = {
            **_summary(together),
            "categories": by_category,
            "files": {f.name: round(f.raw, 6) for f in together.files},
        }
    return out


def _summary(result: CorpusScore) -> dict[str, Any]:
    return {
        "threshold": result.threshold,
        "raw": round(result.raw, 6),
        "null": round(result.null, 6),
        "perfect": result.perfect,
        "score": None if result.score is None else round(result.score, 2),
        "windows_detected": sum(f.detected for f in result.files),
        "windows": sum(f.windows for f in result.files),
        "false_positives": sum(f.false_positives for f in result.files),
    }


def reproduce_windowed_gaussian(
    corpus: Sequence[Series], scores: Sequence[Sequence[float]]
) -> dict[str, Any]:
    """Per-file scores at NAB's published threshold (1.0) against the published ones."""
    from bench import nab_reference

    published = json.loads(PUBLISHED.read_text())
    out: dict[str, Any] = {"source": published["source"], "profiles": {}}
    # NAB wrote its scores to CSV with Python 2's str(), 12 significant digits, and scored what
    # it read back: 1 - Q(z) rounds to 1.0 from z ~ 7.1, which the published threshold 1.0 counts.
    scores = [[float(f"{s:.12g}") for s in file_scores] for file_scores in scores]
    for profile in PROFILES.values():
        rows = []
        worst = 0.0
        for series, file_scores in zip(corpus, scores, strict=True):
            ours = score_file(series, file_scores, profile, published["threshold"])
            ref = nab_reference.score_data_set(series, file_scores, profile, published["threshold"])
            pub = published["profiles"][profile.name].get(series.name)
            if pub is None:
                continue
            worst = max(worst, abs(ours.raw - pub["score"]), abs(ref - pub["score"]))
            rows.append({"file": series.name, "published": pub["score"], "ours": round(ours.raw, 9),
                         "reference_port": round(ref, 9), "tp_rows": ours.tp_rows,
                         "published_tp_rows": pub["tp"], "fp_rows": ours.fp_rows,
                         "published_fp_rows": pub["fp"]})  # fmt: skip
        out["profiles"][profile.name] = {
            "files": len(rows),
            "sum_published": round(sum(r["published"] for r in rows), 6),
            "sum_ours": round(sum(r["ours"] for r in rows), 6),
            "max_abs_difference": worst,
            "rows": rows,
        }
    totals = published["corpus_totals"]
    windows = published["corpus_windows"]
    out["published_full_corpus"] = {
        name: round(normalise(raw, _null_of_empty_detector(PROFILES[name], windows),
                              PROFILES[name].tp * windows) or 0.0, 2)
        for name, raw in totals.items()
    }  # fmt: skip
    return out


def _null_of_empty_detector(profile: Profile, windows: int) -> float:
    # On NAB's corpus the null detector's best is to detect nothing: every window missed.
    return -profile.fn * windows


def cross_check(corpus: Sequence[Series], scores: Sequence[Sequence[float]]) -> dict[str, Any]:
    """This scorer against the reference port: optimised threshold and raw score per profile."""
    from bench import nab_reference

    out = {}
    for profile in PROFILES.values():
        ours = score_corpus(corpus, scores, profile)
        threshold, raw = nab_reference.optimize_threshold(corpus, scores, profile)
        per_file = [nab_reference.score_data_set(s, sc, profile, ours.threshold)
                    for s, sc in zip(corpus, scores, strict=True)]  # fmt: skip
        out[profile.name] = {
            "ours": {"threshold": ours.threshold, "raw": ours.raw},
            "reference_port": {"threshold": threshold, "raw": raw},
            "sum_of_files_ours": sum(f.raw for f in ours.files),
            "sum_of_files_reference_port": sum(per_file),
        }
    return out


def cost_and_memory(name: str) -> dict[str, Any]:
    from bench import detectors as bench_detectors

    if name not in DETECTORS:
        return {}
    series = min(
        2000, max(100, bench_detectors.MEMORY_UPDATES // bench_detectors.fill_points(name))
    )
    return {
        "us_per_point": round(bench_detectors.cost_per_point(name, 50_000), 3),
        "bytes_per_series": round(bench_detectors.memory_per_series(name, series)),
        "series_measured": series,
    }


def markdown(data: dict[str, Any]) -> str:
    profiles = list(PROFILES)
    short = {"standard": "standard", "reward_low_FP_rate": "low FP", "reward_low_FN_rate": "low FN"}
    lines = [
        "# NAB scores",
        "",
        f"`.venv/bin/python -m bench.nab {data['run']}` — corpus `{data['data']}`: "
        f"{data['files']} files, {data['rows']:,} rows, {data['windows']} windows, categories "
        + ", ".join(data["categories"])
        + ".",
        "",
        "Machine: {cores} cores, {cpu}, Python {python}.".format(**data["machine"]),
        "",
        "Scored as NAB does (bench/nab.py): one threshold per profile for the whole corpus, chosen"
        " to maximise the summed raw score; normalised 100 * (raw - null) / (perfect - null).",
        "",
        "## All categories together (one threshold per profile)",
        "",
        "| detector | "
        + " | ".join(short[p] for p in profiles)
        + " | thresholds | windows found (standard) | FPs (standard) | µs/point | bytes/series |",
        "|---|" + "---:|" * len(profiles) + "---|---:|---:|---:|---:|",
    ]
    for name, row in data["detectors"].items():
        res = row["results"]
        cost = row.get("cost", {})
        lines.append(
            f"| {name} | "
            + " | ".join(_fmt(res[p]["score"]) for p in profiles)
            + " | "
            + ", ".join(f"{res[p]['threshold']:.6g}" for p in profiles)
            + f" | {res['standard']['windows_detected']}/{res['standard']['windows']}"
            f" | {res['standard']['false_positives']}"
            f" | {cost.get('us_per_point', '—')} | {cost.get('bytes_per_series', '—')} |"
        )
    for profile in profiles:
        lines += [
            "",
            f"## Per category, {short[profile]} profile",
            "",
            "`shared`: the category's files under the corpus threshold, normalised with the "
            "category's own null and perfect; `alone`: the category as if it were the corpus "
            "(its own optimised threshold). No window to find (artificialNoAnomaly): raw score "
            "(0 = no false positive).",
            "",
            "| detector | "
            + " | ".join(f"{c} shared | {c} alone" for c in data["categories"])
            + " |",
            "|---|" + "---:|---:|" * len(data["categories"]),
        ]
        for name, row in data["detectors"].items():
            cats = row["results"][profile]["categories"]
            cells = []
            for c in data["categories"]:
                for kind in ("shared_threshold", "alone"):
                    entry = cats[c][kind]
                    cells.append(_fmt(entry["score"]) if entry["score"] is not None
                                 else f"raw {entry['raw']:.2f}")  # fmt: skip
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if "reproduction" in data:
        rep = data["reproduction"]
        lines += [
            "",
            "## Reproduction: NAB's windowed Gaussian",
            "",
            "Our port of `windowedGaussian_detector.py` (window 6400, step 100), scored at NAB's "
            "published threshold (1.0) file by file, by this scorer and by the port of the "
            "reference sweeper (bench/nab_reference.py), against the published per-file scores "
            f"({rep['source']}).",
            "",
            "| profile | files | published sum | ours | max abs difference per file |",
            "|---|---:|---:|---:|---:|",
        ]
        for p in profiles:
            r = rep["profiles"][p]
            lines.append(f"| {short[p]} | {r['files']} | {r['sum_published']:.4f} | "
                         f"{r['sum_ours']:.4f} | {r['max_abs_difference']:.2g} |")  # fmt: skip
        full = rep["published_full_corpus"]
        lines += [
            "",
            "Published totals over NAB's 58 files, normalised by this scorer's formula (null ="
            " every window missed, perfect = 116 windows): "
            + ", ".join(f"{short[p]} {full[p]:.1f}" for p in profiles)
            + " (NAB's scoreboard: 39.6, 20.9, 47.4).",
        ]
    if "cross_check" in data:
        lines += ["", "## Cross-check with the reference port", "",
                  "| detector | profile | threshold (ours / port) | raw (ours / port) |",
                  "|---|---|---|---|"]  # fmt: skip
        for name, checks in data["cross_check"].items():
            for p, c in checks.items():
                lines.append(
                    f"| {name} | {short[p]} | {c['ours']['threshold']:.6g} / "
                    f"{c['reference_port']['threshold']:.6g} | {c['ours']['raw']:.6f} / "
                    f"{c['reference_port']['raw']:.6f} |"
                )
    if data.get("notes"):
        lines += ["", "## Data notes", ""] + [f"- {n}" for n in data["notes"]]
    lines.append("")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="a NAB-layout corpus directory")
    parser.add_argument("--detectors", default="windowed_gaussian,zscore,ewma,likelihood")
    parser.add_argument("--categories", default="", help="comma-separated; default: all")
    parser.add_argument("--no-cost", action="store_true", help="skip the cost/memory runs")
    parser.add_argument("--name", default="nab", help="results file name under bench/results/")
    args = parser.parse_args(argv)

    if not (args.data / "labels" / "combined_windows.json").is_file():
        raise SystemExit(f"--data: {args.data} has no labels/combined_windows.json")
    categories = [c for c in args.categories.split(",") if c]
    corpus = load_corpus(args.data, categories or None)
    if not corpus:
        raise SystemExit(f"--categories: no file of {categories} under {args.data}/data")
    names = [n for n in args.detectors.split(",") if n]
    factories = {n: detector_factory(n) for n in names}

    data: dict[str, Any] = {
        "run": " ".join(argv if argv is not None else sys.argv[1:]),
        "data": str(args.data),
        "machine": machine_facts(),
        "files": len(corpus),
        "rows": sum(len(s) for s in corpus),
        "windows": sum(len(s.windows) for s in corpus),
        "categories": categories_of(corpus),
        "detectors": {},
        "cross_check": {},
        "notes": [f"{s.name}: {n}" for s in corpus for n in s.notes],
    }
    for name, make in factories.items():
        runs = [run_detector(make, s) for s in corpus]
        scores = [r[0] for r in runs]
        row: dict[str, Any] = {
            "results": evaluate(corpus, scores),
            "seconds_in_update": round(sum(r[1] for r in runs), 3),
        }
        if not args.no_cost:
            row["cost"] = cost_and_memory(name)
        data["detectors"][name] = row
        data["cross_check"][name] = cross_check(corpus, scores)
        if name == "windowed_gaussian" and PUBLISHED.is_file():
            data["reproduction"] = reproduce_windowed_gaussian(corpus, scores)
        std = row["results"]["standard"]["score"]
        print(f"{name}: standard {std}", flush=True)
    json_path, md_path = write_results(args.name, data, markdown(data))
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
