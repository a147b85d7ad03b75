"""`zesty optimize`'s table for a causal LM: each generation candidate's decode speed,
accuracy on both splits, size and verdict (the compile itself is in generation.py)."""

from __future__ import annotations

from zesty.compile.generation import GenCandidate


def render_table(candidates: list[GenCandidate], manifest: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    ref = manifest["speed"]["reference"]["tokens_per_s"]
    table = Table(title=f"zesty optimize — {manifest['model']['id']} (text-generation)")
    for col in (
        "recipe",
        "decode b1 tok/s",
        "decode b16 tok/s",
        "tune: agreement / KL",
        "held-out: agreement / KL",
        "MB",
        "verdict",
    ):
        table.add_column(col, overflow="fold")
    table.add_row(
        "torch fp32 (reference)",
        f"{ref['b1']:.1f}",
        f"{ref['b16']:.1f}",
        "—",
        "—",
        "—",
        "reference",
    )

    def fmt(m: dict) -> str:
        return f"{m['greedy_agreement']:.3f} / {m['kl']:.4f}" if m else "—"

    notes = []
    for c in candidates:
        verdict = c.verdict
        if c.reason:
            notes.append(f"[{len(notes) + 1}] {c.recipe.name}: {c.reason}")
            verdict += f" [{len(notes)}]"
        tps = c.tokens_per_s
        table.add_row(
            c.recipe.name,
            f"{tps['b1']:.1f}" if tps else "—",
            f"{tps['b16']:.1f}" if tps else "—",
            fmt(c.tune),
            fmt(c.held_out),
            f"{c.size_bytes / 1e6:.1f}" if c.size_bytes else "—",
            verdict,
        )
    console = Console(width=max(Console().width, 120))
    console.print(table)
    for note in notes:
        console.print(note, highlight=False)
