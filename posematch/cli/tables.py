"""``posematch-tables``: collect runs into the tables of Qu et al., NeurIPS 2022, as Markdown and LaTeX.

    posematch-tables RUN_OR_SWEEP_DIR... [--table 1 2 3 4 5] [--format md latex] [--out results/tables]

Prints the Markdown tables and writes ``tableN.md`` / ``tableN.tex`` under ``--out``.

- Table 1: COCO val2017, Table 2: COCO test-dev2017 (AP AP50 AP75 APM APL AR, percent), Table 3: MPII
  val PCKh@0.5 (Hea Sho Elb Wri Hip Kne Ank Mean). Per backbone and input size: the MSE-baseline row,
  the matching-loss row (the default loss: sub-pixel demanders, 1000 Sinkhorn iterations) and the gain
  row (matching - baseline). The paper's rows are always there; other models, sizes or data sets (the
  synthetic demo) get rows of their own.
- Table 4 (``loss.demanders``, naive vs subpixel, at 1000 iterations) and Table 5 (``loss.max_iters``,
  sub-pixel demanders): ablations of matching-loss runs on the validation split, one row per value,
  with the gain in AP (COCO) or Mean (MPII) over the default row. A setting appears once a run varies
  that option.

Inputs: each argument is a run directory (a ``posematch-train`` run or a ``posematch-eval`` output
folder: it has ``run.json``, or ``.hydra/config.yaml`` for runs made before ``run.json``) or a folder
searched recursively for them (a Hydra multirun sweep, ``outputs/train``). A run's data set, split,
boxes, model, input size and loss are read from its ``run.json`` (``posematch.runinfo``); only older
runs without one fall back on reading their Hydra config (and, for an evaluation, the config of its
checkpoint's run or the experiment's name). The numbers of a run, in this order:

1. ``metrics.json`` in the run directory (``posematch-eval ... output_dir=RUN``: the protocol
   evaluation, detection boxes) when it is scored;
2. otherwise the last record of ``metrics.jsonl`` holding ``val/*`` metrics (the trainer's last
   validation).

A ``metrics.json`` whose data config reads test-dev images or annotations goes to Table 2 only, and
only when it is scored: paste the evaluation server's stats (fractions, as pycocotools prints them)
into it and set ``"scored": true``. Which loss trained the model of a ``posematch-eval`` folder is read
from the run directory of its checkpoint. When two runs give the same cell, a ``metrics.json`` beats a
``metrics.jsonl``, then the run named later wins (with a warning). A cell no run gives is printed as
missing (``–`` in Markdown, ``--`` in LaTeX), never filled in; a run with no validation record is
missing with a warning. Values follow ``posematch.evaluation.report.paper_row`` (COCO fractions x 100,
one decimal; MPII already percent); gains are differences of the printed values, so they agree with
the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from posematch import runinfo
from posematch.evaluation.report import COCO_COLUMNS, MPII_COLUMNS, paper_row
from posematch.evaluation.report import MISSING as NOT_SCORED
from posematch.runinfo import RunInfo

log = logging.getLogger("posematch.tables")

MISSING = {"md": "–", "latex": "--"}
DEFAULT_DEMANDERS = "subpixel"  # conf/loss/sinkhorn.yaml
DEFAULT_MAX_ITERS = 1000
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
# Words in data.val.ann_file / image_dir that mark the COCO test-dev split (image_info_test-dev2017.json,
# test2017/ images).
TEST_DEV_MARKS = ("test-dev", "testdev", "test_dev", "test2017")
NOTE = (
    "Each row: the run's metrics.json (posematch-eval) when it has one, else the last validation "
    "record of its metrics.jsonl. {missing} = no run. Gains are differences of the printed values."
)
LATEX_HEADERS = {
    "AP50": "AP$_{50}$",
    "AP75": "AP$_{75}$",
    "APM": "AP$_{M}$",
    "APL": "AP$_{L}$",
    "ΔAP": r"$\Delta$AP",
    "ΔMean": r"$\Delta$Mean",
}


class TablesError(Exception):
    """A run directory or metrics file that cannot be read; the message names the path."""


@dataclass(frozen=True)
class Setting:
    """What a group of rows is about: data set name, model config name, input (width, height) px."""

    dataset: str
    model: str
    size: tuple[int, int]


@dataclass(frozen=True)
class Loss:
    """The loss that trained a model: ``mse``, or ``matching`` with its demanders and iterations."""

    kind: str
    demanders: str | None = None
    max_iters: int | None = None


MSE = Loss("mse")
MATCHING = Loss("matching", DEFAULT_DEMANDERS, DEFAULT_MAX_ITERS)


@dataclass
class Result:
    """The numbers one run gives one table cell group.

    values: column -> printed value (``paper_row``), None when the run has no record. rank: 2 for
    ``metrics.json``, 1 for ``metrics.jsonl``, 0 for none. order: position among the runs found.
    """

    run: Path
    setting: Setting
    loss: Loss
    split: str  # "val" | "test-dev"
    family: str  # "coco" | "mpii": which columns
    values: dict[str, str | None] | None
    source: str
    rank: int
    order: int


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


# ---------------------------------------------------------------------------------------- reading


def is_run(path: Path) -> bool:
    """A run directory holds a ``run.json`` or the composed config Hydra wrote (older runs)."""
    return runinfo.exists(path) or (path / ".hydra" / "config.yaml").is_file()


def _natural(path: Path) -> list[Any]:
    """Sort key that puts Hydra's job folder 2_... before 10_..."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def _runs_below(folder: Path) -> list[Path]:
    """Run directories under ``folder`` (not descending into runs), in natural order."""
    found: list[Path] = []
    children = [c for c in folder.iterdir() if c.is_dir() and not c.name.startswith(".")]
    for child in sorted(children, key=_natural):
        if is_run(child):
            found.append(child)
        elif not child.is_symlink():  # a linked folder could loop back on itself
            found.extend(_runs_below(child))
    return found


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Every run directory named or found below the given folders, in command-line order."""
    runs: list[Path] = []
    for arg in paths:
        path = Path(arg)
        if not path.is_dir():
            raise TablesError(f"{path}: no such directory")
        found = [path] if is_run(path) else _runs_below(path)
        if not found:
            raise TablesError(
                f"{path}: not a run directory (no .hydra/config.yaml) and no run directories below it"
            )
        runs.extend(r for r in found if r not in runs)
    return runs


def _select(cfg: DictConfig, key: str, where: Path) -> Any:
    """``cfg.<key>`` or None when absent; an interpolation that cannot resolve names the file."""
    try:
        value = OmegaConf.select(cfg, key, default=None)
    except Exception as err:  # omegaconf raises several resolution errors
        raise TablesError(f"{where}: cannot read {key} ({err})") from err
    return OmegaConf.to_container(value, resolve=False) if OmegaConf.is_config(value) else value


def _load_yaml(path: Path) -> DictConfig:
    """A YAML file as a DictConfig; a broken file is named."""
    try:
        cfg = OmegaConf.load(path)
    except Exception as err:  # yaml's parser errors and OSError alike
        raise TablesError(f"{path}: not a readable YAML config ({err})") from err
    if not isinstance(cfg, DictConfig):
        raise TablesError(f"{path}: expected a mapping at the top level")
    return cfg


def read_choices(run: Path) -> dict[str, Any]:
    """``hydra.runtime.choices`` of the run (which config of each group was picked)."""
    path = run / ".hydra" / "hydra.yaml"
    if not path.is_file():
        raise TablesError(f"{path}: missing (its hydra.runtime.choices.model names the model)")
    choices = _select(_load_yaml(path), "hydra.runtime.choices", path)
    return choices if isinstance(choices, dict) else {}


def read_setting(run: Path, cfg: DictConfig, choices: dict[str, Any]) -> Setting:
    """Data set, model config name and input size of a run."""
    where = run / ".hydra" / "config.yaml"
    model = choices.get("model")
    dataset = _select(cfg, "data.name", where)
    size = _select(cfg, "data.input_size", where)
    if not model:
        raise TablesError(f"{run / '.hydra' / 'hydra.yaml'}: no hydra.runtime.choices.model")
    if not dataset:
        raise TablesError(f"{where}: no data.name")
    if not (isinstance(size, list) and len(size) == 2):
        raise TablesError(f"{where}: data.input_size={size!r}, expected [width, height]")
    return Setting(str(dataset), str(model), (int(size[0]), int(size[1])))


def _loss_from(cfg: DictConfig, where: Path) -> Loss | None:
    """The loss of a training config, None when it has no ``loss`` or an unknown one."""
    target = _select(cfg, "loss._target_", where)
    if target is None:
        return None
    name = str(target).rsplit(".", 1)[-1]
    if name == "JointsMSELoss":
        return MSE
    if name == "SinkhornMatchingLoss":
        demanders = _select(cfg, "loss.demanders", where) or DEFAULT_DEMANDERS
        max_iters = _select(cfg, "loss.max_iters", where) or DEFAULT_MAX_ITERS
        return Loss("matching", str(demanders), int(max_iters))
    log.warning("%s: loss._target_=%s is neither the matching loss nor MSE: skipped", where, target)
    return None


def read_loss(run: Path, cfg: DictConfig, choices: dict, checkpoint: Any) -> Loss | None:
    """The loss that trained the run's model.

    A training run's own config says; a ``posematch-eval`` folder has no loss, so the saved config
    of its checkpoint's run directory says (a relative checkpoint path is taken from the current
    directory, where posematch-eval ran), else an experiment name ending in _sinkhorn / _mse.
    """
    if _select(cfg, "loss", run) is not None:
        return _loss_from(cfg, run / ".hydra" / "config.yaml")
    loss = None
    source = Path(str(checkpoint)).parent if checkpoint else None
    if source is not None and is_run(source):
        loss = _loss_from(_load_yaml(source / ".hydra" / "config.yaml"), source)
    experiment = str(choices.get("experiment") or "")
    if loss is None and experiment.endswith("_sinkhorn"):
        loss = MATCHING
    if loss is None and experiment.endswith("_mse"):
        loss = MSE
    return loss


def read_metrics_json(path: Path) -> dict[str, Any]:
    """The flat metrics a ``posematch-eval`` run wrote."""
    try:
        metrics = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TablesError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(metrics, dict):
        raise TablesError(f"{path}: expected a JSON object of metrics")
    return metrics


def last_validation(path: Path) -> tuple[dict[str, Any], int | None, int] | None:
    """The ``val/*`` metrics of the last record that has them, its epoch and line; None if none."""
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError as err:
        raise TablesError(f"{path}: not a text file ({err})") from err
    last = None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise TablesError(f"{path}:{n}: not a JSON record ({err.msg})") from err
        if not isinstance(record, dict):
            raise TablesError(f"{path}:{n}: expected a JSON object per line")
        val = {k.removeprefix("val/"): v for k, v in record.items() if k.startswith("val/")}
        if val:
            last = (val, record.get("epoch"), n)
    return last


def printed_values(metrics: dict[str, Any], where: str) -> tuple[str, dict[str, str | None]]:
    """(family, column -> printed value) through ``paper_row``; non-finite values are missing."""
    try:
        header, values = paper_row(metrics)
    except (ValueError, TypeError) as err:
        raise TablesError(f"{where}: {err}") from err
    family = "coco" if tuple(header) == COCO_COLUMNS else "mpii"
    return family, {
        h: None if v == NOT_SCORED or not math.isfinite(float(v)) else v
        for h, v in zip(header, values, strict=True)
    }


def is_test_dev(data: Any) -> bool:
    """Whether a data config evaluates on COCO test-dev (its val annotations or images say so)."""
    val = data.get("val") if isinstance(data, dict) else None
    if not isinstance(val, dict):
        return False
    text = " ".join(str(val.get(key, "")) for key in ("ann_file", "image_dir")).lower()
    return any(mark in text for mark in TEST_DEV_MARKS)


def _boxes(data: Any) -> str:
    """ ", det boxes" / ", gt boxes" for a COCO-style data config; nothing for MPII."""
    boxes = data.get("boxes") if isinstance(data, dict) else None
    return f", {boxes} boxes" if isinstance(boxes, str) else ""


def _loss_of(info: RunInfo) -> Loss | None:
    """The table's loss of a ``run.json`` loss entry."""
    if info.loss is None:
        return None
    if info.loss["kind"] == "mse":
        return MSE
    return Loss("matching", str(info.loss["demanders"]), int(info.loss["max_iters"]))


def read_run(run: Path, order: int) -> list[Result]:
    """The results of one run directory: its validation numbers and any test-dev numbers."""
    if runinfo.exists(run):
        return read_recorded_run(run, order)
    cfg = _load_yaml(run / ".hydra" / "config.yaml")
    choices = read_choices(run)
    path = run / "metrics.json"
    evaluation = read_metrics_json(path) if path.is_file() else None
    checkpoint = (evaluation or {}).get("checkpoint") or _select(cfg, "checkpoint", run)
    loss = read_loss(run, cfg, choices, checkpoint)
    if loss is None:
        if _select(cfg, "loss", run) is None:  # an unknown loss was already reported
            log.warning(
                "%s: cannot tell which loss trained this model (no loss in its config, nor in the "
                "config of its checkpoint's run directory): skipped",
                run,
            )
        return []
    setting = read_setting(run, cfg, choices)
    own_data = _select(cfg, "data", run) or {}
    results: list[Result] = []
    val: Result | None = None

    def result(split: str, family: str, values: Any, source: str, rank: int) -> Result:
        return Result(run, setting, loss, split, family, values, source, rank, order)

    if evaluation is not None:
        data = evaluation.get("config") if isinstance(evaluation.get("config"), dict) else own_data
        split = "test-dev" if is_test_dev(data) else "val"
        if evaluation.get("scored", True) is False:
            # posematch-eval cannot score test-dev; the server's stats are pasted in by hand.
            log.warning('%s: "scored": false: not used (%s)', path, split)
            if split == "test-dev":
                family = "mpii" if setting.dataset == "mpii" else "coco"
                results.append(result(split, family, None, "metrics.json, not scored", 0))
        else:
            family, values = printed_values(evaluation, str(path))
            results.append(result(split, family, values, f"metrics.json{_boxes(data)}", 2))
            val = results[-1] if split == "val" else None
    # A posematch-eval folder (its config has no loss) has no training validation to fall back on.
    if val is None and _select(cfg, "loss", run) is not None:
        jsonl = run / "metrics.jsonl"
        record = last_validation(jsonl) if jsonl.is_file() else None
        if record is None:
            log.warning("%s: no validation record (metrics.json, val/* in metrics.jsonl)", run)
            family = "mpii" if setting.dataset == "mpii" else "coco"
            results.append(result("val", family, None, "no validation record", 0))
        else:
            metrics, epoch, line = record
            family, values = printed_values(metrics, f"{jsonl}:{line}")
            source = f"metrics.jsonl, epoch {epoch}{_boxes(own_data)}"
            results.append(result("val", family, values, source, 1))
    return results


def read_recorded_run(run: Path, order: int) -> list[Result]:
    """The results of a run that has a ``run.json``: every fact from it, no guessing."""
    try:
        info = RunInfo.read(run)
    except ValueError as err:
        raise TablesError(str(err)) from err
    loss = _loss_of(info)
    if loss is None:
        log.warning("%s: run.json does not say which loss trained this model: skipped", run)
        return []
    if info.split == "test":
        log.info("%s: a held-out test split, in no paper table: skipped", run)
        return []
    setting = Setting(info.dataset, info.model, info.input_size)
    family = "mpii" if info.dataset == "mpii" else "coco"
    boxes = f", {info.boxes} boxes" if info.boxes else ""

    def result(values: Any, source: str, rank: int) -> Result:
        return Result(run, setting, loss, info.split, family, values, source, rank, order)

    path = run / "metrics.json"
    if info.kind == "eval":
        if not path.is_file():
            log.warning("%s: an evaluation without metrics.json", run)
            return [result(None, "no metrics.json", 0)]
        evaluation = read_metrics_json(path)
        if evaluation.get("scored", True) is False:
            log.warning('%s: "scored": false: not used (%s)', path, info.split)
            return [result(None, "metrics.json, not scored", 0)] if info.split == "test-dev" else []
        family, values = printed_values(evaluation, str(path))
        return [result(values, f"metrics.json{boxes}", 2)]
    jsonl = run / "metrics.jsonl"
    record = last_validation(jsonl) if jsonl.is_file() else None
    if record is None:
        log.warning("%s: no validation record (metrics.json, val/* in metrics.jsonl)", run)
        return [result(None, "no validation record", 0)]
    metrics, epoch, line = record
    family, values = printed_values(metrics, f"{jsonl}:{line}")
    return [result(values, f"metrics.jsonl, epoch {epoch}{boxes}", 1)]


def collect(runs: Sequence[Path]) -> list[Result]:
    """The results of all runs, in order."""
    return [r for order, run in enumerate(runs) for r in read_run(run, order)]


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


# ----------------------------------------------------------------------------------------- tables


def model_label(setting: Setting, family: str) -> str:
    """Paper name of the backbone, the config name otherwise; a data set other than the table's."""
    label = MODEL_LABELS.get(setting.model, setting.model)
    return label if setting.dataset == family else f"{label} ({setting.dataset})"


def size_label(size: tuple[int, int]) -> str:
    """Input size as the paper writes it: height x width."""
    return f"{size[1]}x{size[0]}"


def _setting_order(family: str):
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
    3: ("val", "mpii", "MPII val, PCKh@0.5"),
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


def paired_table(number: int, cells: dict[CellKey, Result]) -> Table:
    """Table 1, 2 or 3: baseline, matching loss and gain per backbone and input size."""
    split, family, title = PAIRED[number]
    columns = COLUMNS[family]
    settings = {Setting(family, m, s) for m, s in EXPECTED[family]}
    # Only runs of the default losses make rows here; the other matching runs are ablations.
    settings |= {k[2] for k in cells if k[:2] == (split, family) and k[3] in (MSE, MATCHING)}
    groups = []
    for setting in sorted(settings, key=_setting_order(family)):
        label = [model_label(setting, family), size_label(setting.size)]
        base = cells.get((split, family, setting, MSE))
        ours = cells.get((split, family, setting, MATCHING))
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
    notes = [NOTE]
    if split == "test-dev":
        notes.append('Rows from posematch-eval metrics.json files on test-dev with "scored": true.')
    header = ["Backbone", "Input", "Loss", *columns]
    return Table(number, caption, header, 3, groups, family, notes)


ABLATIONS = {
    # number: (option, column title, fixed option, values always shown)
    4: ("demanders", "Demanders", ("max_iters", DEFAULT_MAX_ITERS), ("naive", DEFAULT_DEMANDERS)),
    5: ("max_iters", "Iterations", ("demanders", DEFAULT_DEMANDERS), (DEFAULT_MAX_ITERS,)),
}


def ablation_tables(number: int, cells: dict[CellKey, Result]) -> list[Table]:
    """Table 4 or 5: one table per metric family, rows per value of the option."""
    option, title, (fixed, fixed_value), shown = ABLATIONS[number]
    default = getattr(MATCHING, option)
    by_group: dict[tuple[str, Setting], dict[Any, Result]] = {}
    for (split, family, setting, loss), r in cells.items():
        if split == "val" and loss.kind == "matching" and getattr(loss, fixed) == fixed_value:
            by_group.setdefault((family, setting), {})[getattr(loss, option)] = r
    tables = []
    for family in ("coco", "mpii"):
        groups = []
        found = [s for (f, s), runs in by_group.items() if f == family and set(runs) - {default}]
        for setting in sorted(found, key=_setting_order(family)):
            runs = by_group[(family, setting)]
            reference = _values(runs.get(default), [PRIMARY[family]])[0]
            rows = []
            for value in _ablation_values(set(runs) | set(shown), shown):
                r = runs.get(value)
                values = _values(r, COLUMNS[family])
                delta = gain(values[COLUMNS[family].index(PRIMARY[family])], reference)
                name = f"{value} (default)" if value == default else str(value)
                label = [model_label(setting, family), size_label(setting.size), name]
                rows.append(Row(label, [*values, delta], r))
            groups.append(rows)
        if groups:
            tables.append(
                _ablation_table(number, family, groups, option, title, fixed, fixed_value)
            )
    return tables or [_ablation_table(number, "coco", [], option, title, fixed, fixed_value)]


def _ablation_values(values: set[Any], shown: tuple[Any, ...]) -> list[Any]:
    """Row order: numbers ascending; names in the paper's order, then the others."""
    if all(isinstance(v, int) for v in values):
        return sorted(values)
    return sorted(values, key=lambda v: (shown.index(v) if v in shown else len(shown), str(v)))


def _ablation_table(number, family, groups, option, title, fixed, fixed_value) -> Table:
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


def build_tables(numbers: Iterable[int], results: list[Result]) -> dict[int, list[Table]]:
    """The requested tables from the collected results."""
    cells = pick_cells(results)
    for r in cells.values():
        if r.loss.kind == "matching" and not (
            r.loss.demanders == DEFAULT_DEMANDERS or r.loss.max_iters == DEFAULT_MAX_ITERS
        ):
            log.warning("%s: changes both loss.demanders and loss.max_iters: in no table", r.run)
    return {
        n: [paired_table(n, cells)] if n in PAIRED else ablation_tables(n, cells) for n in numbers
    }


# -------------------------------------------------------------------------------------- rendering


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


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="posematch-tables",
        description="Collect posematch-train / posematch-eval runs into the paper's tables.",
    )
    parser.add_argument("runs", nargs="+", help="run directories or folders holding runs (sweeps)")
    parser.add_argument(
        "--table", nargs="+", type=int, choices=range(1, 6), default=[1, 2, 3, 4, 5]
    )
    parser.add_argument("--format", nargs="+", choices=sorted(RENDER), default=["md", "latex"])
    parser.add_argument("--out", type=Path, default=Path("results/tables"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``posematch-tables``; 0 on success, 1 on an unreadable run."""
    args = parse_args(argv)
    logging.basicConfig(format="posematch-tables: %(levelname)s: %(message)s")
    try:
        tables = build_tables(dict.fromkeys(args.table), collect(find_runs(args.runs)))
    except TablesError as err:
        print(f"posematch-tables: error: {err}", file=sys.stderr)
        return 1
    print("\n".join(to_markdown(t) for parts in tables.values() for t in parts), end="")
    for path in write_tables(tables, args.format, args.out):
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
