"""DDP evaluation with real gloo processes: no instance duplicated or dropped, same metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from posematch.engine.dist import ShardSampler

WORKER = Path(__file__).with_name("ddp_eval_worker.py")


def test_shards_cover_every_index_once():
    for length in (0, 1, 13, 14):
        for world in (1, 2, 3, 5):
            seen = sorted(i for r in range(world) for i in ShardSampler(length, r, world))
            assert seen == list(range(length))
            assert sum(len(ShardSampler(length, r, world)) for r in range(world)) == length


def _torchrun(nproc: int, out: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parents[2]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", str(WORKER), str(out)]  # fmt: skip
    subprocess.run(cmd, check=True, env=env, timeout=300, capture_output=True)


def test_three_gloo_ranks_give_the_single_process_predictions_and_metrics(tmp_path):
    one, three = tmp_path / "one", tmp_path / "three"
    one.mkdir()
    three.mkdir()
    _torchrun(1, one)
    _torchrun(3, three)  # 14 instances: shards of 5, 5 and 4
    a, b = np.load(one / "predictions.npz"), np.load(three / "predictions.npz")
    assert a["index"].tolist() == list(range(14)) and b["index"].tolist() == list(range(14))
    # Batches differ between runs, so float32 convolutions may differ in the last bits.
    np.testing.assert_allclose(b["keypoints"], a["keypoints"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(b["keypoint_scores"], a["keypoint_scores"], rtol=0, atol=1e-6)
    ma = json.loads((one / "metrics.json").read_text())
    mb = json.loads((three / "metrics.json").read_text())
    assert ma["scored"] and ma.keys() == mb.keys()
    for key in ("AP", "AP50", "AR"):
        assert abs(ma[key] - mb[key]) < 1e-9
