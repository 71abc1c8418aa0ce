"""Paired bootstrap: coverage on simulated data, degenerate inputs, width vs n, determinism, item alignment."""

from __future__ import annotations

import numpy as np
import pytest

from domainsmith.evaluate.bootstrap import cluster_bootstrap, paired_bootstrap, paired_item_scores


def _paired_bernoulli(rng, n: int, p_before: float, p_after: float) -> tuple[np.ndarray, np.ndarray]:
    """Correlated pairs, as before/after runs on the same items are: a shared item difficulty drives both."""
    easy = rng.random(n)
    before = (easy < p_before).astype(float)
    # Flip a fraction of wrong answers to right so the true mean difference is exactly p_after - p_before.
    flip = (before == 0) & (rng.random(n) < (p_after - p_before) / (1 - p_before))
    return before, np.where(flip, 1.0, before)


def test_95_percent_interval_covers_the_true_difference_in_most_simulations():
    rng = np.random.default_rng(123)
    true_diff = 0.7 - 0.6
    covered = 0
    for sim in range(100):
        before, after = _paired_bernoulli(rng, 300, 0.6, 0.7)
        lo, hi = paired_bootstrap(before, after, n_resamples=2000, seed=sim)["ci95"]
        covered += lo <= true_diff <= hi
    assert covered >= 90


def test_identical_inputs_give_zero_difference_and_a_zero_width_interval():
    scores = [1.0, 0.0, 1.0, 1.0, 0.0]
    result = paired_bootstrap(scores, scores, n_resamples=500)
    assert result["diff"] == 0.0
    assert result["ci95"] == [0.0, 0.0]
    assert result["p_value"] == 1.0
    assert (result["n"], result["n_resamples"], result["confidence"]) == (5, 500, 0.95)


def test_interval_narrows_as_n_grows_and_reflects_the_confidence_level():
    rng = np.random.default_rng(0)
    widths = []
    for n in (50, 500, 5000):
        before, after = _paired_bernoulli(rng, n, 0.5, 0.6)
        lo, hi = paired_bootstrap(before, after, n_resamples=2000)["ci95"]
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    before, after = _paired_bernoulli(rng, 400, 0.5, 0.6)
    r80 = paired_bootstrap(before, after, n_resamples=2000, confidence=0.8)
    r99 = paired_bootstrap(before, after, n_resamples=2000, confidence=0.99)
    assert r80["confidence"] == 0.8
    assert r80["ci95"][1] - r80["ci95"][0] < r99["ci95"][1] - r99["ci95"][0]


def test_p_value_separates_a_real_effect_from_none():
    rng = np.random.default_rng(5)
    before, after = _paired_bernoulli(rng, 1000, 0.5, 0.6)
    assert paired_bootstrap(before, after, n_resamples=2000)["p_value"] < 0.01
    noise = rng.random(1000)
    null = paired_bootstrap(noise, noise[::-1], n_resamples=2000)
    assert null["p_value"] > 0.05
    assert null["ci95"][0] < 0 < null["ci95"][1]


def test_same_seed_same_result_and_chunked_large_inputs():
    rng = np.random.default_rng(1)
    before, after = _paired_bernoulli(rng, 100_000, 0.5, 0.51)
    a = paired_bootstrap(before, after, n_resamples=200, seed=7)
    b = paired_bootstrap(before, after, n_resamples=200, seed=7)
    c = paired_bootstrap(before, after, n_resamples=200, seed=8)
    assert a == b
    assert a["ci95"] != c["ci95"]
    assert a["ci95"][0] < a["diff"] < a["ci95"][1]


def test_argument_errors():
    with pytest.raises(ValueError, match="paired"):
        paired_bootstrap([1.0, 0.0], [1.0])
    with pytest.raises(ValueError, match="no paired items"):
        paired_bootstrap([], [])
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap([1.0], [0.0], confidence=95)


def test_paired_item_scores_align_by_id():
    before = {"items": [{"id": "a", "correct": True}, {"id": "b", "correct": False}, {"id": "c", "correct": True}]}
    after = {"items": [{"id": "c", "correct": False}, {"id": "a", "correct": True}, {"id": "z", "correct": True}]}
    assert paired_item_scores(before, after) == ([1.0, 1.0], [1.0, 0.0])
    assert paired_item_scores({"items": [{"id": "a", "f1": 0.5}]}, {"items": [{"id": "a", "f1": 0.75}]}, "f1") == (
        [0.5],
        [0.75],
    )


def test_cluster_bootstrap_with_one_unit_per_cluster_is_the_paired_bootstrap():
    rng = np.random.default_rng(7)
    before, after = _paired_bernoulli(rng, 150, 0.4, 0.5)
    paired = paired_bootstrap(before, after, n_resamples=3000, seed=3)
    clustered = cluster_bootstrap(after - before, np.ones(150), n_resamples=3000, seed=3)
    assert clustered["clusters"] == clustered["n"] == 150
    assert clustered["diff"] == pytest.approx(paired["diff"])
    assert clustered["ci95"] == pytest.approx(paired["ci95"])
    assert clustered["p_value"] == pytest.approx(paired["p_value"])


def test_cluster_bootstrap_is_wider_when_a_cluster_repeats_the_same_evidence():
    # Three runs that change exactly the same items: 3x the pairs, but no more information than one run.
    rng = np.random.default_rng(11)
    before, after = _paired_bernoulli(rng, 200, 0.3, 0.36)
    one_run = paired_bootstrap(before, after, n_resamples=4000, seed=0)
    as_pairs = paired_bootstrap(np.tile(before, 3), np.tile(after, 3), n_resamples=4000, seed=0)
    clustered = cluster_bootstrap(3 * (after - before), np.full(200, 3.0), n_resamples=4000, seed=0)
    width = lambda r: r["ci95"][1] - r["ci95"][0]  # noqa: E731
    assert clustered["diff"] == pytest.approx(as_pairs["diff"]) == pytest.approx(one_run["diff"])
    assert width(clustered) == pytest.approx(width(one_run), rel=0.15)
    assert width(as_pairs) < 0.7 * width(clustered)  # ~1/sqrt(3): pooling copies overstates the evidence


def test_cluster_bootstrap_ratio_weights_clusters_by_their_size():
    result = cluster_bootstrap([2.0, -1.0], [4.0, 1.0], n_resamples=200)
    assert result["diff"] == pytest.approx(1.0 / 5.0) and result["n"] == 5 and result["clusters"] == 2


@pytest.mark.parametrize(
    ("sums", "counts", "message"),
    [([], [], "no clusters"), ([1.0], [0.0], "at least one unit"), ([1.0, 2.0], [1.0], "same length")],
)
def test_cluster_bootstrap_rejects_bad_input(sums, counts, message):
    with pytest.raises(ValueError, match=message):
        cluster_bootstrap(sums, counts)
