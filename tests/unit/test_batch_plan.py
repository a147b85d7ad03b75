"""Cutting a window into batches: least total cost within the limits."""

from __future__ import annotations

import random

from zesty.serving.batch_plan import plan


def sizes(runs):
    return [end - start for start, end in runs]


def test_a_big_fixed_cost_makes_one_batch_a_small_one_groups_by_length():
    lengths = [10, 11, 12, 13, 50, 52, 55, 60]
    assert plan(lengths, 10_000, 32, 16_384) == [(0, 8)]  # padding is cheap next to a pass
    runs = plan(lengths, 20, 32, 16_384)
    assert runs == [(0, 4), (4, 8)]  # short ones together, long ones together
    # with almost no fixed cost, only equal lengths share a pass
    assert sizes(plan([5, 5, 9, 9, 9], 0.5, 32, 16_384)) == [2, 3]


def test_the_plan_is_optimal_and_within_the_limits():
    rng = random.Random(3)
    for _ in range(200):
        lengths = sorted(rng.randint(1, 64) for _ in range(rng.randint(1, 12)))
        overhead = rng.choice([1, 8, 32, 128])
        max_size, max_tokens = rng.choice([2, 4, 32]), rng.choice([64, 256, 16_384])
        runs = plan(lengths, overhead, max_size, max_tokens)
        assert runs[0][0] == 0 and runs[-1][1] == len(lengths)
        assert all(a[1] == b[0] for a, b in zip(runs, runs[1:]))
        for start, end in runs:
            size = end - start
            assert size <= max_size and (size == 1 or size * lengths[end - 1] <= max_tokens)

        def cost(rs, overhead=overhead, lengths=lengths):
            return sum(overhead + (e - s) * lengths[e - 1] for s, e in rs)

        # brute force over every cut of the sorted list
        best = float("inf")
        n = len(lengths)
        for mask in range(1 << (n - 1)):
            cuts = [0] + [i + 1 for i in range(n - 1) if mask >> i & 1] + [n]
            rs = list(zip(cuts, cuts[1:]))
            ok = all(
                e - s <= max_size and (e - s == 1 or (e - s) * lengths[e - 1] <= max_tokens)
                for s, e in rs
            )
            if ok:
                best = min(best, cost(rs))
        assert abs(cost(runs) - best) < 1e-9
