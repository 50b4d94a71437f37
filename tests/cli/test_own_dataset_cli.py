"""A user's own COCO-format dataset with another joint layout: one YAML outside the package, no edit.

The dataset is a 4-joint cut of the synthetic data (nose, both shoulders, left hip), described by a
``conf/data/quad.yaml`` in a folder of the user's, found through ``hydra.searchpath``; the installed
``posematch-train`` trains and validates on it with COCOeval using the spec's own OKS sigmas.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from tests.conftest import REPO
from tests.engine.tiny import synthetic_set

KEEP = [0, 5, 6, 11]  # COCO nose, left shoulder, right shoulder, left hip

QUAD_YAML = """\
# A 4-joint COCO-format dataset (the user's own).
defaults:
  - coco
  - _self_

name: quad
root: ???
num_keypoints: 4
boxes: gt
det_file: null
spec:
  name: quad
  names: [nose, left_shoulder, right_shoulder, left_hip]
  flip_pairs: [[1, 2]]
  sigmas: [0.026, 0.079, 0.079, 0.107]
  skeleton: [[0, 1], [0, 2], [1, 3]]
  upper_body: [0, 1, 2]
"""


def readme_recipe() -> list[str]:
    """The overrides of the README's own-data command from ``data=quad`` on (its comment, the
    user's folder and the network, replaced here by a small one, left out)."""
    text = (REPO / "README.md").read_text().replace("\\\n", " ")
    line = next(x for x in text.splitlines() if "data=quad" in x).split("  #", 1)[0]
    words = line.split()
    recipe = [w for w in words[words.index("data=quad") :] if not w.startswith("model=")]
    assert "model.head.activation=softplus" in recipe and "loss=sinkhorn_input_px" in recipe
    return recipe


def _cut_to_four_joints(src: Path, dst: Path) -> None:
    shutil.copytree(src / "train2017", dst / "train2017")
    (dst / "annotations").mkdir(parents=True)
    data = json.loads((src / "annotations" / "person_keypoints_train2017.json").read_text())
    for ann in data["annotations"]:
        k = ann["keypoints"]
        ann["keypoints"] = [v for j in KEEP for v in k[3 * j : 3 * j + 3]]
        ann["num_keypoints"] = sum(1 for j in KEEP if k[3 * j + 2] > 0)
    data["annotations"] = [a for a in data["annotations"] if a["num_keypoints"] > 0]
    data["categories"][0]["keypoints"] = ["nose", "left_shoulder", "right_shoulder", "left_hip"]
    data["categories"][0]["skeleton"] = []
    text = json.dumps(data)
    for split in ("train", "val"):
        (dst / "annotations" / f"person_keypoints_{split}2017.json").write_text(text)


def test_training_and_validation_on_a_four_joint_dataset_from_a_user_config(tmp_path):
    synthetic_set(tmp_path / "synthetic")
    quad = tmp_path / "quad"
    _cut_to_four_joints(tmp_path / "synthetic", quad)
    (tmp_path / "myconf" / "data").mkdir(parents=True)
    (tmp_path / "myconf" / "data" / "quad.yaml").write_text(QUAD_YAML)

    exe = shutil.which("posematch-train") or str(REPO / ".venv" / "bin" / "posematch-train")
    run = tmp_path / "run"
    cmd = [
        exe,
        f"hydra.searchpath=[file://{tmp_path / 'myconf'}]",
        *readme_recipe(),  # data=quad and the README's matching-loss recipe (issue 16 item 2)
        f"data.root={quad}",
        "data.val.image_dir=${data.train.image_dir}",
        "model=hrnet_tiny",  # the README's hrnet_w32, small for the test
        "data.input_size=[64,64]",
        "data.heatmap_size=[16,16]",
        f"hydra.run.dir={run}",
        "trainer.epochs=1",
        "trainer.batch_size=4",
        "trainer.max_steps_per_epoch=2",
        "trainer.num_workers=0",
        "device=cpu",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0.0 <= record["val/AP"] <= 1.0
    assert record["val/dead_share"] == 0.0  # the recipe's heatmaps are alive
    results = json.loads((run / "keypoints_results.json").read_text())
    assert results and all(len(r["keypoints"]) == 3 * 4 for r in results)
