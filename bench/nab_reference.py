"""A line-by-line port of NAB's reference sweeper (numenta/NAB ``nab/sweeper.py``), kept apart
from bench/nab.py so that each checks the other.

It walks timestamps as the reference does: a window opens on the row whose timestamp equals its
start, its right edge is the first row equal to its end (``list.index``), and rows are scored
against the window they are in or the one that last closed. Nothing here is shared with
bench/nab.py but the ``Series`` container and the profiles' weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from bench.nab import Profile, Series


class AnomalyPoint(NamedTuple):
    timestamp: datetime
    anomaly_score: float
    sweep_score: float
    window_name: str | None


class ThresholdScore(NamedTuple):
    threshold: float
    score: float


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def scaled_sigmoid(relative_position_in_window: float) -> float:
    if relative_position_in_window >= 3.0:
        return -1.0
    return 2 * sigmoid(-5 * relative_position_in_window) - 1.0


def probationary_length(num_rows: int, probation_percent: float = 0.15) -> float:
    return min(math.floor(probation_percent * num_rows), probation_percent * 5000)


def window_limits(series: Series) -> list[tuple[datetime, datetime]]:
    return [(series.timestamps[a], series.timestamps[b]) for a, b in series.windows]


def calc_sweep_score(
    timestamps: list[datetime],
    anomaly_scores: Sequence[float],
    limits: list[tuple[datetime, datetime]],
    data_set_name: str,
    profile: Profile,
) -> list[AnomalyPoint]:
    limits = list(limits)
    anomaly_list = []
    max_tp = scaled_sigmoid(-1.0)
    probationary = probationary_length(len(timestamps))
    cur_limits: tuple[datetime, datetime] | None = None
    cur_name: str | None = None
    cur_width = 0.0
    cur_right = 0
    prev_width: float | None = None
    prev_right: int | None = None
    for i, (cur_timestamp, cur_anomaly) in enumerate(zip(timestamps, anomaly_scores, strict=True)):
        if limits and cur_timestamp == limits[0][0]:
            cur_limits = limits.pop(0)
            cur_name = f"{data_set_name}|{cur_limits[0]}"
            cur_right = timestamps.index(cur_limits[1])
            cur_width = float(cur_right - timestamps.index(cur_limits[0]) + 1)
        if cur_limits is not None:
            position = -(cur_right - i + 1) / cur_width
            weighted = scaled_sigmoid(position) * profile.tp / max_tp
        else:
            if prev_right is None or prev_width is None:
                past = 3.0
            else:
                past = abs(prev_right - i) / float(prev_width - 1)
            weighted = scaled_sigmoid(past) * profile.fp
        name = cur_name if i >= probationary else "probationary"
        anomaly_list.append(AnomalyPoint(cur_timestamp, cur_anomaly, weighted, name))
        if cur_limits is not None and cur_timestamp == cur_limits[1]:
            prev_right = i
            prev_width = cur_width
            cur_limits = None
            cur_name = None
    return anomaly_list


def calc_score_by_threshold(
    anomaly_list: list[AnomalyPoint], profile: Profile
) -> list[ThresholdScore]:
    scorable = sorted(
        [x for x in anomaly_list if x.window_name != "probationary"],
        key=lambda x: x.anomaly_score,
        reverse=True,
    )
    parts: dict[str, float] = {"fp": 0.0}
    for row in scorable:
        if row.window_name is not None:
            parts[row.window_name] = -profile.fn
    scores = []
    threshold = 1.1
    for point in scorable:
        if point.anomaly_score != threshold:
            scores.append(ThresholdScore(threshold, sum(parts.values())))
            threshold = point.anomaly_score
        if point.window_name is None:
            parts["fp"] += point.sweep_score
        else:
            parts[point.window_name] = max(parts[point.window_name], point.sweep_score)
    scores.append(ThresholdScore(threshold, sum(parts.values())))
    return scores


def score_data_set(
    series: Series, scores: Sequence[float], profile: Profile, threshold: float
) -> float:
    """Raw score of one file at ``threshold`` (the reference's ``scoreDataSet``)."""
    points = calc_sweep_score(
        series.timestamps, scores, window_limits(series), series.name, profile
    )
    matching: ThresholdScore | None = None
    previous: ThresholdScore | None = None
    for row in calc_score_by_threshold(points, profile):
        if row.threshold == threshold:
            matching = row
            break
        if row.threshold < threshold:
            matching = previous
            break
        previous = row
    else:
        matching = previous
    return 0.0 if matching is None else matching.score


def optimize_threshold(
    corpus: Sequence[Series], scores: Sequence[Sequence[float]], profile: Profile
) -> tuple[float, float]:
    """(threshold, raw score) maximising the corpus's summed score (the reference optimizer)."""
    rows: list[AnomalyPoint] = []
    for series, file_scores in zip(corpus, scores, strict=True):
        rows.extend(calc_sweep_score(series.timestamps, file_scores, window_limits(series),
                                     series.name, profile))  # fmt: skip
    by_threshold = calc_score_by_threshold(rows, profile)
    best = sorted(by_threshold, key=lambda x: x.score, reverse=True)[0]
    return best.threshold, best.score
