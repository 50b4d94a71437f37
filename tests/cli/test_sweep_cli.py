"""A Hydra multirun sweep (the paper's Table 5 ablation) end to end, then ``posematch-tables`` on it.

Real entry points in subprocesses; the demo experiment shrunk to a few steps on a tiny synthetic set.
Marked slow: two trainings with validation through COCOeval.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from omegaconf import OmegaConf

from posematch.synthetic import generate
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def _exe(name: str) -> str:
    return shutil.which(name) or str(REPO / ".venv" / "bin" / name)


def test_max_iters_sweep_trains_one_run_per_value_and_fills_table_5(tmp_path):
    data = tmp_path / "synthetic"
    generate(str(data), 8, 4, seed=0, workers=1)
    sweep = tmp_path / "sweep"
    cmd = [
        _exe("posematch-train"),
        "-m",
        "experiment=demo/synthetic_sinkhorn",
        "loss.max_iters=500,1500",
        f"data.root={data}",
        f"hydra.sweep.dir={sweep}",
        "data.input_size=[64,64]",
        "data.heatmap_size=[16,16]",
        "trainer.epochs=1",
        "trainer.batch_size=4",
        "trainer.max_steps_per_epoch=2",
        "trainer.num_workers=0",
        "device=cpu",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(p.parent.parent for p in sweep.glob("*/.hydra/config.yaml"))
    assert [r.name for r in runs] == ["0", "1"]
    iters = sorted(OmegaConf.load(r / ".hydra" / "config.yaml").loss.max_iters for r in runs)
    assert iters == [500, 1500]
    for run in runs:
        assert (run / "last.pth").is_file()
        assert "val/AP" in (run / "metrics.jsonl").read_text()

    out = tmp_path / "tables"
    proc = subprocess.run(
        [_exe("posematch-tables"), str(sweep), "--table", "5", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (out / "table5.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("|")]
    assert any("| 500 |" in row for row in rows), table
    assert any("| 1500 |" in row for row in rows), table
    assert any("| 1000 (default) | – |" in row for row in rows), table  # default run: missing
    assert (out / "table5.tex").is_file()
