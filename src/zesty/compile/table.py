"""`zesty optimize`'s candidate table, shared by the encoder and the generation compiles: one
row per candidate (the reference first), its verdict, and each rejection's reason as a
numbered footnote under the table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

DASH = "—"


def print_candidates(
    title: str,
    speed_columns: list[str],
    accuracy: str,
    reference_speed: list[str],
    candidates: list,
    speed_cells: Callable[[Any], list[str]],
    accuracy_cell: Callable[[dict], str],
    width: int = 120,
) -> None:
    """One row per candidate: its speed cells, its accuracy on the tune and held-out splits
    (`accuracy` names what `accuracy_cell` writes), its size and verdict. A candidate is an
    encoder or a generation candidate: `recipe.name`, `tune`, `held_out`, `size_bytes`,
    `verdict`, `reason`."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    columns = [*speed_columns, f"tune: {accuracy}", f"held-out: {accuracy}", "MB"]
    for col in ("recipe", *columns, "verdict"):
        table.add_column(col, overflow="fold")
    table.add_row("torch fp32 (reference)", *reference_speed, DASH, DASH, DASH, "reference")
    notes = []
    for c in candidates:
        verdict = c.verdict
        if c.reason:
            notes.append(f"[{len(notes) + 1}] {c.recipe.name}: {c.reason}")
            verdict += f" [{len(notes)}]"
        size = f"{c.size_bytes / 1e6:.1f}" if c.size_bytes else DASH
        cells = [*speed_cells(c), accuracy_cell(c.tune), accuracy_cell(c.held_out), size]
        table.add_row(c.recipe.name, *cells, verdict)
    console = Console(width=max(Console().width, width))
    console.print(table)
    for note in notes:
        console.print(note, highlight=False)
