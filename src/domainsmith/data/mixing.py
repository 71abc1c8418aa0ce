"""Mix roles by token share: how many times each record is written so domain:general tokens hit the target.

The total is as large as the data allows: T = min over roles of available tokens x max repeats / share, but no
more than the total at which the most plentiful role is used exactly once (and at most `budget_tokens`). Each
role then gets T x share tokens: whole repeats of all its records, plus a seeded random subset for the fraction.
A role short of its share is upsampled (up to its repeat cap); the other is downsampled.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import DomainsmithError
from ..recipe import MixSettings


def plan_mix(tokens: dict[str, np.ndarray], mix: MixSettings, seed: int) -> tuple[dict[str, np.ndarray], dict]:
    """Copies per record for each role (`tokens[role]` are its records' token counts), and a report of what was
    up- or down-sampled."""
    shares = {"domain": mix.domain, "general": mix.general}
    available = {role: int(tokens.get(role, np.zeros(0)).sum()) for role in shares}
    for role, share in shares.items():
        if share > 0 and available[role] == 0:
            raise DomainsmithError(f"mix asks for {share:.0%} {role} tokens but no {role} data is left after cleaning")
    wanted = {r: s for r, s in shares.items() if s > 0}
    # As many tokens as the repeat caps allow, but no more than using the most plentiful role once: repeats only
    # make up for a scarce role, never inflate a mix that every role could fill.
    total = min(
        min(available[r] * mix.max_repeats.get(r, 1.0) / s for r, s in wanted.items()),
        max(available[r] / s for r, s in wanted.items()),
    )
    if mix.budget_tokens is not None:
        total = min(total, mix.budget_tokens)
    rng = np.random.default_rng(seed)
    copies: dict[str, np.ndarray] = {}
    report: dict = {"target_share": shares, "roles": {}}
    for role, share in shares.items():
        counts = tokens.get(role, np.zeros(0, dtype=np.int64))
        target = total * share
        copies[role] = repeats = role_copies(counts, target, rng)
        written = int((repeats * counts).sum())
        factor = written / available[role] if available[role] else 0.0
        action = "upsampled" if factor > 1.0005 else "downsampled" if factor < 0.9995 else "used as is"
        report["roles"][role] = {
            "available_tokens": available[role],
            "target_tokens": round(target),
            "written_tokens": written,
            "factor": round(factor, 4),
            "action": f"{action} ({factor:.2f}x of its tokens)",
            "records_unused": int((repeats == 0).sum()),
        }
    written_total = sum(r["written_tokens"] for r in report["roles"].values())
    report["realized_share"] = {
        role: round(r["written_tokens"] / written_total, 4) if written_total else 0.0
        for role, r in report["roles"].items()
    }
    report["max_share_error"] = round(max(abs(report["realized_share"][r] - s) for r, s in shares.items()), 4)
    return copies, report


def role_copies(counts: np.ndarray, target: float, rng: np.random.Generator) -> np.ndarray:
    """Copies per record so the records' tokens (`counts`) add up as close to `target` as whole records allow:
    whole repeats of every record, then a seeded random subset for the fraction."""
    return np.bincount(draw_order(counts, target, rng), minlength=len(counts)).astype(np.int64)


def draw_order(counts: np.ndarray, target: float, rng: np.random.Generator) -> np.ndarray:
    """The records drawn to reach `target` tokens, in draw order: every record once per whole repeat, then the
    prefix of one seeded permutation whose token sum lands closest to the remainder. Each pass uses that same
    permutation, so for a fixed rng a smaller target's draw is a prefix of a larger one's."""
    available = int(counts.sum())
    if target <= 0 or available == 0:
        return np.zeros(0, dtype=np.int64)
    whole = math.floor(target / available)
    remainder = target - whole * available
    order = rng.permutation(len(counts))
    sums = np.concatenate([[0], np.cumsum(counts[order])])  # sums[k]: tokens of the first k records
    k = min(int(np.searchsorted(sums, remainder)), len(order))
    if k > 0 and abs(sums[k - 1] - remainder) <= abs(sums[k] - remainder):
        k -= 1
    return np.concatenate([np.tile(order, whole), order[:k]]).astype(np.int64)


def mix_guidance(domain_share: float, kinds: set[str]) -> list[str]:
    """Advice when a ratio is far from what practice and the studies suggest (never a refusal)."""
    notes = []
    if "text" in kinds and domain_share > 0.5:
        notes.append(
            f"continued pretraining with {domain_share:.0%} domain tokens: practitioners keep domain text around "
            "10-30% to protect general skills, while controlled studies (D-CPT Law, CMR) found safe shares from "
            "30% to over 90% depending on model size, token budget and how far the domain is from the original "
            "data. Measure it on your model: `domainsmith mix search recipe.yaml` (short proxy runs at several shares, "
            "general and domain held-out loss, a fitted law and a recommended share)."
        )
    if kinds == {"chat"} and not 0.3 <= domain_share <= 0.7:
        notes.append(
            f"instruction tuning with {domain_share:.0%} domain tokens: mixes near 1:1 domain:general are the "
            "usual starting point; far from it, check the general probe for forgetting (or domain QA for "
            "under-learning) before settling on the ratio."
        )
    if domain_share >= 1.0:
        notes.append("no general data in the mix: expect the model to forget general skills (see eval's probe).")
    return notes
