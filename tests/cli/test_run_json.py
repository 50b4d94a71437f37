"""run.json: the facts a train and an eval run write about themselves, and posematch-tables reading
them instead of guessing from class names and path words."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import torch

from tests.cli.test_train_resume_cli import _command, _env
from tests.conftest import REPO
from tests.engine.tiny import synthetic_set

EVAL = shutil.which("posematch-eval") or str(REPO / ".venv" / "bin" / "posematch-eval")


def test_train_and_eval_write_what_they_were_and_the_tables_read_it(tmp_path):
    data = tmp_path / "synthetic"
    synthetic_set(data)
    run = tmp_path / "run"
    train = [*_command(run, data), "trainer.epochs=1", "trainer.max_steps_per_epoch=2",
             "validate=true", "trainer.seed=7", "loss.max_iters=300"]  # fmt: skip
    done = subprocess.run(train, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    facts = json.loads((run / "run.json").read_text())
    assert {k: facts[k] for k in ("kind", "dataset", "split", "boxes", "model", "input_size",
                                  "seed", "checkpoint")} == {
        "kind": "train", "dataset": "synthetic", "split": "val", "boxes": "gt",
        "model": "hrnet_tiny", "input_size": [64, 64], "seed": 7, "checkpoint": None,
    }  # fmt: skip
    assert facts["loss"] == {"kind": "matching", "target":
                             "posematch.losses.sinkhorn.SinkhornMatchingLoss",
                             "demanders": "subpixel", "max_iters": 300, "reg": 1.0,
                             "tol": 1e-9, "pixel_size": 4.0, "dead_grad": 0.0}  # fmt: skip
    assert facts["codec"]["target"] == "posematch.codecs.dots.DotCodec"
    assert facts["versions"]["torch"] == torch.__version__

    out = tmp_path / "eval"
    evaluate = [EVAL, f"checkpoint={run / 'last.pth'}", "data=synthetic", f"data.root={data}",
                "data.val.ann_file=${data.root}/annotations/person_keypoints_train2017.json",
                "data.val.image_dir=${data.root}/train2017", f"output_dir={out}",
                f"hydra.run.dir={out}", "device=cpu", "test.num_workers=0"]  # fmt: skip
    done = subprocess.run(evaluate, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    scored = json.loads((out / "run.json").read_text())
    assert scored["kind"] == "eval" and scored["checkpoint"] == str(run / "last.pth")
    assert scored["loss"] == facts["loss"]  # what trained the checkpoint, from its run's record
    assert scored["model"] == "hrnet_tiny" and scored["input_size"] == [64, 64]

    from posematch.reporting import runs

    results = runs.collect([run, out])
    assert [(r.run, r.split, r.loss.kind, r.loss.max_iters, r.setting.model, r.rank)
            for r in results] == [(run, "val", "matching", 300, "hrnet_tiny", 1),
                                  (out, "val", "matching", 300, "hrnet_tiny", 2)]  # fmt: skip


def test_run_json_beats_path_words(tmp_path):
    from posematch.reporting import runs
    from posematch.runinfo import RunInfo

    # A synthetic run scored on its held-out split "test2017": the old path-word rule called it
    # COCO test-dev; its record says what it is.
    run = tmp_path / "held_out"
    run.mkdir()
    RunInfo(kind="train", dataset="synthetic", split="test", model="hrnet_small",
            input_size=(96, 128), loss={"kind": "mse", "target": "x"}).write(run)  # fmt: skip
    assert runs.collect([run]) == []
    record = tmp_path / "val_run"
    record.mkdir()
    RunInfo(kind="train", dataset="synthetic", split="val", model="hrnet_small",
            input_size=(96, 128), loss={"kind": "mse", "target": "x"}, boxes="gt").write(record)  # fmt: skip
    line = {"epoch": 3, "val/AP": 0.5, "val/AP50": 0.9, "val/AP75": 0.5, "val/APM": 0.4,
            "val/APL": 0.6, "val/AR": 0.55}  # fmt: skip
    (record / "metrics.jsonl").write_text(json.dumps(line) + "\n")
    (result,) = runs.collect([record])
    assert (result.split, result.loss.kind, result.values["AP"]) == ("val", "mse", "50.0")
    assert result.source == "metrics.jsonl, epoch 3, gt boxes"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{broken", "not valid JSON"),
        ('{"kind": "train"}', "missing"),
        ('{"kind": "train", "dataset": "coco", "split": "minival", "model": "m", '
         '"input_size": [1, 2], "loss": null}', "split='minival'"),
        ('{"kind": "train", "colour": 1}', "unknown fields"),
    ],
)  # fmt: skip
def test_a_damaged_run_json_is_named(tmp_path, text, message):
    from posematch.runinfo import RunInfo

    (tmp_path / "run.json").write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        RunInfo.read(tmp_path)
    assert str(tmp_path / "run.json") in str(err.value)


def test_run_json_records_the_regularisers_only_when_on():
    # A record from before they existed must still read as the same loss when they are off.
    from omegaconf import OmegaConf

    from posematch.cli.run_record import loss_facts

    base = {"_target_": "posematch.losses.sinkhorn.SinkhornMatchingLoss"}
    off = loss_facts(OmegaConf.create(base))
    assert not {"mass_weight", "mass_target", "tv_weight"} & set(off)
    tv_only = loss_facts(OmegaConf.create(base | {"tv_weight": 0.1, "mass_target": 50.0}))
    assert tv_only["tv_weight"] == 0.1 and "mass_target" not in tv_only
    on = loss_facts(OmegaConf.create(base | {"mass_weight": 0.1, "mass_target": 100.0}))
    assert (on["mass_weight"], on["mass_target"]) == (0.1, 100.0) and "tv_weight" not in on


def test_resuming_a_run_recorded_before_an_option_existed_reads_it_as_its_default(tmp_path):
    # A matching run started before loss.mass_weight existed must resume when the new option is
    # at its default, and be refused when it is set (a real change to the loss).
    import pytest
    from omegaconf import OmegaConf

    from posematch.cli.run_record import check_resume

    old_loss = {"_target_": "posematch.losses.sinkhorn.SinkhornMatchingLoss", "reg": 1.0}
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml({"loss": old_loss}))
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n')
    same = OmegaConf.create({"loss": old_loss | {"mass_weight": 0.0, "tv_weight": 0.0}})
    assert check_resume(same, tmp_path, resume=True, force=False, write=False)
    changed = OmegaConf.create({"loss": old_loss | {"mass_weight": 0.1}})
    with pytest.raises(ValueError, match=r"loss\.mass_weight"):
        check_resume(changed, tmp_path, resume=True, force=False, write=False)
