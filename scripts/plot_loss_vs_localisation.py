"""Training heatmap loss against localisation quality (val AP), epoch by epoch, for one or more runs.

The analysis of Sec. 4 of Qu et al., *Heatmap Distribution Matching for Human Pose Estimation*,
NeurIPS 2022, as a tool: does the training loss fall as the keypoints improve? (The paper argues a
lower MSE loss need not mean better localisation, while the matching loss tracks it.)

    python scripts/plot_loss_vs_localisation.py --runs outputs/train/sinkhorn_run outputs/train/mse_run \\
        [--metric val/AP] [--loss-key train_loss] [--labels matching MSE] \\
        [--out results/loss_vs_localisation.png]

Reads each run's ``metrics.jsonl`` (one JSON object per epoch, written by ``posematch-train``:
``epoch``, ``train_loss``, ... and ``val/AP``, ``val/AP50``, ... on validation epochs). A ``--runs``
entry is a run directory or a ``metrics.jsonl`` file. Should an epoch appear twice (a resumed run),
its last record counts.

Left panel: per run, the metric against the training loss for the epochs that have both, one line
per run through its epochs, markers coloured by epoch. Right panel: both against epoch, the loss
(solid, left axis) and the metric (dashed with markers, right axis). Losses of different kinds
(Sinkhorn transport cost in heatmap pixels, MSE of heatmap values) have different scales, so each
run's loss is divided by its value at its first recorded epoch (1.0 there), as the axis labels say.

Prints, per run, a table (epoch, loss, metric) and the Spearman rank correlation between the loss and
the metric over those epochs (``scipy.stats.spearmanr``; n/a below 3 epochs or for a constant
series). A run with no record of the metric (validation never ran) is named on stderr and left out:
the figure is still written and the exit status is 1; it is 2 when no run is left.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator
from scipy.stats import spearmanr


class ScriptError(RuntimeError):
    """A user error; main() prints it and exits 2."""


@dataclass
class Curve:
    """One run's numbers. ``epochs``/``loss``: every epoch with the loss; ``val_*``: epochs with
    both the loss and the metric; losses are raw (not normalised)."""

    label: str
    path: Path
    epochs: np.ndarray
    loss: np.ndarray
    val_epochs: np.ndarray
    val_loss: np.ndarray
    val_metric: np.ndarray

    @property
    def first_loss(self) -> float:
        return float(self.loss[0])


def metrics_file(entry: str) -> Path:
    path = Path(entry)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise ScriptError(f"--runs {entry}: {path} not found (is it a posematch-train run?)")
    return path


def run_label(path: Path) -> str:
    """The run folder's name, with its loss class when a saved config sits beside the metrics."""
    run_dir = path.parent
    config = run_dir / ".hydra" / "config.yaml"
    if config.is_file():
        from omegaconf import OmegaConf

        target = OmegaConf.load(config).get("loss", {}).get("_target_")
        if target:
            return f"{run_dir.name} ({str(target).rsplit('.', 1)[-1]})"
    return run_dir.name


def read_records(path: Path) -> dict[int, dict]:
    """Records by epoch (the last one wins)."""
    records: dict[int, dict] = {}
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            epoch = int(record["epoch"])
        except (ValueError, KeyError, TypeError) as err:
            raise ScriptError(f"{path}:{n}: not a metrics record ({err})") from err
        records[epoch] = record
    if not records:
        raise ScriptError(f"{path}: no records")
    return records


def _number(value: object) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def load_curve(entry: str, label: str | None, loss_key: str, metric: str) -> Curve:
    """A run's curve; ScriptError naming the run when it has no loss or no metric record."""
    path = metrics_file(entry)
    records = read_records(path)
    epochs, loss, val = [], [], []
    for epoch in sorted(records):
        value = _number(records[epoch].get(loss_key))
        if value is None:
            continue
        epochs.append(epoch)
        loss.append(value)
        m = _number(records[epoch].get(metric))
        if m is not None:
            val.append((epoch, value, m))
    if not epochs:
        raise ScriptError(f"{path.parent}: no epoch of {path} has a finite {loss_key!r}")
    if not val:
        seen = sorted({k for r in records.values() for k in r if k.startswith("val/")})
        keys = f"validation keys present: {', '.join(seen)}" if seen else "no val/ keys at all"
        raise ScriptError(
            f"{path.parent}: no epoch has both {loss_key!r} and {metric!r} (was validation run? "
            f"{keys})"
        )
    if loss[0] == 0:
        raise ScriptError(f"{path.parent}: {loss_key} of epoch {epochs[0]} is 0; cannot normalise")
    v = np.array(val, dtype=np.float64)
    return Curve(
        label or run_label(path), path, np.array(epochs), np.array(loss, dtype=np.float64),
        v[:, 0].astype(int), v[:, 1], v[:, 2],
    )  # fmt: skip


def spearman(loss: np.ndarray, metric: np.ndarray) -> tuple[float | None, str]:
    """Spearman's rho of loss against metric, or None with the reason."""
    if len(loss) < 3:
        return None, f"n/a (n={len(loss)} < 3)"
    if np.ptp(loss) == 0 or np.ptp(metric) == 0:
        return None, f"n/a (constant series, n={len(loss)})"
    rho = float(spearmanr(loss, metric).statistic)
    return rho, f"{rho:+.3f} (n={len(loss)})"


def table(curve: Curve, loss_key: str, metric: str) -> str:
    lines = [f"{curve.label}  [{curve.path}]",
             f"{'epoch':>6}  {loss_key:>12}  {'/ first':>8}  {metric:>10}"]  # fmt: skip
    for e, lo, m in zip(curve.val_epochs, curve.val_loss, curve.val_metric, strict=True):
        lines.append(f"{e:>6d}  {lo:>12.6g}  {lo / curve.first_loss:>8.4f}  {m:>10.4f}")
    _, text = spearman(curve.val_loss, curve.val_metric)
    lines.append(f"Spearman rho({loss_key}, {metric}) = {text}")
    return "\n".join(lines)


def percent_scale(curves: list[Curve]) -> float:
    """100 when every metric value is a fraction (AP, AR, PCKh as the evaluators give them), so
    the figure reads in percent like the tables; else 1 (a metric in other units)."""
    values = np.concatenate([c.val_metric for c in curves])
    return 100.0 if values.size and ((values >= 0) & (values <= 1)).all() else 1.0


def plot(curves: list[Curve], loss_key: str, metric: str) -> plt.Figure:
    scale = percent_scale(curves)
    shown = f"{metric} (%)" if scale == 100 else metric
    curves = [dataclasses.replace(c, val_metric=c.val_metric * scale) for c in curves]
    fig, (ax, ax_loss) = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained")
    ax_metric = ax_loss.twinx()
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = "osD^v<>p*h"
    first = min(int(c.val_epochs.min()) for c in curves)
    last = max(int(c.epochs.max()) for c in curves)
    norm = plt.Normalize(first, max(last, first + 1))
    scatter = None
    for i, c in enumerate(curves):
        colour, marker = colours[i % len(colours)], markers[i % len(markers)]
        x = c.val_loss / c.first_loss
        _, text = spearman(c.val_loss, c.val_metric)
        ax.plot(x, c.val_metric, "-", color=colour, lw=1.2, alpha=0.7,
                label=f"{c.label}: Spearman {text}")  # fmt: skip
        scatter = ax.scatter(x, c.val_metric, c=c.val_epochs, cmap="viridis", norm=norm,
                             marker=marker, edgecolors=colour, linewidths=1.2, s=45, zorder=3)  # fmt: skip
        for e, xe, ye in zip(c.val_epochs, x, c.val_metric, strict=True):
            ax.annotate(str(e), (xe, ye), xytext=(4, 3), textcoords="offset points", fontsize=7)
        ax_loss.plot(c.epochs, c.loss / c.first_loss, "-", color=colour, label=f"{c.label}: loss")
        ax_metric.plot(c.val_epochs, c.val_metric, "--", marker=marker, color=colour,
                       label=f"{c.label}: {shown}")  # fmt: skip
    ax.set_xlabel(f"{loss_key} / its first-epoch value (per run)")
    ax.set_ylabel(shown)
    ax.set_title(f"{metric} against training loss (numbers: epoch)")
    ax.legend(fontsize=7, loc="best")
    bar = fig.colorbar(scatter, ax=ax, label="epoch")
    bar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel(f"{loss_key} / its first-epoch value (solid)")
    ax_metric.set_ylabel(f"{shown} (dashed)")
    ax_loss.set_title("against epoch")
    handles = ax_loss.get_legend_handles_labels()
    more = ax_metric.get_legend_handles_labels()
    ax_loss.legend(handles[0] + more[0], handles[1] + more[1], fontsize=7, ncol=2,
                   loc="upper center", bbox_to_anchor=(0.5, -0.12))  # fmt: skip
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, metavar="RUN_DIR",
                        help="run directories or metrics.jsonl files")  # fmt: skip
    parser.add_argument(
        "--metric", default="val/AP", help="localisation metric key (higher = better)"
    )
    parser.add_argument("--loss-key", default="train_loss", help="loss key of metrics.jsonl")
    parser.add_argument("--labels", nargs="+", default=None, help="one legend label per run")
    parser.add_argument("--out", default="results/loss_vs_localisation.png", help="PNG to write")
    args = parser.parse_args(argv)
    if args.labels is not None and len(args.labels) != len(args.runs):
        print(f"plot_loss_vs_localisation: error: --labels: {len(args.labels)} labels for "
              f"{len(args.runs)} runs", file=sys.stderr)  # fmt: skip
        return 2
    labels = args.labels or [None] * len(args.runs)
    curves, failed = [], []
    for entry, label in zip(args.runs, labels, strict=True):
        try:
            curves.append(load_curve(entry, label, args.loss_key, args.metric))
        except ScriptError as err:
            print(f"plot_loss_vs_localisation: skipping {entry}: {err}", file=sys.stderr)
            failed.append(entry)
    if not curves:
        print(f"plot_loss_vs_localisation: error: nothing to plot ({len(failed)} runs skipped)",
              file=sys.stderr)  # fmt: skip
        return 2
    for c in curves:
        print(table(c, args.loss_key, args.metric))
        print()
    fig = plot(curves, args.loss_key, args.metric)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    plt.close(fig)
    print(f"wrote {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
