"""How a proxy run draws its documents: the share's token budget, and the same draw order at every share."""

from __future__ import annotations

from collections import Counter

import numpy as np

from domainsmith.mixsearch.pool import Pool
from domainsmith.mixsearch.proxy import mixed_documents


def _pool() -> Pool:
    domain = [f"domain document {i}" for i in range(30)]
    general = [f"general document {i}" for i in range(50)]
    rng = np.random.default_rng(7)
    return Pool(
        train={"domain": domain, "general": general},
        train_tokens={"domain": rng.integers(20, 80, 30), "general": rng.integers(20, 80, 50)},
        validation={"domain": [], "general": []},
        fingerprint="test",
    )


def test_each_role_gets_its_share_of_the_budget():
    pool = _pool()
    texts, report = mixed_documents(pool, 0.3, 1000, seed=0)
    assert abs(report["domain"]["tokens"] - 300) < 80 and abs(report["general"]["tokens"] - 700) < 80
    # The documents returned are the ones the report counts.
    tokens = {
        doc: int(n)
        for role in ("domain", "general")
        for doc, n in zip(pool.train[role], pool.train_tokens[role], strict=True)
    }
    assert sum(tokens[t] for t in texts) == report["domain"]["tokens"] + report["general"]["tokens"]


def test_a_smaller_share_draws_a_subset_of_a_larger_shares_documents():
    pool = _pool()
    drawn = {r: Counter(mixed_documents(pool, r, 1500, seed=3)[0]) for r in (0.1, 0.4, 0.8)}

    def role(counter: Counter, name: str) -> Counter:
        return Counter({d: n for d, n in counter.items() if d.startswith(name)})

    # Domain documents grow with the share and general ones shrink, each staying inside the larger draw
    # (Counter <= Counter: every document at most as often).
    assert role(drawn[0.1], "domain") <= role(drawn[0.4], "domain") <= role(drawn[0.8], "domain")
    assert role(drawn[0.8], "general") <= role(drawn[0.4], "general") <= role(drawn[0.1], "general")
    # Another seed draws in another order.
    other = Counter(mixed_documents(pool, 0.1, 1500, seed=4)[0])
    assert role(other, "domain") != role(drawn[0.1], "domain")


def _token_counts(pool: Pool) -> dict[str, int]:
    return {
        doc: int(n)
        for role in ("domain", "general")
        for doc, n in zip(pool.train[role], pool.train_tokens[role], strict=True)
    }


def test_the_roles_are_blended_evenly_over_the_run():
    pool = _pool()
    tokens = _token_counts(pool)
    texts, report = mixed_documents(pool, 0.2, 3000, seed=1)
    share = report["domain"]["tokens"] / (report["domain"]["tokens"] + report["general"]["tokens"])
    # The domain share of every quarter of the token stream stays near the run's share (a random order puts
    # whole quarters far from it at small shares).
    stream = np.concatenate([[t.startswith("domain")] * tokens[t] for t in texts])
    quarters = [float(q.mean()) for q in np.array_split(stream, 4)]
    assert all(abs(q - share) < 0.05 for q in quarters), (share, quarters)


def test_a_role_keeps_its_draw_order_at_every_share():
    pool = _pool()
    small = [t for t in mixed_documents(pool, 0.1, 2000, seed=5)[0] if t.startswith("domain")]
    large = [t for t in mixed_documents(pool, 0.6, 2000, seed=5)[0] if t.startswith("domain")]
    assert len(small) < len(large) and large[: len(small)] == small
