"""The README's self-contained Python snippets run as pasted (issue 9: the codec snippet did not)."""

from __future__ import annotations

import re

import torch

from tests.conftest import REPO


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)


def test_the_codec_snippet_runs_and_means_what_it_says():
    block = next(b for b in python_blocks() if "DotCodec(" in b)
    scope: dict = {}
    exec(compile(block, "README.md (codec snippet)", "exec"), scope)
    # Dots at a quarter of the input coordinates (stride 4), both labelled.
    torch.testing.assert_close(scope["targets"].keypoints, scope["keypoints"] / 4)
    assert scope["targets"].weights.tolist() == [[1.0, 1.0]]
    assert scope["crop_xy"].shape == (1, 2, 2)
