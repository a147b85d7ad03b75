"""Cutting a window of waiting sequences into batches: least compute, measured cost model.

A forward pass costs about `a + b x padded_tokens` (padded tokens = sequences x longest): a
fixed part (kernel launches, Python, thread wake-ups) and a part that grows with the padded
tensor. On a CPU `b` dominates, so one big batch of mixed lengths wastes compute on padding;
on a fixed-cost-heavy backend, many small batches waste the fixed part. `plan` sorts the
window by length and finds, by dynamic programming, the cut into consecutive runs that
minimizes the total cost within `--max-batch-size` and `--max-batch-tokens`. The ratio
`a / b` (the fixed cost in token-equivalents) is fitted online from the batcher's own
forward passes (`CostModel`), starting from a prior until enough varied batches were seen.
"""

from __future__ import annotations

from collections.abc import Sequence

#: fixed cost of a forward pass, in padded-token equivalents, before any measurement
#: (fp32 PyTorch, all-MiniLM-L6-v2, 2 cores: ~6 ms fixed, ~0.2 ms per padded token)
PRIOR_OVERHEAD_TOKENS = 32.0


class CostModel:
    """forward_s ~ a + b x padded_tokens, least squares with exponential forgetting."""

    def __init__(self, prior: float = PRIOR_OVERHEAD_TOKENS, decay: float = 0.97) -> None:
        self.prior = prior
        self.decay = decay
        self.n = self.sx = self.sy = self.sxx = self.sxy = 0.0

    def add(self, padded_tokens: int, seconds: float) -> None:
        d = self.decay
        x, y = float(padded_tokens), float(seconds)
        self.n = self.n * d + 1
        self.sx = self.sx * d + x
        self.sy = self.sy * d + y
        self.sxx = self.sxx * d + x * x
        self.sxy = self.sxy * d + x * y

    def overhead_tokens(self) -> float:
        """a / b, clipped to [1, 4096]; the prior until the fit is meaningful."""
        if self.n < 8:
            return self.prior
        mx, my = self.sx / self.n, self.sy / self.n
        var = self.sxx / self.n - mx * mx
        if var <= (0.1 * mx) ** 2:  # sizes too alike to separate the two parts
            return self.prior
        b = (self.sxy / self.n - mx * my) / var
        a = my - b * mx
        if b <= 0:
            return self.prior
        return min(max(a / b, 1.0), 4096.0)


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
