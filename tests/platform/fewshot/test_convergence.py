"""Early stopping on the validation curve and steps-to-best."""

from __future__ import annotations

import math

import pytest

from cardiossl.platform.fewshot.convergence import EarlyStopping, late_gain, steps_to_reach


def test_stops_after_patience_validations_without_improvement_and_keeps_the_best():
    es = EarlyStopping(patience=2, min_delta=0.01)
    curve = [(50, 0.3), (100, 0.6), (150, 0.605), (200, 0.59), (250, 0.7)]
    best_flags, stopped_at = [], None
    for step, v in curve:
        best_flags.append(es.update(step, v))
        if es.stop():
            stopped_at = step
            break
    assert best_flags == [True, True, False, False] and stopped_at == 200
    assert es.best == 0.6 and es.best_step == 100
    assert es.summary(200) == {"best_step": 100.0, "stopped_step": 200.0, "converged": 1.0}


def test_no_stop_before_min_steps_even_after_an_early_lucky_score():
    es = EarlyStopping(patience=2, min_steps=300)
    curve = [(50, 0.55), (100, 0.43), (150, 0.46), (200, 0.49), (250, 0.47), (300, 0.5), (350, 0.52)]
    stops = []
    for step, v in curve:
        es.update(step, v)
        stops.append(es.stop())
    assert stops == [False] * 5 + [True, True] and es.best_step == 50


def test_without_patience_it_never_stops_and_a_nan_curve_keeps_the_last_state():
    es = EarlyStopping(patience=None)
    for step in range(1, 20):
        es.update(step, 0.5 - step * 0.01)
        assert not es.stop()
    assert es.best_step == 1 and es.summary(19)["converged"] == 0.0
    nan = EarlyStopping(patience=1)
    assert all(nan.update(s, math.nan) for s in (1, 2, 3)) and nan.best_step == 3 and not nan.stop()


def test_steps_to_reach_a_share_of_the_best():
    hist = [{"step": 50, "val_dice": 0.2}, {"step": 100, "val_dice": 0.86}, {"step": 150, "val_dice": 0.9}]
    assert steps_to_reach(hist, 0.95) == 100 and steps_to_reach(hist, 1.0) == 150
    assert math.isnan(steps_to_reach([], 0.95))


def test_late_gain_is_the_rise_over_the_last_window():
    hist = [{"step": s, "val_dice": v} for s, v in [(100, 0.5), (200, 0.9), (300, 0.902), (400, 0.905)]]
    assert late_gain(hist, 200) == pytest.approx(0.005) and late_gain(hist, 300) == pytest.approx(0.405)
    assert math.isnan(late_gain(hist, 1000)) and math.isnan(late_gain(hist, math.nan))
