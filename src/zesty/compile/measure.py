"""Latency of a runner on the three shapes the compiler ranks candidates by.

batch 1 x 16 tokens (a short query), batch 1 x 128 tokens (a paragraph), and batch 32 x 16
tokens reported per item (throughput under load). Medians over repeated runs after warm-up,
bounded in time so a slow candidate cannot stall the search.

`serving_batches` and `paired_ratio` compare two ways of running the one-thread twin on
batches shaped as the batcher forms them under load (similar lengths, some padding).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from zesty.serving.batcher import Encoded, run_padded

SHAPES = {"b1_s16": (1, 16), "b1_s128": (1, 128), "b32_s16": (32, 16)}


@dataclass
class Latency:
    b1_s16_ms: float
    b1_s128_ms: float
    b32_s16_ms_per_item: float

    @property
    def score(self) -> float:
        """Geometric mean of the three: no single shape decides alone."""
        return float(
            np.exp(np.mean(np.log([self.b1_s16_ms, self.b1_s128_ms, self.b32_s16_ms_per_item])))
        )

    def as_dict(self) -> dict[str, float]:
        return {
            "b1_s16_ms": round(self.b1_s16_ms, 3),
            "b1_s128_ms": round(self.b1_s128_ms, 3),
            "b32_s16_ms_per_item": round(self.b32_s16_ms_per_item, 3),
        }


def synthetic(batch: int, length: int, vocab: int, seed: int = 0) -> list[Encoded]:
    rng = np.random.default_rng(seed)
    low = min(1000, max(5, vocab // 4))
    return [
        Encoded(rng.integers(low, vocab, size=length, dtype=np.int64), np.zeros(length, np.int64))
        for _ in range(batch)
    ]


def measure_all(
    runners: list, vocab: int, pad_id: int, budget_s: float = 0.8, rounds: int = 5
) -> list[Latency]:
    """Time several runners in `rounds` interleaved blocks per shape.

    Each runner gets a block of consecutive runs (so thread pools of the others are idle,
    not competing), and the blocks of all runners alternate over several rounds, so that
    background load on a shared machine hits every candidate alike.
    """
    medians: list[dict[str, float]] = [{} for _ in runners]
    for key, (batch, length) in SHAPES.items():
        seqs = synthetic(batch, length, vocab)
        samples: list[list[float]] = [[] for _ in runners]
        for r in range(rounds):
            for i, runner in enumerate(runners):
                fn = lambda rn=runner, sq=seqs: run_padded(rn, sq, pad_id)  # noqa: E731
                if r == 0:
                    fn()  # warm-up
                deadline = time.perf_counter() + budget_s / rounds
                n = 0
                while n < 2 or (time.perf_counter() < deadline and n < 100):
                    t0 = time.perf_counter()
                    fn()
                    samples[i].append((time.perf_counter() - t0) * 1000 / batch)
                    n += 1
        for i, ts in enumerate(samples):
            medians[i][key] = float(np.median(ts))
    return [Latency(m["b1_s16"], m["b1_s128"], m["b32_s16"]) for m in medians]


def serving_batches(vocab: int, seed: int = 0) -> list[list[Encoded]]:
    """Batches as the batcher forms them under load: a few sequences of similar lengths, each
    60-100% of its batch's longest, and one batch of equal lengths: 12% of the padded tokens
    are padding, as measured in serving at 32 clients (docs/serving.md)."""
    rng = np.random.default_rng(seed)
    low = min(1000, max(5, vocab // 4))
    batches = []
    for size, longest in ((4, 16), (8, 16), (6, 32), (4, 48), (8, 40), (6, 24)):
        lengths = [longest] + [
            int(rng.integers(longest * 3 // 5, longest + 1)) for _ in range(size - 1)
        ]
        batches.append(
            [
                Encoded(rng.integers(low, vocab, n, dtype=np.int64), np.zeros(n, np.int64))
                for n in lengths
            ]
        )
    batches.append(synthetic(6, 24, vocab, seed))
    return batches


def paired_ratio(base, other, batches: list[list[Encoded]], pad_id: int, rounds: int = 8) -> float:
    """Median over rounds of other's time / base's time (`narrow` sessions where the runners
    have them), the order alternating each round so drift on a shared machine hits both
    alike."""

    def timed(runner) -> float:
        t0 = time.perf_counter()
        for seqs in batches:
            run_padded(runner, seqs, pad_id, narrow=True)
        return time.perf_counter() - t0

    timed(base), timed(other)  # warm-up
    ratios = []
    for r in range(rounds):
        if r % 2 == 0:
            a, b = timed(base), timed(other)
        else:
            b, a = timed(other), timed(base)
        ratios.append(b / a)
    return float(np.median(ratios))
