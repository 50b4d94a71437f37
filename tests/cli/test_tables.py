"""posematch-tables on hand-built run directories: exact table text against hand-worked numbers."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from posematch import runinfo
from posematch.cli import tables
from posematch.reporting import render
from posematch.reporting import tables as report_tables
from posematch.runinfo import RunInfo
from tests.conftest import REPO

COCO_KEYS = ("AP", "AP50", "AP75", "APM", "APL", "AR")
MPII_KEYS = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean")
M = "–"  # missing, in Markdown
HEADER_COCO = "| Backbone | Input | Loss | AP | AP50 | AP75 | APM | APL | AR |"
SEPARATOR_COCO = "|---|---|---|---:|---:|---:|---:|---:|---:|"

# Hand-worked: COCO fractions print x 100 with one decimal; gains are differences of the printed
# values (AP 74.44 -> 74.4 and 75.56 -> 75.6 gives +1.2, not the +1.1 of the raw 1.12).
W32_MSE = (0.7444, 0.905, 0.812, 0.701, 0.801, 0.795)  # 74.4 90.5 81.2 70.1 80.1 79.5
W32_OURS = (0.7556, 0.912, 0.825, 0.698, 0.812, 0.806)  # 75.6 91.2 82.5 69.8 81.2 80.6
W48_OURS = (0.763, 0.915, 0.830, 0.722, 0.835, 0.811)  # 76.3 91.5 83.0 72.2 83.5 81.1


# What every run of these tests was trained with (run.json's budget): equal, so tables pair them.
PAPER_BUDGET = {
    "epochs": 210, "steps_per_epoch": None, "batch_size": 32, "processes": 4,
    "optimizer": "Adam", "lr": 0.001, "schedule": {"name": "MultiStepLR", "milestones": [170, 200]},
    "warmup_iters": 0, "activation": "softplus",
}  # fmt: skip
MATCHING_LOSS = {
    "kind": "matching", "target": "posematch.losses.sinkhorn.SinkhornMatchingLoss",
    "demanders": "subpixel", "max_iters": 1000, "reg": 1.0, "tol": 1e-9, "pixel_size": 4.0,
}  # fmt: skip


def val_record(epoch: int, values, keys=COCO_KEYS) -> dict:
    """A metrics.jsonl line of a validation epoch."""
    record = {"epoch": epoch, "train_loss": 1.5, "lr": 0.001}
    return {**record, **{f"val/{k}": v for k, v in zip(keys, values, strict=True)}}


def write_run(
    path: Path,
    *,
    dataset: str = "coco",
    model: str = "hrnet_w32",
    size: tuple[int, int] = (288, 384),
    loss: str | None = "sinkhorn",
    demanders: str = "subpixel",
    max_iters: int = 1000,
    records: list[dict] | None = None,
    metrics: dict | None = None,
    ann_file: str = "${data.root}/annotations/person_keypoints_val2017.json",
    checkpoint: str | None = None,
) -> Path:
    """A run directory as posematch-train (loss given) or posematch-eval (loss None) leaves it:
    ``run.json`` with its facts (an evaluation's loss is the one the checkpoint's run recorded,
    as posematch-eval reads it), ``.hydra/config.yaml``, and the metric files asked for."""
    data = {
        "name": dataset,
        "root": f"data/{dataset}",
        "input_size": list(size),
        "val": {"ann_file": ann_file, "image_dir": "${data.root}/val2017"},
    }
    if dataset != "mpii":
        data["boxes"] = "gt" if dataset == "synthetic" else "det"
    (path / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"data": data}), path / ".hydra" / "config.yaml")
    if loss == "sinkhorn":
        entry: dict | None = {**MATCHING_LOSS, "demanders": demanders, "max_iters": max_iters}
    elif loss == "mse":
        entry = {"kind": "mse", "target": "posematch.losses.mse.JointsMSELoss"}
    else:  # an evaluation: the loss its checkpoint's run recorded, if that run is there
        trained = None if checkpoint is None else Path(checkpoint).parent
        entry = RunInfo.read(trained).loss if trained and runinfo.exists(trained) else None
    RunInfo(
        kind="train" if loss is not None else "eval",
        dataset=dataset,
        split="test-dev" if "test-dev" in ann_file else "val",
        model=model,
        input_size=size,
        loss=entry,
        boxes=data.get("boxes"),
        seed=0,
        budget=PAPER_BUDGET,
        checkpoint=checkpoint,
    ).write(path)
    if records is not None:
        (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if metrics is not None:
        record = {"checkpoint": checkpoint or str(path / "best.pth"), "config": data}
        (path / "metrics.json").write_text(json.dumps({**metrics, **record}))
    return path


def coco_metrics(values, scored: bool = True) -> dict:
    """What posematch-eval writes (before its checkpoint / config keys)."""
    return {**dict(zip(COCO_KEYS, values, strict=True)), "ARL": 0.9, "scored": scored}


def run_main(args: list, capsys) -> tuple[int, str, str]:
    """posematch-tables in this process: (exit code, stdout, stderr)."""
    code = tables.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def table_lines(text: str, number: int) -> list[str]:
    """The table rows (lines starting with |) of Table ``number`` in a Markdown text."""
    part = text.split(f"**Table {number}.**", 1)[1].split("**Table ", 1)[0]
    return [line for line in part.splitlines() if line.startswith("|")]


def missing(label: str, n: int = 6) -> str:
    return f"| {label} | " + " | ".join([M] * n) + " |"


@pytest.fixture
def coco_runs(tmp_path) -> Path:
    """HRNet-W32 baseline and matching loss; HRNet-W48 matching loss only (no baseline run)."""
    root = tmp_path / "runs"
    write_run(
        root / "w32_mse",
        loss="mse",
        records=[{"epoch": 1, "train_loss": 2.0}, val_record(10, W32_MSE)],
    )
    write_run(root / "w32_ours", records=[val_record(10, W32_OURS)])
    write_run(root / "w48_ours", model="hrnet_w48", records=[val_record(10, W48_OURS)])
    return root


def test_table1_gain_rows_and_missing_rows(coco_runs, tmp_path, capsys):
    code, out, _ = run_main([coco_runs, "--table", "1", "--out", tmp_path / "t"], capsys)
    assert code == 0
    assert table_lines(out, 1) == [
        HEADER_COCO,
        SEPARATOR_COCO,
        missing("SimpleBaseline-R152 | 384x288 | MSE"),
        missing("SimpleBaseline-R152 | 384x288 | Matching"),
        missing("SimpleBaseline-R152 | 384x288 | Gain"),
        "| HRNet-W32 | 384x288 | MSE | 74.4 | 90.5 | 81.2 | 70.1 | 80.1 | 79.5 |",
        "| HRNet-W32 | 384x288 | Matching | 75.6 | 91.2 | 82.5 | 69.8 | 81.2 | 80.6 |",
        "| HRNet-W32 | 384x288 | Gain | +1.2 | +0.7 | +1.3 | -0.3 | +1.1 | +1.1 |",
        missing("HRNet-W48 | 384x288 | MSE"),
        "| HRNet-W48 | 384x288 | Matching | 76.3 | 91.5 | 83.0 | 72.2 | 83.5 | 81.1 |",
        missing("HRNet-W48 | 384x288 | Gain"),
        missing("HRFormer-B | 384x288 | MSE"),
        missing("HRFormer-B | 384x288 | Matching"),
        missing("HRFormer-B | 384x288 | Gain"),
    ]
    assert (
        f"- HRNet-W32 384x288 MSE: `{coco_runs / 'w32_mse'}: metrics.jsonl, epoch 10, det boxes`"
        in out
    )
    assert (tmp_path / "t" / "table1.md").read_text() == out
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["table1.md", "table1.tex"]


def test_metrics_json_beats_the_last_validation_record_of_metrics_jsonl(tmp_path, capsys):
    records = [
        val_record(5, (0.70, 0.88, 0.77, 0.66, 0.75, 0.74)),
        val_record(10, (0.72, 0.89, 0.79, 0.68, 0.77, 0.76)),
        {"epoch": 11, "train_loss": 1.2, "lr": 1e-4, "sinkhorn_iters": 6.0},  # no validation
    ]
    run = write_run(tmp_path / "run", records=records)
    _, out, _ = run_main([run, "--table", "1", "--out", tmp_path / "a"], capsys)
    row = "| HRNet-W32 | 384x288 | Matching | 72.0 | 89.0 | 79.0 | 68.0 | 77.0 | 76.0 |"
    assert row in table_lines(out, 1)
    assert f"`{run}: metrics.jsonl, epoch 10, det boxes`" in out

    # posematch-eval output_dir=<the run folder>: its metrics.json and its run.json (kind eval).
    evaluation = coco_metrics((0.731, 0.901, 0.803, 0.694, 0.782, 0.771))
    (run / "metrics.json").write_text(json.dumps(evaluation))
    info = RunInfo.read(run)
    RunInfo(**{**info.__dict__, "kind": "eval"}).write(run)
    _, out, _ = run_main([run, "--table", "1", "--out", tmp_path / "b"], capsys)
    row = "| HRNet-W32 | 384x288 | Matching | 73.1 | 90.1 | 80.3 | 69.4 | 78.2 | 77.1 |"
    assert row in table_lines(out, 1)
    assert f"`{run}: metrics.json, det boxes`" in out


def test_two_runs_for_one_cell_later_wins_with_a_warning(tmp_path, capsys, caplog):
    first = write_run(tmp_path / "a", records=[val_record(10, W32_OURS)])
    second = write_run(tmp_path / "b", records=[val_record(10, W48_OURS)])
    with caplog.at_level(logging.WARNING, logger="posematch.tables"):
        _, out, _ = run_main([first, second, "--table", "1", "--out", tmp_path / "t"], capsys)
    assert "| HRNet-W32 | 384x288 | Matching | 76.3 |" in out
    assert f"{first} and {second} give the same cell" in caplog.text


def test_table2_takes_scored_test_dev_evaluations_only(tmp_path, capsys, caplog):
    run = write_run(tmp_path / "train" / "w32_ours", records=[val_record(10, W32_OURS)])
    base = write_run(tmp_path / "train" / "w32_mse", loss="mse", records=[val_record(10, W32_MSE)])
    test_dev = "data/coco/annotations/image_info_test-dev2017.json"
    server = (0.749, 0.925, 0.828, 0.712, 0.808, 0.801)  # pasted from the evaluation server
    write_run(
        tmp_path / "eval" / "w32_ours_testdev",
        loss=None,
        ann_file=test_dev,
        checkpoint=str(run / "best.pth"),
        metrics=coco_metrics(server),
    )
    unscored = write_run(
        tmp_path / "eval" / "w32_mse_testdev",
        loss=None,
        ann_file=test_dev,
        checkpoint=str(base / "best.pth"),
        metrics={"scored": False},
    )
    orphan = write_run(
        tmp_path / "eval" / "orphan",
        loss=None,
        checkpoint=str(tmp_path / "elsewhere" / "best.pth"),
        metrics=coco_metrics(server),
    )
    with caplog.at_level(logging.WARNING, logger="posematch.tables"):
        code, out, _ = run_main([tmp_path, "--table", "1", "2", "--out", tmp_path / "t"], capsys)
    assert code == 0
    rows = table_lines(out, 2)
    assert rows[5:8] == [
        missing("HRNet-W32 | 384x288 | MSE"),
        "| HRNet-W32 | 384x288 | Matching | 74.9 | 92.5 | 82.8 | 71.2 | 80.8 | 80.1 |",
        missing("HRNet-W32 | 384x288 | Gain"),
    ]
    assert len(rows) == 2 + 4 * 3 and sum(M in r for r in rows) == 11  # nothing else filled in
    # Table 1 still shows the training validation; the test-dev numbers stay out of it.
    assert table_lines(out, 1)[6] == (
        "| HRNet-W32 | 384x288 | Matching | 75.6 | 91.2 | 82.5 | 69.8 | 81.2 | 80.6 |"
    )
    assert f'{unscored / "metrics.json"}: "scored": false' in caplog.text
    assert f"{orphan}: run.json does not say which loss trained this model" in caplog.text
    assert "no validation record" not in caplog.text  # evaluation folders have no training log


def test_table3_mpii_columns_in_the_papers_order(tmp_path, capsys):
    base = (97.0, 95.9, 90.3, 86.4, 89.1, 87.2, 83.3, 90.3)
    ours = (97.1, 96.2, 90.9, 86.6, 89.4, 87.5, 83.9, 90.7)
    kwargs = {"dataset": "mpii", "model": "simplebaseline_r152", "size": (256, 256)}
    write_run(tmp_path / "mse", loss="mse", records=[val_record(140, base, MPII_KEYS)], **kwargs)
    write_run(tmp_path / "ours", records=[val_record(140, ours, MPII_KEYS)], **kwargs)
    _, out, err = run_main([tmp_path, "--table", "1", "3", "--out", tmp_path / "t"], capsys)
    assert table_lines(out, 3)[:5] == [
        "| Backbone | Input | Loss | Hea | Sho | Elb | Wri | Hip | Kne | Ank | Mean |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        "| SimpleBaseline-R152 | 256x256 | MSE | 97.0 | 95.9 | 90.3 | 86.4 | 89.1 | 87.2 | 83.3 | 90.3 |",
        "| SimpleBaseline-R152 | 256x256 | Matching | 97.1 | 96.2 | 90.9 | 86.6 | 89.4 | 87.5 | 83.9 | 90.7 |",
        "| SimpleBaseline-R152 | 256x256 | Gain | +0.1 | +0.3 | +0.6 | +0.2 | +0.3 | +0.3 | +0.6 | +0.4 |",
    ]
    assert [r.split(" | ")[0] for r in table_lines(out, 3)[2::3]] == [
        "| SimpleBaseline-R152",
        "| HRNet-W32",
        "| HRNet-W48",
    ]
    caption = out.split("**Table 3.**", 1)[1].splitlines()[0]
    assert caption.startswith(" MPII val, PCKh@0.5 (%): the MSE baseline, the matching loss")
    assert caption.count("PCKh@0.5") == 1  # it said "MPII val, PCKh@0.5, PCKh@0.5 (%)"
    # MPII runs add no COCO rows: Table 1, all missing cells, is not printed (issue 16 item 7).
    assert "**Table 1.**" not in out
    assert "Table 1: no run on COCO val (or other data scored like it)" in err


@pytest.fixture
def sweeps(tmp_path) -> Path:
    """Two Hydra multirun sweeps of the synthetic demo and a lone HRNet-W32 ablation run."""
    root = tmp_path / "multirun"
    demo = {"dataset": "synthetic", "model": "hrnet_small", "size": (96, 128)}
    iters = root / "2024-05-01_12-00-00"
    (iters).mkdir(parents=True)
    (iters / "multirun.yaml").write_text("hydra: {}\n")
    for job, (n, ap) in enumerate([(500, 0.612), (1000, 0.634), (1500, 0.637)]):
        record = val_record(12, (ap, 0.9, 0.7, 0.5, 0.6, 0.65))
        write_run(iters / f"{job}_loss.max_iters={n}", max_iters=n, records=[record], **demo)
    naive = root / "2024-05-02_09-00-00" / "0_loss.demanders=naive"
    record = val_record(12, (0.621, 0.9, 0.7, 0.5, 0.6, 0.65))
    write_run(naive, demanders="naive", records=[record], **demo)
    write_run(tmp_path / "w32_500", max_iters=500, records=[val_record(10, W32_MSE)])
    return tmp_path


def test_ablation_tables_4_and_5_from_sweep_directories(sweeps, capsys):
    args = [sweeps / "multirun", sweeps / "w32_500", "--out", sweeps / "t"]
    code, out, _ = run_main(args, capsys)
    assert code == 0
    demo = "| hrnet_small (synthetic) | 128x96 |"
    tail = "90.0 | 70.0 | 50.0 | 60.0 | 65.0 |"
    assert table_lines(out, 4) == [
        "| Backbone | Input | Demanders | AP | AP50 | AP75 | APM | APL | AR | ΔAP |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
        f"{demo} naive | 62.1 | {tail} -1.3 |",
        f"{demo} subpixel (default) | 63.4 | {tail} +0.0 |",
    ]
    assert table_lines(out, 5) == [
        "| Backbone | Input | Iterations | AP | AP50 | AP75 | APM | APL | AR | ΔAP |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
        "| HRNet-W32 | 384x288 | 500 | 74.4 | 90.5 | 81.2 | 70.1 | 80.1 | 79.5 | – |",
        missing("HRNet-W32 | 384x288 | 1000 (default)", 7),
        f"{demo} 500 | 61.2 | {tail} -2.2 |",
        f"{demo} 1000 (default) | 63.4 | {tail} +0.0 |",
        f"{demo} 1500 | 63.7 | {tail} +0.3 |",
    ]
    # The default-loss run also makes the demo's own Table 1 rows; the ablation runs do not.
    rows = table_lines(out, 1)
    assert rows[-3:] == [
        missing("hrnet_small (synthetic) | 128x96 | MSE"),
        f"{demo} Matching | 63.4 | {tail}",
        missing("hrnet_small (synthetic) | 128x96 | Gain"),
    ]
    assert rows[5] == missing("HRNet-W32 | 384x288 | MSE")
    # Tables 2 and 3 (no test-dev, no MPII run) are neither printed nor written.
    assert sorted(p.name for p in (sweeps / "t").iterdir()) == [
        f"table{n}.{ext}" for n in (1, 4, 5) for ext in ("md", "tex")
    ]
    assert "**Table 2.**" not in out and "**Table 3.**" not in out


def test_ablation_table_without_ablation_runs_says_so(coco_runs, tmp_path, capsys):
    code, out, err = run_main([coco_runs, "--table", "4", "--out", tmp_path / "t"], capsys)
    assert code == 0 and out == ""
    assert (
        "Table 4: no matching-loss run with a loss.demanders other than the default; not printed"
        in err
    )
    assert not (tmp_path / "t" / "table4.md").exists()


def test_latex_has_the_tabular_structure_and_escapes(coco_runs, sweeps, capsys):
    args = [coco_runs, sweeps / "multirun", "--table", "1", "--format", "latex"]
    run_main([*args, "--out", sweeps / "tex"], capsys)
    assert not (sweeps / "tex" / "table1.md").exists()
    tex = (sweeps / "tex" / "table1.tex").read_text()
    lines = tex.splitlines()
    assert lines[1:3] == [r"\begin{table}[t]", r"\centering"]
    assert lines[4:8] == [
        r"\label{tab:posematch-1-coco}",
        r"\begin{tabular}{lllrrrrrr}",
        r"\toprule",
        r"Backbone & Input & Loss & AP & AP$_{50}$ & AP$_{75}$ & AP$_{M}$ & AP$_{L}$ & AR \\",
    ]
    assert lines[-3:] == [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    assert tex.count(r"\midrule") == 5  # one per backbone group
    assert (
        r"HRNet-W32 & 384$\times$288 & Gain & +1.2 & +0.7 & +1.3 & $-$0.3 & +1.1 & +1.1 \\" in lines
    )
    assert r"HRNet-W48 & 384$\times$288 & MSE & -- & -- & -- & -- & -- & -- \\" in lines
    demo = r"hrnet\_small (synthetic) & 128$\times$96 & Matching & 63.4 & 90.0 & 70.0 & 50.0 & 60.0 & 65.0 \\"
    job = sweeps / "multirun" / "2024-05-01_12-00-00" / "1_loss.max_iters=1000"
    assert f"{demo} % {job}: metrics.jsonl, epoch 12, gt boxes" in lines
    assert "–" not in tex and "Δ" not in tex  # Markdown-only characters
    assert "-- = no run" in lines[3]


def test_latex_escape():
    text = r"a_b & 50% $x$ #1 {y} ~ ^ \ Δ"
    expected = (
        r"a\_b \& 50\% \$x\$ \#1 \{y\} \textasciitilde{} \textasciicircum{} "
        r"\textbackslash{} $\Delta$"
    )
    assert render.latex_escape(text) == expected


def test_installed_entry_point_writes_the_files(coco_runs, tmp_path):
    exe = REPO / ".venv" / "bin" / "posematch-tables"
    out = tmp_path / "results"
    cmd = [exe, coco_runs, "--table", "1", "3", "--format", "md", "latex", "--out", out]
    proc = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # COCO runs only: Table 3 (MPII) has nothing to show and is not written.
    assert sorted(p.name for p in out.iterdir()) == ["table1.md", "table1.tex"]
    assert proc.stdout == (out / "table1.md").read_text()
    assert "| HRNet-W32 | 384x288 | Gain | +1.2 | +0.7 | +1.3 | -0.3 | +1.1 | +1.1 |" in proc.stdout
    assert f"wrote {out / 'table1.tex'}" in proc.stderr
    assert "Table 3: no run on MPII val among the runs given; not printed" in proc.stderr


def test_a_run_without_validation_is_missing_with_a_warning(tmp_path, capsys, caplog):
    records = [{"epoch": 1, "train_loss": 2.0, "lr": 0.001}]
    run = write_run(
        tmp_path / "demo_mse",
        loss="mse",
        dataset="synthetic",
        model="hrnet_small",
        size=(96, 128),
        records=records,
    )
    with caplog.at_level(logging.WARNING, logger="posematch.tables"):
        code, out, _ = run_main([run, "--table", "1", "--out", tmp_path / "t"], capsys)
    assert code == 0
    assert table_lines(out, 1)[-3:] == [
        missing("hrnet_small (synthetic) | 128x96 | MSE"),
        missing("hrnet_small (synthetic) | 128x96 | Matching"),
        missing("hrnet_small (synthetic) | 128x96 | Gain"),
    ]
    assert f"{run}: no validation record" in caplog.text


def _break(run: Path, what: str) -> str:
    """Spoil one file of a good run; the path the error must name."""
    if what == "jsonl line":
        (run / "metrics.jsonl").write_text(json.dumps(val_record(1, W32_MSE)) + "\n{broken\n")
        return f"{run / 'metrics.jsonl'}:2"
    if what == "jsonl columns":
        (run / "metrics.jsonl").write_text(json.dumps({"epoch": 3, "val/AP": 0.7}) + "\n")
        return f"{run / 'metrics.jsonl'}:1"
    if what == "metrics.json":  # an evaluation's
        RunInfo(**{**RunInfo.read(run).__dict__, "kind": "eval"}).write(run)
        (run / "metrics.json").write_text('{"AP": 0.7,')
        return str(run / "metrics.json")
    if what == "run.json":
        (run / "run.json").write_text('{"kind": "train",')
        return str(run / "run.json")
    info = json.loads((run / "run.json").read_text())
    info["split"] = "somewhere"  # a run.json of another version or another program
    (run / "run.json").write_text(json.dumps(info))
    return str(run / "run.json")


@pytest.mark.parametrize(
    "what", ["jsonl line", "jsonl columns", "metrics.json", "run.json", "run.json fields"]
)
def test_malformed_files_are_named(tmp_path, capsys, what):
    run = write_run(tmp_path / "run", records=[val_record(10, W32_OURS)])
    path = _break(run, what)
    code, out, err = run_main([run, "--out", tmp_path / "t"], capsys)
    assert code == 1 and out == ""
    assert err.startswith(f"posematch-tables: error: {path}")
    assert not (tmp_path / "t").exists()


def test_a_folder_without_runs_is_named(tmp_path, capsys):
    empty = tmp_path / "not_a_run"
    (empty / "tensorboard").mkdir(parents=True)
    code, _, err = run_main([empty, "--out", tmp_path / "t"], capsys)
    assert code == 1
    assert f"{empty}: not a run directory (no .hydra/config.yaml)" in err
    code, _, err = run_main([tmp_path / "nowhere"], capsys)
    assert code == 1 and f"{tmp_path / 'nowhere'}: no such directory" in err


@pytest.mark.parametrize("dataset", ["coco", "mpii"])
def test_expected_rows_are_the_experiment_configs(dataset):
    found = set()
    for path in (REPO / "conf" / "experiment" / dataset).glob("*.yaml"):
        cfg = yaml.safe_load(path.read_text())
        model = next(d["override /model"] for d in cfg["defaults"] if "override /model" in d)
        found.add((model, tuple(cfg["data"]["input_size"])))
    assert found == set(report_tables.EXPECTED[dataset])


def _caption(text: str, number: int) -> str:
    return text.split(f"**Table {number}.** ", 1)[1].split("\n", 1)[0]


def test_captions_say_what_data_the_rows_came_from(coco_runs, tmp_path, capsys):
    demo = {"dataset": "synthetic", "model": "hrnet_small", "size": (96, 128)}
    synthetic = tmp_path / "synthetic_runs"
    write_run(synthetic / "mse", loss="mse", records=[val_record(3, W32_MSE)], **demo)
    write_run(synthetic / "ours", records=[val_record(3, W32_OURS)], **demo)
    _, paper, _ = run_main([coco_runs, "--table", "1", "--out", tmp_path / "a"], capsys)
    assert _caption(paper, 1).startswith("COCO val2017, AP (%): the MSE baseline")
    _, only, _ = run_main([synthetic, "--table", "1", "--out", tmp_path / "b"], capsys)
    assert _caption(only, 1).startswith(
        "Synthetic data (rows marked (synthetic), its val split); no COCO val2017 run, AP (%)"
    )
    assert "| hrnet_small (synthetic) | 128x96 | Matching | 75.6 |" in only
    _, both, _ = run_main([coco_runs, synthetic, "--table", "1", "--out", tmp_path / "c"], capsys)
    assert _caption(both, 1).startswith(
        "COCO val2017 and synthetic data (rows marked (synthetic), its val split), AP (%)"
    )


def _recorded_run(path: Path, loss: dict, budget: dict, ap: float) -> Path:
    """A run folder as posematch-train leaves it: run.json with its budget, one validation."""
    from posematch.runinfo import RunInfo

    path.mkdir(parents=True)
    info = RunInfo(
        kind="train", dataset="synthetic", split="val", model="hrnet_tiny",
        input_size=(96, 128), loss=loss, boxes="gt", budget=budget, seed=0,
    )  # fmt: skip
    info.write(path)
    values = (ap, 0.9, 0.8, 0.7, 0.8, 0.75)
    (path / "metrics.jsonl").write_text(json.dumps(val_record(3, values)) + "\n")
    return path


DEMO_BUDGET = {
    "epochs": 3, "steps_per_epoch": None, "batch_size": 32, "processes": 1, "optimizer": "Adam",
    "lr": 0.002, "schedule": {"name": "MultiStepLR", "milestones": [2]}, "warmup_iters": 50,
    "activation": "none",
}  # fmt: skip


def test_a_table_refuses_to_pair_runs_of_other_budgets(tmp_path, capsys):
    root = tmp_path / "runs"
    _recorded_run(root / "mse", {"kind": "mse", "target": "x.JointsMSELoss"}, DEMO_BUDGET, 0.836)
    sweep_budget = {**DEMO_BUDGET, "epochs": 1, "steps_per_epoch": 5, "activation": "softplus"}
    _recorded_run(root / "sweep" / "0", MATCHING_LOSS, sweep_budget, 0.05)
    # The fault: a 5-step sweep run was paired with the 3-epoch MSE run: Gain -83.8, a warning.
    code, out, err = run_main([root, "--table", "1", "--out", tmp_path / "t"], capsys)
    assert code == 1 and out == ""
    assert "Table 1, hrnet_tiny (synthetic) 128x96, MSE vs matching" in err
    assert "budget.epochs (3 vs 1), budget.steps_per_epoch (None vs 5)" in err
    assert (
        "budget.activation" not in err
    )  # each loss with its own head: part of the compared recipe

    code, out, err = run_main(
        [root, "--table", "1", "--accept-mixed", "--out", tmp_path / "t"], capsys
    )
    assert code == 0 and "Mixed budgets, accepted" in out and "-78.6" in out

    # Same budget, different loss: the pair is what the table is for.
    _recorded_run(root / "ours", MATCHING_LOSS, {**DEMO_BUDGET, "activation": "softplus"}, 0.686)
    (root / "sweep" / "0" / "run.json").unlink()
    (root / "sweep" / "0" / "metrics.jsonl").unlink()
    code, out, _ = run_main([root, "--table", "1", "--out", tmp_path / "t"], capsys)
    assert code == 0 and "| Gain | -15.0 |" in out.replace("hrnet_tiny (synthetic) | 128x96 ", "")


def test_an_ablation_row_must_agree_with_the_default_row_but_for_its_option(tmp_path, capsys):
    root = tmp_path / "runs"
    _recorded_run(root / "default", MATCHING_LOSS, DEMO_BUDGET, 0.686)
    # The fault: the "1000 (default)" row ran with the default tolerance (27 iterations on
    # average), the sweep rows with tol=0 (exactly max_iters).
    _recorded_run(root / "it500", {**MATCHING_LOSS, "max_iters": 500, "tol": 0.0}, DEMO_BUDGET, 0.6)
    code, _, err = run_main([root, "--table", "5", "--out", tmp_path / "t"], capsys)
    assert code == 1 and "loss.max_iters=500" in err and "loss.tol (1e-09 vs 0.0)" in err
    _recorded_run(root / "it1000", {**MATCHING_LOSS, "tol": 0.0}, DEMO_BUDGET, 0.69)
    shutil.rmtree(root / "default")
    code, out, _ = run_main([root, "--table", "5", "--out", tmp_path / "t"], capsys)
    assert code == 0 and "1000 (default)" in out


def test_each_loss_keeps_its_own_tuned_lr_in_a_paired_table(tmp_path, capsys):
    root = tmp_path / "runs"
    _recorded_run(root / "mse", {"kind": "mse", "target": "x.JointsMSELoss"}, DEMO_BUDGET, 0.836)
    tuned = {**DEMO_BUDGET, "lr": 0.004, "schedule": {"name": "MultiStepLR", "gamma": 1.0}}
    _recorded_run(root / "ours", MATCHING_LOSS, {**tuned, "activation": "softplus"}, 0.686)
    code, out, _ = run_main([root, "--table", "1", "--out", tmp_path / "t"], capsys)
    assert code == 0 and "-15.0" in out


def test_a_run_folder_without_run_json_is_skipped_by_name(tmp_path, capsys, caplog):
    # Issue 14 removed the reader of run folders from before run.json (reporting/legacy.py).
    run = write_run(tmp_path / "old", records=[val_record(10, W32_OURS)])
    (run / "run.json").unlink()
    kept = write_run(tmp_path / "new", model="hrnet_w48", records=[val_record(10, W48_OURS)])
    with caplog.at_level(logging.WARNING, logger="posematch.tables"):
        code, out, _ = run_main([run, kept, "--table", "1", "--out", tmp_path / "t"], capsys)
    assert code == 0
    assert f"{run}: no run.json" in caplog.text and "skipped" in caplog.text
    assert "| HRNet-W48 | 384x288 | Matching | 76.3 |" in out
    assert "| HRNet-W32 | 384x288 | Matching | –" in out
