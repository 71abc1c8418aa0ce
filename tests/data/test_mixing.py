"""Mixing by token share: realized shares within 1 point, repeat caps, budgets, and the guidance notes."""

from __future__ import annotations

import numpy as np
import pytest

from domainsmith.data.mixing import mix_guidance, plan_mix
from domainsmith.errors import DomainsmithError
from domainsmith.recipe import MixSettings


def _tokens(seed: int, n: int, low: int, high: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(low, high, n)


@pytest.mark.parametrize("domain_share", [0.05, 0.3, 0.5, 0.8])
def test_realized_shares_within_one_point(domain_share):
    tokens = {"domain": _tokens(0, 400, 50, 2000), "general": _tokens(1, 3000, 20, 800)}
    mix = MixSettings(domain=domain_share, general=1 - domain_share)
    copies, report = plan_mix(tokens, mix, seed=0)
    written = {r: int((copies[r] * tokens[r]).sum()) for r in tokens}
    share = written["domain"] / sum(written.values())
    assert abs(share - domain_share) <= 0.01
    assert report["max_share_error"] <= 0.01
    assert report["realized_share"]["domain"] == pytest.approx(share, abs=1e-4)


def test_scarce_domain_is_upsampled_up_to_its_cap_and_general_downsampled():
    tokens = {"domain": np.full(100, 100), "general": np.full(10_000, 100)}  # 10k vs 1M tokens
    copies, report = plan_mix(tokens, MixSettings(domain=0.5, general=0.5, max_repeats={"domain": 3}), seed=0)
    assert copies["domain"].max() == 3 and (copies["domain"] == 3).all()  # capped at 3 repeats
    assert report["roles"]["domain"]["action"].startswith("upsampled")
    assert report["roles"]["general"]["action"].startswith("downsampled")
    assert int((copies["general"] * 100).sum()) == pytest.approx(30_000, rel=0.01)
    assert copies["general"].max() == 1  # general is never repeated by default


def test_fractional_repeats_and_budget():
    tokens = {"domain": np.full(100, 10), "general": np.full(100, 10)}
    copies, _ = plan_mix(tokens, MixSettings(domain=0.6, general=0.4, max_repeats={"domain": 4, "general": 2}), 0)
    # General (the plentiful role) is used once, not repeated up to its cap; domain makes up 60%: 1.5 repeats.
    assert (copies["general"] == 1).all()
    assert int((copies["domain"] * 10).sum()) == 1500 and set(copies["domain"].tolist()) == {1, 2}
    copies, report = plan_mix(tokens, MixSettings(domain=0.5, general=0.5, budget_tokens=1000), 0)
    assert sum(int((copies[r] * 10).sum()) for r in copies) == 1000
    assert report["roles"]["domain"]["records_unused"] == 50


def test_same_seed_same_selection_and_missing_role_is_an_error():
    tokens = {"domain": _tokens(2, 50, 10, 100), "general": _tokens(3, 500, 10, 100)}
    mix = MixSettings(domain=0.3, general=0.7)
    a, _ = plan_mix(tokens, mix, seed=4)
    b, _ = plan_mix(tokens, mix, seed=4)
    assert all((a[r] == b[r]).all() for r in a)
    with pytest.raises(DomainsmithError, match="no general data"):
        plan_mix({"domain": np.full(5, 10)}, mix, seed=0)


def test_zero_share_drops_the_role():
    copies, report = plan_mix(
        {"domain": np.full(5, 10), "general": np.full(5, 10)}, MixSettings(domain=1, general=0), 0
    )
    assert copies["general"].sum() == 0 and copies["domain"].sum() == 5
    assert report["realized_share"] == {"domain": 1.0, "general": 0.0}


def test_shares_must_sum_to_one():
    with pytest.raises(ValueError, match="sum to 1"):
        MixSettings(domain=0.3, general=0.3)


def test_guidance_for_ratios_far_from_practice():
    assert any("continued pretraining" in n for n in mix_guidance(0.9, {"text"}))
    assert not mix_guidance(0.2, {"text"})
    assert any("1:1" in n for n in mix_guidance(0.95, {"chat"}))
    assert not mix_guidance(0.5, {"chat"})
    assert any("forget" in n for n in mix_guidance(1.0, {"chat"}))
