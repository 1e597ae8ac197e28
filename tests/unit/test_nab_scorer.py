"""NAB's scoring method on hand-built series whose scores are derived by hand.

The scaled sigmoid is ``2 / (1 + exp(5 x)) - 1 = tanh(-5 x / 2)``, so every expected value below
is a tanh of a simple position. A 20-row series has a probationary period of floor(0.15 * 20) = 3
rows; its window covers rows 10-14 (width 5).
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import nab, nab_reference
from bench.nab import PROFILES, Series

STANDARD = PROFILES["standard"]
LOW_FP = PROFILES["reward_low_FP_rate"]
LOW_FN = PROFILES["reward_low_FN_rate"]
START = datetime(2024, 1, 1)


def series(
    rows: int = 20, windows: list[tuple[int, int]] | None = None, name: str = "c/f.csv"
) -> Series:
    stamps = [START + timedelta(minutes=5 * i) for i in range(rows)]
    return Series(name, stamps, [0.0] * rows, [(10, 14)] if windows is None else windows)


def detections(rows: int, *at: int) -> list[float]:
    return [1.0 if i in at else 0.0 for i in range(rows)]


def raw(s: Series, scores: list[float], profile: nab.Profile = STANDARD) -> float:
    return nab.score_file(s, scores, profile, 0.5).raw


def test_scaled_sigmoid_is_a_tanh_of_the_position() -> None:
    for x in (-1.0, -0.5, 0.0, 0.5, 2.9):
        assert nab.scaled_sigmoid(x) == pytest.approx(math.tanh(-2.5 * x))
    assert nab.scaled_sigmoid(3.0) == -1.0
    assert nab.MAX_TP == pytest.approx(math.tanh(2.5))


def test_probation_is_15_percent_capped_at_750_rows() -> None:
    assert nab.probation_length(20) == 3
    assert nab.probation_length(4032) == 604
    assert nab.probation_length(22695) == 750


def test_a_detection_on_the_first_row_of_the_window_is_worth_tp() -> None:
    assert raw(series(), detections(20, 10)) == pytest.approx(1.0)


def test_a_detection_on_the_last_row_is_worth_little() -> None:
    # position -(14 - 14 + 1) / 5 = -0.2
    assert raw(series(), detections(20, 14)) == pytest.approx(math.tanh(0.5) / math.tanh(2.5))


def test_only_the_earliest_detection_in_a_window_counts() -> None:
    # row 11: position -(14 - 11 + 1) / 5 = -0.8; row 12 adds nothing, costs nothing
    expected = math.tanh(2.0) / math.tanh(2.5)
    assert raw(series(), detections(20, 11, 12)) == pytest.approx(expected)
    assert raw(series(), detections(20, 11)) == pytest.approx(expected)


def test_a_missed_window_costs_fn() -> None:
    assert raw(series(), detections(20)) == -1.0
    assert raw(series(), detections(20), LOW_FN) == -2.0


def test_a_false_positive_before_any_window_costs_fp() -> None:
    assert raw(series(), detections(20, 5)) == pytest.approx(-1.0 - 0.11)
    assert raw(series(), detections(20, 5), LOW_FP) == pytest.approx(-1.0 - 0.22)


def test_a_false_positive_after_a_window_is_weighted_by_its_distance() -> None:
    # row 16: (16 - 14) / (5 - 1) = 0.5 past the window
    expected = 1.0 + 0.11 * math.tanh(-1.25)
    assert raw(series(), detections(20, 10, 16)) == pytest.approx(expected)


def test_a_false_positive_three_widths_past_a_window_costs_fp() -> None:
    s = series(rows=40)
    # row 30: (30 - 14) / 4 = 4 widths past
    assert raw(s, detections(40, 10, 30)) == pytest.approx(1.0 - 0.11)


def test_probationary_detections_are_ignored() -> None:
    assert raw(series(), detections(20, 0, 1, 2)) == -1.0
    assert raw(series(), detections(20, 3)) == pytest.approx(-1.0 - 0.11)


def test_the_sweep_picks_the_threshold_with_the_best_corpus_score() -> None:
    scores = [0.0] * 20
    scores[10] = 0.9  # a true positive at the window's start
    scores[5] = 0.8  # a false positive before it
    result = nab.sweep(nab.sweep_rows(series(), scores, STANDARD), STANDARD)
    assert result.thresholds[:3] == [math.inf, 0.9, 0.8]
    assert result.raw[:3] == pytest.approx([-1.0, 1.0, 1.0 - 0.11])
    threshold, best = result.best()
    assert threshold == 0.9
    assert best == pytest.approx(1.0)
    assert result.at(0.85) == pytest.approx(1.0)


def test_one_threshold_serves_the_whole_corpus() -> None:
    """File a alone would take 0.9, file b alone 0.4: together they share the best one."""
    a, b = series(name="x/a.csv"), series(name="x/b.csv")
    sa, sb = [0.0] * 20, [0.0] * 20
    sa[10], sa[5] = 0.9, 0.4  # b's true positive scores 0.4, as a's false positive
    sb[10] = 0.4
    together = nab.score_corpus([a, b], [sa, sb], STANDARD)
    assert together.threshold == 0.4
    assert together.raw == pytest.approx(1.0 + 1.0 - 0.11)
    assert nab.score_corpus([a], [sa], STANDARD).threshold == 0.9


def test_null_detector_and_normalisation() -> None:
    # Detecting every row of the 20-row series: the window at its first row (+1), 7 false
    # positives before it (-0.77) and 5 after it, 1/4 .. 5/4 widths past its end.
    after = sum(math.tanh(-2.5 * k / 4) for k in range(1, 6))
    everything = 1.0 - 7 * 0.11 + 0.11 * after
    assert everything > -1.0  # on so short a file detecting everything beats detecting nothing
    s = series()
    assert nab.null_raw([s], STANDARD) == pytest.approx(everything)
    assert nab.perfect_raw([s], STANDARD) == 1.0
    result = nab.score_corpus([s], [detections(20, 10)], STANDARD)
    assert result.score == pytest.approx(100.0)
    assert nab.normalise(everything, everything, 1.0) == 0.0
    assert nab.normalise(-3.0, 0.0, 0.0) is None  # no window to find


def test_window_rows_follow_the_reference_with_repeated_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_text(
        "timestamp,value\n"
        "2024-01-01 00:00:00,1\n"
        "2024-01-01 00:05:00,\n"  # blank value: kept as a row, not fed to a detector
        "2024-01-01 00:05:00,3\n"  # repeated timestamp
        "2024-01-01 00:10:00,nan\n"
        "2024-01-01 00:15:00,5\n"
    )
    s = nab.read_series(path, "c/f.csv", [["2024-01-01 00:05:00.000000", "2024-01-01 00:15:00"]])
    assert s.values == [1.0, None, 3.0, None, 5.0]
    assert s.windows == [(1, 4)]  # the first row at the start's timestamp
    assert any("2 rows without a finite value" in n for n in s.notes)
    assert any("repeat or step back" in n for n in s.notes)


def test_read_series_names_a_bad_timestamp(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_text("timestamp,value\n2024-01-01 00:00:00,1\nyesterday,2\n")
    with pytest.raises(ValueError, match=r"f.csv:3: timestamp 'yesterday' is not a date"):
        nab.read_series(path, "c/f.csv", [])


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), levels=st.integers(2, 40))
def test_the_scorer_agrees_with_the_reference_port(seed: int, levels: int) -> None:
    """Random scores on random windows: same optimised threshold and raw score, per profile,
    and the file-by-file scorer gives what the sweep gives at that threshold."""
    rng = random.Random(seed)
    corpus = []
    for f in range(3):
        rows = rng.randint(60, 200)
        starts = sorted(rng.sample(range(rows // 5, rows - 8), rng.randint(0, 3)))
        windows: list[tuple[int, int]] = []
        for start in starts:
            if windows and start <= windows[-1][1] + 1:
                continue
            windows.append((start, min(rows - 1, start + rng.randint(1, 8))))
        corpus.append(series(rows, windows, name=f"c{f % 2}/f{f}.csv"))
    scores = [[rng.randint(0, levels) / levels for _ in range(len(s))] for s in corpus]
    for profile in PROFILES.values():
        ours = nab.score_corpus(corpus, scores, profile)
        threshold, reference = nab_reference.optimize_threshold(corpus, scores, profile)
        assert ours.raw == pytest.approx(reference)
        if not math.isinf(ours.threshold):
            assert ours.threshold == threshold
        assert sum(f.raw for f in ours.files) == pytest.approx(ours.raw)
        for s, sc in zip(corpus, scores, strict=True):
            by_file = nab.score_file(s, sc, profile, ours.threshold).raw
            if not math.isinf(ours.threshold):
                assert by_file == pytest.approx(
                    nab_reference.score_data_set(s, sc, profile, ours.threshold)
                )


def test_windowed_gaussian_scores_as_nab_published() -> None:
    """The first scores of NAB's results file windowedGaussian_exchange-2_cpc_results.csv."""
    values = [0.0819647355164, 0.0989722357526, 0.0653139485883, 0.0706628339533]
    detector = nab.WindowedGaussian()
    got = [detector.update(float(i), v) for i, v in enumerate(values)]
    assert got == pytest.approx([0.0, 1.0, 0.998452051714, 0.797051675817], abs=1e-11)


def test_the_cli_names_a_corpus_without_labels(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"--data: .* has no labels/combined_windows\.json"):
        nab.main(["--data", str(tmp_path)])
