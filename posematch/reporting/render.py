"""Rendering a ``posematch.reporting.tables.Table``: GitHub Markdown and booktabs LaTeX, each row
with the run and file its numbers came from."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from posematch.reporting.tables import Table

MISSING = {"md": "–", "latex": "--"}
LATEX_HEADERS = {
    "AP50": "AP$_{50}$",
    "AP75": "AP$_{75}$",
    "APM": "AP$_{M}$",
    "APL": "AP$_{L}$",
    "ΔAP": r"$\Delta$AP",
    "ΔMean": r"$\Delta$Mean",
}


def _sources(table: Table) -> list[tuple[str, str]]:
    """(row label, run path and source) of every row that shows a run."""
    return [
        (" ".join(row.label), f"{row.result.run}: {row.result.source}")
        for group in table.groups
        for row in group
        if row.result is not None
    ]


def to_markdown(table: Table) -> str:
    """The table as GitHub Markdown: caption, table, notes and sources."""
    missing = MISSING["md"]

    def line(cells: Iterable[str]) -> str:
        return "| " + " | ".join(c.replace("|", r"\|") for c in cells) + " |"

    n_values = len(table.header) - table.n_label
    lines = [f"**Table {table.number}.** {table.caption}", "", line(table.header)]
    lines.append("|" + "|".join(["---"] * table.n_label + ["---:"] * n_values) + "|")
    for group in table.groups:
        for row in group:
            lines.append(line([*row.label, *(v or missing for v in row.values)]))
    lines += ["", *(note.format(missing=missing) for note in table.notes)]
    sources = _sources(table)
    if sources:
        lines += ["", "Sources:", *(f"- {label}: `{text}`" for label, text in sources)]
    return "\n".join(lines) + "\n"


_TEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "Δ": r"$\Delta$",
    "–": "--",
}


def latex_escape(text: str) -> str:
    """Text safe inside a LaTeX table cell or caption."""
    return "".join(_TEX_SPECIAL.get(c, c) for c in text)


def _latex_value(value: str | None) -> str:
    """A value cell: missing as --, a negative gain with a real minus sign."""
    if value is None:
        return MISSING["latex"]
    return "$-$" + value[1:] if value.startswith("-") else value


def to_latex(table: Table) -> str:
    """The table as a booktabs LaTeX table; each row's source as a trailing comment."""

    def label_cell(i: int, text: str) -> str:
        cell = latex_escape(text)
        return re.sub(r"^(\d+)x(\d+)$", r"\1$\\times$\2", cell) if i == 1 else cell

    n_values = len(table.header) - table.n_label
    notes = " ".join(note.format(missing=MISSING["latex"]) for note in table.notes)
    header = [LATEX_HEADERS.get(h) or latex_escape(h) for h in table.header]
    lines = [
        f"% Table {table.number}, written by posematch-tables (needs \\usepackage{{booktabs}})",
        r"\begin{table}[t]",
        r"\centering",
        f"\\caption{{{latex_escape(table.caption)} {latex_escape(notes)}}}",
        f"\\label{{tab:posematch-{table.number}-{table.family}}}",
        f"\\begin{{tabular}}{{{'l' * table.n_label}{'r' * n_values}}}",
        r"\toprule",
        " & ".join(header) + r" \\",
    ]
    for group in table.groups:
        lines.append(r"\midrule")
        for row in group:
            cells = [label_cell(i, c) for i, c in enumerate(row.label)]
            cells += [_latex_value(v) for v in row.values]
            comment = f" % {row.result.run}: {row.result.source}" if row.result else ""
            lines.append(" & ".join(cells) + r" \\" + comment)
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


RENDER = {"md": (to_markdown, "md"), "latex": (to_latex, "tex")}


def write_tables(tables: dict[int, list[Table]], formats: Sequence[str], out: Path) -> list[Path]:
    """``tableN.md`` / ``tableN.tex`` under ``out``; the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for number, parts in tables.items():
        for fmt in formats:
            render, suffix = RENDER[fmt]
            path = out / f"table{number}.{suffix}"
            path.write_text("\n".join(render(t) for t in parts))
            written.append(path)
    return written
