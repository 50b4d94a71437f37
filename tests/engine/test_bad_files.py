"""Damaged checkpoints, safetensors and metrics files: every read names the path and says what is
wrong, and a torn last metrics line does not block ``resume=auto`` (issue 11). Real files."""

from __future__ import annotations

import json
import pickle
import struct

import pytest
import torch
from safetensors.torch import save_file

from posematch.engine import checkpoint
from posematch.models.checkpoints import read_checkpoint
from tests.engine.test_trainer import _fit
from tests.engine.tiny import synthetic_set, tiny_model


@pytest.fixture
def weights(tmp_path):
    path = tmp_path / "best.pth"
    torch.save(tiny_model().state_dict(), path)
    return path


def test_truncated_and_empty_checkpoints_are_named(tmp_path, weights):
    cut = tmp_path / "cut.pth"
    cut.write_bytes(weights.read_bytes()[:300])
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    for path in (cut, empty):
        with pytest.raises(ValueError, match=f"{path}: .*(truncated|empty)"):
            read_checkpoint(path)
        with pytest.raises(ValueError, match=f"checkpoint {path}: .*(truncated|empty)"):
            checkpoint.load(path)


def test_foreign_and_lying_safetensors_are_named(tmp_path):
    renamed = tmp_path / "pickle.safetensors"
    renamed.write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
    with pytest.raises(ValueError, match=f"{renamed}: not a valid safetensors file"):
        read_checkpoint(renamed)
    good = tmp_path / "good.safetensors"
    save_file({"w": torch.zeros(4, 4)}, str(good))
    data = good.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    header["w"]["data_offsets"] = [0, 10**6]  # a header that claims more bytes than the file has
    text = json.dumps(header).encode()
    lying = tmp_path / "lying.safetensors"
    lying.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n :])
    with pytest.raises(ValueError, match=f"{lying}: not a valid safetensors file"):
        read_checkpoint(lying)


def test_resume_from_a_bare_state_dict_says_what_it_is(tmp_path, weights):
    data = synthetic_set(tmp_path / "synthetic")
    with pytest.raises(
        ValueError, match=f"resume={weights}: not a training checkpoint of this posematch version"
    ):
        _fit(tmp_path / "run", data, epochs=1, resume=str(weights))


def test_torn_last_metrics_line_does_not_block_resume(tmp_path):
    data = synthetic_set(tmp_path / "synthetic")
    run = tmp_path / "run"
    _fit(run, data, epochs=1)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "train_lo')  # killed in the middle of a write
    _fit(run, data, epochs=2, resume="auto")
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]


def test_damaged_metrics_line_in_the_middle_is_named(tmp_path):
    data = synthetic_set(tmp_path / "synthetic")
    run = tmp_path / "run"
    _fit(run, data, epochs=2)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(["garbage", *lines]) + "\n")
    with pytest.raises(ValueError, match=r"metrics\.jsonl: line 1 is not a metrics record"):
        _fit(run, data, epochs=3, resume="auto")
