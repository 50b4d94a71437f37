"""The main job on the embedded synthetic data: matching loss vs Gaussian-MSE baseline (``make demo``).

    python scripts/demo.py [--data data/synthetic] [--runs runs/demo] [--out results] [overrides ...]

1. Writes the synthetic COCO-format dataset (``posematch.synthetic``: train, val and the
   held-out test split, each its own draw) when it is missing.
2. Trains the same small model twice with ``posematch-train`` -- ``experiment=demo/synthetic_sinkhorn``
   (the matching loss, the recipe that ``scripts/study.py`` selected) and
   ``experiment=demo/synthetic_mse`` (the baseline, its own selected lr) -- with the same seed,
   data, augmentation and number of steps. Each run validates every epoch with pycocotools'
   COCOeval (OKS-AP on the synthetic val split, ground-truth boxes, flip test), so its
   ``metrics.jsonl`` holds the loss, the AP and the heatmap health of every epoch. An interrupted
   demo continues where it stopped (``resume=auto``); ``--fresh`` starts over.
3. Scores each run's last checkpoint on the held-out test split with ``posematch-diagnose
   split=test`` (AP, AP with oracle scores, joint errors, heatmap health in ``RUN/test/``).
4. Prints the paper-style table on the test split (AP AP50 AP75 APM APL AR and the matching loss's
   gain) with one sentence on what it means, and writes it to ``results/demo.md``, with the
   heatmap figure (``fig3_heatmaps.png``) and the loss-vs-localisation plot
   (``loss_vs_localisation.png``) beside it.

Extra arguments are Hydra overrides given to both runs (e.g. ``trainer.epochs=2`` for a quick look).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from posematch.evaluation.report import MISSING, paper_row  # noqa: E402
from posematch.reporting.metrics import last_validation  # noqa: E402
from posematch.reporting.tables import gain  # noqa: E402

RUNS = (  # (label, experiment, run sub-directory)
    ("MSE (Gaussian heatmaps)", "demo/synthetic_mse", "mse"),
    ("matching loss (Sinkhorn)", "demo/synthetic_sinkhorn", "sinkhorn"),
)
TARGET_AP = 0.5  # the matching-loss model must reach this OKS-AP on the synthetic test split


def ensure_data(root: Path, num_train: int, num_val: int, num_test: int) -> None:
    """Generate the synthetic dataset unless it is there with these image counts (it is
    deterministic, so regenerating only costs seconds)."""
    ann = root / "annotations"
    wanted = {"train": num_train, "val": num_val, "test": num_test}
    found = {}
    for split in wanted:
        path = ann / f"person_keypoints_{split}2017.json"
        if path.is_file():
            found[split] = len(json.loads(path.read_text()).get("images", []))
    if found == wanted:
        print(f"[demo] synthetic data: {root} ({num_train} + {num_val} images, already there)")
        return
    if found:
        print(f"[demo] {root} holds {found}, not {wanted}: writing it again", flush=True)
    print(f"[demo] writing the synthetic dataset to {root} ...", flush=True)
    from posematch.synthetic import generate

    start = time.perf_counter()
    generate(str(root), num_train, num_val, seed=0, num_test=num_test)
    print(
        f"[demo] {num_train} + {num_val} + {num_test} images in "
        f"{time.perf_counter() - start:.0f} s",
        flush=True,
    )


def train(experiment: str, run_dir: Path, data: Path, overrides: list[str], fresh: bool) -> float:
    """One ``posematch-train`` run (subprocess, output shown); its wall time in seconds."""
    if fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    exe = shutil.which("posematch-train") or str(Path(sys.executable).parent / "posematch-train")
    cmd = [
        exe,
        f"experiment={experiment}",
        f"data.root={data}",
        f"hydra.run.dir={run_dir}",
        "resume=auto",
        *overrides,
    ]
    print(f"[demo] {' '.join(cmd[1:])}", flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True)
    return time.perf_counter() - start


def final_metrics(run_dir: Path) -> tuple[dict, int]:
    """The run's last validation metrics (COCO keys, fractions) and their epoch."""
    found = last_validation(run_dir / "metrics.jsonl")
    if found is None:
        raise RuntimeError(f"{run_dir / 'metrics.jsonl'}: no validation record; did it finish?")
    metrics, epoch, _ = found
    return metrics, epoch


def test_metrics(run_dir: Path) -> dict:
    """COCO metrics of the run's last checkpoint on the held-out test split (``posematch-diagnose
    split=test``, written to ``RUN/test/diagnosis.json``; reused when the run has not changed)."""
    out = run_dir / "test"
    report = out / "diagnosis.json"
    last = run_dir / "last.pth"
    if not report.is_file() or report.stat().st_mtime < last.stat().st_mtime:
        exe = shutil.which("posematch-diagnose") or str(
            Path(sys.executable).parent / "posematch-diagnose"
        )
        cmd = [exe, f"run={run_dir}", "checkpoint=last.pth", "split=test", f"out={out}"]
        print(f"[demo] {' '.join(cmd[1:])}", flush=True)
        subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return json.loads(report.read_text())["ap"]


def verdict(gain_ap: float) -> str:
    """One sentence on what the test-split gain means (AP points)."""
    if gain_ap >= 0:
        return (
            f"On the held-out test split the matching loss is ahead of MSE by {gain_ap:.1f} AP at "
            "equal budget, in line with the paper's claim in kind (one seed here; "
            "results/study.md has seeds and spreads)."
        )
    return (
        f"On the held-out test split the matching loss trails MSE by {-gain_ap:.1f} AP at equal "
        "budget (one seed here; results/study.md has seeds, spreads and the measured cause)."
    )


def table(rows: list[tuple[str, dict, int, float]]) -> str:
    """Markdown table: one paper-style row per run and the matching loss's gain (differences of
    the printed values, as posematch-tables computes them)."""
    head = ["loss", *paper_row(rows[0][1])[0], "epochs", "train time"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    printed = []
    for label, metrics, epoch, seconds in rows:
        values = [None if v == MISSING else v for v in paper_row(metrics)[1]]
        printed.append(values)
        cells = [v or MISSING for v in values]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {epoch} | {seconds / 60:.1f} min |")
    base, ours = printed
    gains = [gain(a, b) or MISSING for a, b in zip(ours, base, strict=True)]
    lines.append("| gain of the matching loss | " + " | ".join(gains) + " | | |")
    return "\n".join(lines)


def figures(runs: dict[str, Path], out: Path) -> list[str]:
    """The heatmap figure and the loss-vs-localisation plot (best effort: a failure is reported)."""
    made = []
    order = [str(runs["sinkhorn"]), str(runs["mse"])]
    jobs = [
        ("fig3_heatmaps.png", ["scripts/plot_heatmaps.py", "--runs", *order]),
        ("loss_vs_localisation.png", ["scripts/plot_loss_vs_localisation.py", "--runs", *order]),
    ]
    for name, args in jobs:
        result = subprocess.run(
            [sys.executable, *args, "--out", str(out / name)],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        if result.returncode == 0:
            made.append(name)
        else:
            print(f"[demo] {name} not written:\n{result.stderr[-2000:]}", flush=True)
    return made


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / "data" / "synthetic")
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "demo")
    parser.add_argument("--out", type=Path, default=REPO / "results")
    parser.add_argument("--train-images", type=int, default=1500)
    parser.add_argument("--val-images", type=int, default=300)
    parser.add_argument("--test-images", type=int, default=300)
    parser.add_argument("--fresh", action="store_true", help="delete earlier demo runs first")
    args, overrides = parser.parse_known_args()

    start = time.perf_counter()
    ensure_data(args.data, args.train_images, args.val_images, args.test_images)
    rows, run_dirs, val_ap = [], {}, {}
    for label, experiment, name in RUNS:
        run_dirs[name] = args.runs / name
        seconds = train(experiment, run_dirs[name], args.data, overrides, args.fresh)
        metrics, epoch = final_metrics(run_dirs[name])
        val_ap[name] = metrics["AP"]
        rows.append((label, test_metrics(run_dirs[name]), epoch, seconds))

    text = table(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    made = figures(run_dirs, args.out)
    ours = rows[1][1]["AP"]
    reached = "reached" if ours >= TARGET_AP else "NOT reached"
    gain_ap = float(gain(*(paper_row(r[1])[1][0] for r in (rows[1], rows[0]))) or "nan")
    report = "\n".join(
        [
            "# posematch demo: matching loss vs MSE on the synthetic data",
            "",
            "OKS-AP (pycocotools COCOeval, percent) on the held-out synthetic test split (never used",
            "for any choice), last checkpoint, ground-truth boxes, flip test. Both runs: the same",
            "network (tiny HRNet, 0.88 M parameters, from scratch), seed, data, augmentation and",
            "steps; each loss with the lr and schedule its own search on val selected",
            "(scripts/study.py). The matching-loss run puts a softplus on the head's output (relu",
            "heatmaps die from scratch), measures cost and reg in input pixels (reg = a quarter",
            "of a heatmap pixel) and scores joints by the mass share of the decoded window",
            "(conf/experiment/demo/synthetic_sinkhorn.yaml); the MSE run uses the official head.",
            "",
            text,
            "",
            verdict(gain_ap),
            f"Val AP (last epoch): MSE {100 * val_ap['mse']:.1f}, matching "
            f"{100 * val_ap['sinkhorn']:.1f}.",
            f"Matching-loss test AP {100 * ours:.1f}: target {100 * TARGET_AP:.0f} {reached}.",
            f"Runs: {', '.join(str(p) for p in run_dirs.values())}. "
            f"Figures: {', '.join(made) or 'none'}. "
            f"Total time {(time.perf_counter() - start) / 60:.1f} min.",
            "",
        ]
    )
    (args.out / "demo.md").write_text(report)
    print("\n" + report)
    print(f"[demo] written to {args.out / 'demo.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
