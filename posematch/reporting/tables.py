"""The paper's tables from collected results: Tables 1-3 pair the MSE baseline with the matching
loss per backbone and input size, Tables 4-5 are the matching loss's ablations
(``loss.demanders``, ``loss.max_iters``). Rendering is ``posematch.reporting.render``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from posematch.evaluation.report import COCO_COLUMNS, MPII_COLUMNS
from posematch.reporting.results import (
    DEFAULT_DEMANDERS,
    DEFAULT_MAX_ITERS,
    MATCHING,
    MSE,
    Loss,
    Result,
    Setting,
    TablesError,
)

log = logging.getLogger("posematch.tables")

# The paper prints the mean PCKh last; paper_row puts it first.
MPII_TABLE_COLUMNS = (*(c for c in MPII_COLUMNS if c != "Mean"), "Mean")
COLUMNS = {"coco": COCO_COLUMNS, "mpii": MPII_TABLE_COLUMNS}
PRIMARY = {"coco": "AP", "mpii": "Mean"}  # the metric the ablation gains are given in
MODEL_LABELS = {
    "simplebaseline_r18": "SimpleBaseline-R18",
    "simplebaseline_r50": "SimpleBaseline-R50",
    "simplebaseline_r101": "SimpleBaseline-R101",
    "simplebaseline_r152": "SimpleBaseline-R152",
    "hrnet_w32": "HRNet-W32",
    "hrnet_w48": "HRNet-W48",
    "hrformer_small": "HRFormer-S",
    "hrformer_base": "HRFormer-B",
}
# The paper's rows, (model config, input (width, height)), in its order: conf/experiment/coco/*.yaml
# and conf/experiment/mpii/*.yaml (a test keeps the two in step).
EXPECTED = {
    "coco": [
        ("simplebaseline_r152", (288, 384)),
        ("hrnet_w32", (288, 384)),
        ("hrnet_w48", (288, 384)),
        ("hrformer_base", (288, 384)),
    ],
    "mpii": [
        ("simplebaseline_r152", (256, 256)),
        ("hrnet_w32", (256, 256)),
        ("hrnet_w48", (256, 256)),
    ],
}
NOTE = (
    "Each row: the run's metrics.json (posematch-eval) when it has one, else the last validation "
    "record of its metrics.jsonl. {missing} = no run. Gains are differences of the printed values."
)


@dataclass
class Row:
    """One table row: label cells, value cells (None = missing) and the result it shows."""

    label: list[str]
    values: list[str | None]
    result: Result | None = None


@dataclass
class Table:
    """A table before rendering: rows in groups (a rule between groups in LaTeX)."""

    number: int
    caption: str
    header: list[str]
    n_label: int
    groups: list[list[Row]]
    family: str
    notes: list[str] = field(default_factory=list)

    def has_results(self) -> bool:
        """Whether any row shows a run (a table of missing cells only is not worth printing)."""
        return any(row.result is not None for group in self.groups for row in group)


CellKey = tuple[str, str, Setting, Loss]


def pick_cells(results: Iterable[Result]) -> dict[CellKey, Result]:
    """One result per (split, family, setting, loss): numbers over none, metrics.json over
    metrics.jsonl, then the later run; a warning when two runs with numbers compete."""
    cells: dict[CellKey, Result] = {}
    for r in sorted(results, key=lambda r: (r.values is not None, r.rank, r.order)):
        key = (r.split, r.family, r.setting, r.loss)
        previous = cells.get(key)
        if previous is not None and previous.values is not None:
            log.warning(
                "%s and %s give the same cell: using %s (metrics.json over metrics.jsonl, then "
                "the run named later)",
                previous.run,
                r.run,
                r.run,
            )
        cells[key] = r
    return cells


def model_label(setting: Setting, family: str) -> str:
    """Paper name of the backbone, the config name otherwise; a data set other than the table's."""
    label = MODEL_LABELS.get(setting.model, setting.model)
    return label if setting.dataset == family else f"{label} ({setting.dataset})"


def size_label(size: tuple[int, int]) -> str:
    """Input size as the paper writes it: height x width."""
    return f"{size[1]}x{size[0]}"


def _setting_order(family: str) -> Callable[[Setting], tuple]:
    """Sort key: the paper's rows in its order, then the others by data set, model and size."""
    expected = [Setting(family, m, s) for m, s in EXPECTED[family]]

    def key(setting: Setting) -> tuple:
        index = expected.index(setting) if setting in expected else len(expected)
        return (index, setting.dataset, setting.model, setting.size[1], setting.size[0])

    return key


def _values(result: Result | None, columns: Sequence[str]) -> list[str | None]:
    """Printed values of a result in column order; all missing without one."""
    if result is None or result.values is None:
        return [None] * len(columns)
    return [result.values.get(c) for c in columns]


def gain(after: str | None, before: str | None) -> str | None:
    """Signed difference of two printed values ("+1.2"), None when one is missing."""
    if after is None or before is None:
        return None
    return f"{Decimal(after) - Decimal(before):+.1f}"


PAIRED = {
    1: ("val", "coco", "COCO val2017"),
    2: ("test-dev", "coco", "COCO test-dev2017"),
    3: ("val", "mpii", "MPII val"),
}


def data_title(title: str, family: str, split: str, datasets: Iterable[str]) -> str:
    """What data the rows of a paired table came from: the paper's data set (``title``) for its
    rows, and every other data set (the synthetic demo) by name, its rows marked with it."""
    others = sorted(set(datasets) - {family})
    if not others:
        return title
    marked = ", ".join(f"{d} data (rows marked ({d}), its {split} split)" for d in others)
    if family in set(datasets):
        return f"{title} and {marked}"
    return f"{marked[0].upper()}{marked[1:]}; no {title} run"


def mismatch(a: Result | None, b: Result | None, compared: Callable[[str], bool]) -> list[str]:
    """The facts (``budget.*``, ``loss.*``) two results with numbers differ in, but for the
    compared ones, each as ``key (a vs b)``; [] when either has no numbers."""
    if a is None or b is None or a.values is None or b.values is None:
        return []
    keys = sorted(k for k in set(a.facts) | set(b.facts) if not compared(k))
    return [
        f"{k} ({a.facts.get(k, 'not recorded')} vs {b.facts.get(k, 'not recorded')})"
        for k in keys
        if a.facts.get(k) != b.facts.get(k)
    ]


def check_pair(
    a: Result | None,
    b: Result | None,
    compared: Callable[[str], bool],
    where: str,
    accept_mixed: bool,
    notes: list[str],
) -> None:
    """TablesError naming the runs and the differing facts when ``a`` and ``b`` were not trained
    alike; with ``accept_mixed`` a warning and a note under the table instead."""
    differ = mismatch(a, b, compared)
    if not differ:
        return
    assert a is not None and b is not None
    text = f"{where}: {a.run} and {b.run} differ in {', '.join(differ)}"
    if not accept_mixed:
        raise TablesError(
            f"{text}; their numbers are not comparable (pass --accept-mixed to print them anyway, "
            "marked under the table)"
        )
    log.warning("%s (printed: --accept-mixed)", text)
    notes.append(f"Mixed budgets, accepted: {text}.")


# Each loss's own recipe in a paired table: tuned per loss on val (equal tuning, not equal values).
RECIPE = ("budget.activation", "budget.lr", "budget.schedule")


def _loss_fact(key: str) -> bool:
    """A paired table compares two recipes: the losses' options, the head that suits each and
    each one's tuned lr and schedule differ; the budget (epochs, steps, batch, processes,
    optimizer, warm-up) must not."""
    return key.startswith("loss.") or key in RECIPE


def paired_table(number: int, cells: dict[CellKey, Result], accept_mixed: bool = False) -> Table:
    """Table 1, 2 or 3: baseline, matching loss and gain per backbone and input size."""
    split, family, title = PAIRED[number]
    columns = COLUMNS[family]
    settings = {Setting(family, m, s) for m, s in EXPECTED[family]}
    # Only runs of the default losses make rows here; the other matching runs are ablations.
    settings |= {k[2] for k in cells if k[:2] == (split, family) and k[3] in (MSE, MATCHING)}
    groups = []
    notes = [NOTE]
    for setting in sorted(settings, key=_setting_order(family)):
        label = [model_label(setting, family), size_label(setting.size)]
        base = cells.get((split, family, setting, MSE))
        ours = cells.get((split, family, setting, MATCHING))
        where = f"Table {number}, {label[0]} {label[1]}, MSE vs matching"
        check_pair(base, ours, _loss_fact, where, accept_mixed, notes)
        gains = [
            gain(a, b) for a, b in zip(_values(ours, columns), _values(base, columns), strict=True)
        ]
        groups.append(
            [
                Row([*label, "MSE"], _values(base, columns), base),
                Row([*label, "Matching"], _values(ours, columns), ours),
                Row([*label, "Gain"], gains),
            ]
        )
    unit = "AP (%)" if family == "coco" else "PCKh@0.5 (%)"
    datasets = {r.result.setting.dataset for g in groups for r in g if r.result is not None}
    caption = (
        f"{data_title(title, family, split, datasets)}, {unit}: the MSE baseline, the matching loss "
        f"(sub-pixel demanders, {DEFAULT_MAX_ITERS} Sinkhorn iterations) and the gain "
        "(matching - baseline)."
    )
    if split == "test-dev":
        notes.append('Rows from posematch-eval metrics.json files on test-dev with "scored": true.')
    header = ["Backbone", "Input", "Loss", *columns]
    return Table(number, caption, header, 3, groups, family, notes)


ABLATIONS = {
    # number: (option, column title, fixed option, values always shown)
    4: ("demanders", "Demanders", ("max_iters", DEFAULT_MAX_ITERS), ("naive", DEFAULT_DEMANDERS)),
    5: ("max_iters", "Iterations", ("demanders", DEFAULT_DEMANDERS), (DEFAULT_MAX_ITERS,)),
}


def ablation_tables(
    number: int, cells: dict[CellKey, Result], accept_mixed: bool = False
) -> list[Table]:
    """Table 4 or 5: one table per metric family, rows per value of the option."""
    option, title, (fixed, fixed_value), shown = ABLATIONS[number]
    default = getattr(MATCHING, option)
    by_group: dict[tuple[str, Setting], dict[Any, Result]] = {}
    for (split, family, setting, loss), cell in cells.items():
        if split == "val" and loss.kind == "matching" and getattr(loss, fixed) == fixed_value:
            by_group.setdefault((family, setting), {})[getattr(loss, option)] = cell
    tables = []
    for family in ("coco", "mpii"):
        groups: list[list[Row]] = []
        notes: list[str] = []
        found = [s for (f, s), runs in by_group.items() if f == family and set(runs) - {default}]
        for setting in sorted(found, key=_setting_order(family)):
            runs = by_group[(family, setting)]
            reference = _values(runs.get(default), [PRIMARY[family]])[0]
            rows = []
            for value in _ablation_values(set(runs) | set(shown), shown):
                r = runs.get(value)
                where = f"Table {number}, {model_label(setting, family)}, loss.{option}={value}"
                check_pair(
                    runs.get(default), r, lambda k: k == f"loss.{option}", where, accept_mixed,
                    notes,
                )  # fmt: skip
                values = _values(r, COLUMNS[family])
                delta = gain(values[COLUMNS[family].index(PRIMARY[family])], reference)
                name = f"{value} (default)" if value == default else str(value)
                label = [model_label(setting, family), size_label(setting.size), name]
                rows.append(Row(label, [*values, delta], r))
            groups.append(rows)
        if groups:
            table = _ablation_table(number, family, groups, option, title, fixed, fixed_value)
            table.notes.extend(notes)
            tables.append(table)
    return tables or [_ablation_table(number, "coco", [], option, title, fixed, fixed_value)]


def _ablation_values(values: set[Any], shown: tuple[Any, ...]) -> list[Any]:
    """Row order: numbers ascending; names in the paper's order, then the others."""
    if all(isinstance(v, int) for v in values):
        return sorted(values)
    return sorted(values, key=lambda v: (shown.index(v) if v in shown else len(shown), str(v)))


def _ablation_table(
    number: int,
    family: str,
    groups: list[list[Row]],
    option: str,
    title: str,
    fixed: str,
    fixed_value: Any,
) -> Table:
    """The Table of an ablation for one metric family."""
    primary = PRIMARY[family]
    what = "demander formulation" if option == "demanders" else "Sinkhorn iterations"
    caption = (
        f"Matching loss, {what} (loss.{option}; loss.{fixed}={fixed_value}), validation split: "
        f"Δ{primary} = row - {getattr(MATCHING, option)} (default)."
    )
    notes = [NOTE]
    if not groups:
        notes.append(f"No matching-loss run with a loss.{option} other than the default.")
    header = ["Backbone", "Input", title, *COLUMNS[family], f"Δ{primary}"]
    return Table(number, caption, header, 3, groups, family, notes)


def build_tables(
    numbers: Iterable[int], results: list[Result], accept_mixed: bool = False
) -> dict[int, list[Table]]:
    """The requested tables from the collected results; TablesError when a table would compare
    runs trained differently in anything but the compared factor (``accept_mixed``: printed with
    a note instead)."""
    cells = pick_cells(results)
    for r in cells.values():
        if r.loss.kind == "matching" and not (
            r.loss.demanders == DEFAULT_DEMANDERS or r.loss.max_iters == DEFAULT_MAX_ITERS
        ):
            log.warning("%s: changes both loss.demanders and loss.max_iters: in no table", r.run)
    return {
        n: [paired_table(n, cells, accept_mixed)]
        if n in PAIRED
        else ablation_tables(n, cells, accept_mixed)
        for n in numbers
    }
