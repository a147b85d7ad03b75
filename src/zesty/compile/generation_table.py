"""`zesty optimize`'s table for a causal LM: each generation candidate's decode speed,
accuracy on both splits, size and verdict (the compile itself is in generation.py)."""

from __future__ import annotations

from zesty.compile.generation import GenCandidate
from zesty.compile.table import DASH, print_candidates


def render_table(candidates: list[GenCandidate], manifest: dict) -> None:
    ref = manifest["speed"]["reference"]["tokens_per_s"]

    def speed(c: GenCandidate) -> list[str]:
        tps = c.tokens_per_s
        return [f"{tps['b1']:.1f}", f"{tps['b16']:.1f}"] if tps else [DASH, DASH]

    def accuracy(m: dict) -> str:
        return f"{m['greedy_agreement']:.3f} / {m['kl']:.4f}" if m else DASH

    print_candidates(
        f"zesty optimize — {manifest['model']['id']} (text-generation)",
        ["decode b1 tok/s", "decode b16 tok/s"],
        "agreement / KL",
        [f"{ref['b1']:.1f}", f"{ref['b16']:.1f}"],
        candidates,
        speed,
        accuracy,
    )
