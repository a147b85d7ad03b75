"""`zesty optimize`'s candidate table, shared by the encoder and the generation compiles: one
row per candidate (the reference first), its verdict, and each rejection's reason as a
numbered footnote under the table."""

from __future__ import annotations

DASH = "—"


def print_candidates(
    title: str,
    columns: list[str],
    reference: list[str],
    rows: list[tuple[str, list[str], str, str]],
    width: int = 120,
) -> None:
    """`columns` name the measured cells; a row is (recipe, cells, verdict, reason)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("recipe", *columns, "verdict"):
        table.add_column(col, overflow="fold")
    table.add_row("torch fp32 (reference)", *reference, "reference")
    notes = []
    for name, cells, verdict, reason in rows:
        if reason:
            notes.append(f"[{len(notes) + 1}] {name}: {reason}")
            verdict += f" [{len(notes)}]"
        table.add_row(name, *cells, verdict)
    console = Console(width=max(Console().width, width))
    console.print(table)
    for note in notes:
        console.print(note, highlight=False)
