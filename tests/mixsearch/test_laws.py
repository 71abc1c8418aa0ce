"""Loss-law fits: known parameters come back from noisy synthetic points; leave-one-out picks the right law; the
recommendation respects the general-loss tolerance."""

from __future__ import annotations

import numpy as np
import pytest

from domainsmith.mixsearch.laws import LAWS, fit_all, fit_law, leave_one_out_error
from domainsmith.mixsearch.recommend import heuristics, recommend

SHARES = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0])


def _noisy(values: np.ndarray, level: float, seed: int = 0) -> np.ndarray:
    return values * (1 + level * np.random.default_rng(seed).standard_normal(len(values)))


def test_exponential_law_recovers_its_parameters_from_noisy_points():
    truth = np.array([1.8, 0.6, -2.5])  # c, k, t: a loss falling with its own share
    y = _noisy(LAWS["exponential"].predict(SHARES, truth), 0.002)
    fit = fit_law(LAWS["exponential"], SHARES, y)
    assert fit.params == pytest.approx(truth, rel=0.06)


def test_dcpt_law_recovers_its_curve_and_floor_from_noisy_points():
    truth = np.array([1.5, 0.05, 1.0, 0.2, 0.5, 0.05])  # E, B, h, C, g, eps
    law = LAWS["dcpt"]
    y = _noisy(law.predict(SHARES, truth), 0.002)
    fit = fit_law(law, SHARES, y)
    grid = np.linspace(0, 1, 101)
    # Six parameters from eight points are not all identifiable; the curve they draw is.
    assert np.max(np.abs(fit(grid) / law.predict(grid, truth) - 1)) < 0.01
    assert np.mean(np.abs(fit(SHARES) / y - 1)) < 0.004


def test_leave_one_out_prefers_the_law_that_generated_the_data():
    y = _noisy(LAWS["exponential"].predict(SHARES, np.array([2.0, 0.8, -4.0])), 0.001)
    result = fit_all(SHARES, y, starts=24)
    assert result["best"] == "exponential"
    assert result["fits"]["exponential"]["loo"]["mean_abs_rel_error"] < 0.01
    loo = leave_one_out_error(LAWS["exponential"], SHARES, y, starts=24)
    assert len(loo["errors"]) == len(SHARES)


def test_too_few_points_is_an_error():
    with pytest.raises(ValueError, match="at least 3"):
        fit_all([0.0, 1.0], [2.0, 1.0])


def _general(r):  # rises 10% of 2.0 at r = 1, quadratically: a 3% rise at r = sqrt(0.3)
    return 2.0 * (1 + 0.1 * np.asarray(r) ** 2)


def _domain(r):
    return 3.0 - np.asarray(r)


def test_recommendation_is_the_largest_share_within_the_tolerance():
    rec = recommend(_general, _domain, start_general_loss=2.0, tolerance=0.03)
    assert rec["within_tolerance"] and rec["general_loss"] <= 2.0 * 1.03 + 1e-12
    assert rec["ratio"] == pytest.approx(np.sqrt(0.3), abs=0.002)
    assert _general(rec["ratio"] + 0.002) > 2.0 * 1.03  # the next share on the grid is over the ceiling
    assert recommend(_general, _domain, 2.0, tolerance=0.2)["ratio"] == 1.0
    # A 1% prediction error leaves less room: a 3% rise must be predicted as at most about 2%.
    cautious = recommend(_general, _domain, 2.0, tolerance=0.03, margin=0.01)
    assert cautious["ratio"] < rec["ratio"] and cautious["ratio_without_margin"] == rec["ratio"]
    assert cautious["general_loss"] * 1.01 <= 2.0 * 1.03 + 1e-12


def test_no_share_within_the_tolerance_is_flagged():
    rec = recommend(lambda r: 2.5 + 0 * np.asarray(r), _domain, start_general_loss=2.0, tolerance=0.03)
    assert not rec["within_tolerance"]


def test_heuristics_are_judged_against_the_same_tolerance():
    rows = {h["rule"]: h for h in heuristics(_general, _domain, 2.0, 0.02)}
    assert rows["domain under 15% in CPT"]["within_tolerance"]  # a 0.2% rise
    assert not rows["domain:general 1:1 (SFT practice)"]["within_tolerance"]  # a 2.5% rise
    assert rows["domain:general 1:1 (SFT practice)"]["general_rise"] == pytest.approx(0.025)
