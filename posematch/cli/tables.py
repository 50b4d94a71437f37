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
``metrics.jsonl``, then the run named later wins (with a warning). Cells are compared only when
their runs were trained alike (``run.json``'s budget and loss options): a gain row needs the same
epochs, steps, batch, processes, optimizer and warm-up (each loss keeps its own tuned lr, schedule and
head); an ablation row must agree with the default row in everything but its option. Otherwise the
command stops naming both runs and the differing keys, unless ``--accept-mixed``. A cell no run gives is printed as
missing (``–`` in Markdown, ``--`` in LaTeX), never filled in; a run with no validation record is
missing with a warning. Values follow ``posematch.evaluation.report.paper_row`` (COCO fractions x 100,
one decimal; MPII already percent); gains are differences of the printed values, so they agree with
the table.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from posematch.reporting.render import RENDER, to_markdown, write_tables
from posematch.reporting.results import TablesError
from posematch.reporting.runs import collect, find_runs
from posematch.reporting.tables import build_tables


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="posematch-tables",
        description="Collect posematch-train / posematch-eval runs into the paper's tables.",
    )
    parser.add_argument("runs", nargs="+", help="run directories or folders holding runs (sweeps)")
    parser.add_argument(
        "--table",
        nargs="+",
        type=int,
        choices=range(1, 6),
        default=[1, 2, 3, 4, 5],
        help="tables to make: 1 COCO val, 2 COCO test-dev, 3 MPII val (MSE vs matching), "
        "4 demanders and 5 Sinkhorn iterations (ablations); default all",
    )
    parser.add_argument(
        "--format",
        nargs="+",
        choices=sorted(RENDER),
        default=["md", "latex"],
        help="files written under --out (Markdown is also printed); default md latex",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("results/tables"), help="folder of the table files"
    )
    parser.add_argument(
        "--accept-mixed",
        action="store_true",
        help="print cells whose runs were trained differently in more than the compared factor "
        "(epochs, steps, batch, warm-up; for ablations also lr, schedule and loss options), with "
        "a note; by default such a table is refused, naming the runs and the differing keys",
    )
    return parser.parse_args(argv)


# Why a table has nothing to show.
EMPTY = {
    1: "no run on COCO val (or other data scored like it) among the runs given",
    2: "no posematch-eval run on COCO test-dev among the runs given",
    3: "no run on MPII val among the runs given",
    4: "no matching-loss run with a loss.demanders other than the default",
    5: "no matching-loss run with a loss.max_iters other than the default",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``posematch-tables``; 0 on success, 1 on an unreadable run."""
    args = parse_args(argv)
    logging.basicConfig(format="posematch-tables: %(levelname)s: %(message)s")
    try:
        runs = collect(find_runs(args.runs))
        tables = build_tables(dict.fromkeys(args.table), runs, args.accept_mixed)
    except TablesError as err:
        print(f"posematch-tables: error: {err}", file=sys.stderr)
        return 1
    shown = {n: [t for t in parts if t.has_results()] for n, parts in tables.items()}
    for number, parts in shown.items():
        if not parts:
            print(
                f"posematch-tables: Table {number}: {EMPTY[number]}; not printed", file=sys.stderr
            )
    shown = {n: parts for n, parts in shown.items() if parts}
    print("\n".join(to_markdown(t) for parts in shown.values() for t in parts), end="")
    for path in write_tables(shown, args.format, args.out):
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
