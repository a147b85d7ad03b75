"""Cutting a window of waiting sequences into batches of least compute.

A forward pass costs about `a + b x padded_tokens` (padded tokens = sequences x longest): a
fixed part (kernel launches, Python, thread wake-ups) and a part that grows with the padded
tensor. On a CPU `b` dominates, so one big batch of mixed lengths wastes compute on padding;
on a fixed-cost-heavy backend, many small batches waste the fixed part. `plan` takes the
window sorted by length and finds, by dynamic programming, the cut into consecutive runs
that minimizes the total cost within `--max-batch-size` and `--max-batch-tokens`. The fixed
cost is `--batch-overhead-tokens` (`a / b` in padded-token equivalents; measured on the
reference machine for fp32 PyTorch MiniLM: about 5 ms fixed and 0.22 ms per token, so ~25).
An online fit of `a / b` from the server's own forward passes was tried and dropped: on a
shared 2-core machine the timings were too noisy (fits of 80-1000 tokens for a true ~25).
"""

from __future__ import annotations

from collections.abc import Sequence


def plan(
    lengths: Sequence[int], overhead_tokens: float, max_size: int, max_tokens: int
) -> list[tuple[int, int]]:
    """Cut ascending `lengths` into runs [start, end) of least total cost.

    cost(run) = overhead_tokens + size x longest; a run must fit `max_size` sequences and
    `max_tokens` padded tokens (a single sequence always fits).
    """
    n = len(lengths)
    best = [0.0] + [float("inf")] * n  # best[j]: least cost of the first j sequences
    cut = [0] * (n + 1)
    for end in range(1, n + 1):
        longest = lengths[end - 1]
        for start in range(end - 1, max(end - max_size, 0) - 1, -1):
            size = end - start
            if size > 1 and size * longest > max_tokens:
                break  # longer runs only grow
            cost = best[start] + overhead_tokens + size * longest
            if cost < best[end]:
                best[end], cut[end] = cost, start
    runs = []
    end = n
    while end > 0:
        runs.append((cut[end], end))
        end = cut[end]
    return runs[::-1]
