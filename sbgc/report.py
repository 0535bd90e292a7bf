"""Markdown tables that a browser shows as tables: every table of the book and the results goes through here.

A markdown table breaks silently when a cell holds a ``|`` (e.g. "bits/dim of p(x | y)"): the row
gains a column and the whole table renders as a paragraph of raw text. :func:`markdown_table`
escapes every cell, checks that every row has the header's width and writes the alignment row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

ALIGNMENTS = {"left": "---", "right": "---:", "center": ":---:"}


def cell(value: Any) -> str:
    """``value`` as the text of one table cell: ``|`` escaped, line breaks as spaces."""
    return " ".join(str(value).split("\n")).replace("|", "\\|")


def markdown_table(header: Sequence[Any], rows: Iterable[Sequence[Any]], align: Sequence[str] | None = None) -> str:
    """A GitHub/MyST markdown table: ``header`` [C] cells, each row [C] cells, ``align`` [C] of
    ``"left"``, ``"right"`` or ``"center"`` (default: all left). Cells are escaped with :func:`cell`.

    Raises ValueError naming the first row whose width differs from the header's.
    """
    header = [cell(h) for h in header]
    if not header:
        raise ValueError("markdown_table: the header needs at least one column")
    align = ["left"] * len(header) if align is None else list(align)
    if len(align) != len(header) or any(a not in ALIGNMENTS for a in align):
        raise ValueError(f"markdown_table: align must be {len(header)} of {tuple(ALIGNMENTS)}, got {align}")
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(ALIGNMENTS[a] for a in align) + " |"]
    for i, row in enumerate(rows):
        row = list(row)
        if len(row) != len(header):
            raise ValueError(f"markdown_table: row {i} has {len(row)} cells, the header {len(header)}: {row!r}")
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines)


def cpu_trained_note(*metas: Mapping[str, Any]) -> str | None:
    """The note a provenance line carries when any of the models (their metadata ``meta["device"]``)
    was trained on a CPU: its size, dataset and training, so no reader takes it for the paper's
    67M-parameter GPU network. ``None`` when none was CPU-trained."""
    cpu = [m for m in metas if "cpu" in str(m.get("device", "")).lower()]
    if not cpu:
        return None
    def one(m: Mapping[str, Any]) -> str:
        dataset = "MNIST" if str(m.get("data_source", "")).startswith("mnist") else "CIFAR-10"
        what = f"{m['architecture']} baseline" if m.get("architecture") else "network"  # a classifier names its architecture
        steps = f" ({m['step']:,} steps)" if isinstance(m.get("step"), int) else ""
        return f"{m.get('n_params', 0) / 1e6:.2f}M-parameter {dataset} {what} trained on a CPU{steps}"
    return "; ".join(one(m) for m in cpu)
