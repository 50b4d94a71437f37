"""The README's and docs' snippets run as pasted (issue 9: the codec snippet did not), and every
command the README shows composes into a valid configuration (issue 16): its groups, experiments
and options exist."""

from __future__ import annotations

import re
import shlex

import pytest
import torch
from hydra import compose, initialize_config_dir

from tests.conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# The command -> its Hydra config (conf/<name>.yaml).
CONFIGS = {
    "posematch-train": "train",
    "posematch-eval": "evaluate",
    "posematch-infer": "infer",
    "posematch-diagnose": "diagnose",
    "posematch-export": "export",
    "posematch-check-data": "check_data",
}


def python_blocks() -> list[str]:
    return [
        block
        for path in DOCS
        for block in re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)
    ]


def readme_commands() -> list[str]:
    """The Hydra command lines of the README's bash blocks (continuations joined), but those
    with a placeholder (``...``), a folder of the user's (``$PWD``) or ``--help``."""
    text = (REPO / "README.md").read_text()
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #", 1)[0].strip()
            if line.startswith("torchrun"):
                line = "posematch-train " + line.split("posematch.cli.train", 1)[1]
            if "--help" in line.split():
                continue  # prints the help; composes nothing (tests/cli/test_help_and_errors.py)
            if line.split(" ", 1)[0] in CONFIGS and "..." not in line and "$PWD" not in line:
                lines.append(line)
    return lines


def test_the_codec_snippet_runs_and_means_what_it_says():
    block = next(b for b in python_blocks() if "DotCodec(" in b and "crop_xy" in b)
    scope: dict = {}
    exec(compile(block, "docs (codec snippet)", "exec"), scope)
    # Dots at a quarter of the input coordinates (stride 4), both labelled.
    torch.testing.assert_close(scope["targets"].keypoints, scope["keypoints"] / 4)
    assert scope["targets"].weights.tolist() == [[1.0, 1.0]]
    assert scope["crop_xy"].shape == (1, 2, 2)


def test_the_readme_shows_commands_and_stays_short():
    assert len(readme_commands()) >= 8
    assert len((REPO / "README.md").read_text().splitlines()) < 300


@pytest.mark.parametrize("line", readme_commands())
def test_every_readme_command_composes(line):
    words = shlex.split(line)
    # A sweep (-m key=a,b,c) composes once per value: the first stands for them.
    overrides = [
        re.sub(r"=([^\[\]]*?),.*$", r"=\1", w) if "-m" in words else w
        for w in words[1:]
        if not w.startswith("-")
    ]
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose(CONFIGS[words[0]], overrides=overrides)
    assert cfg is not None
    if (
        words[0] == "posematch-train"
        and "loss" in cfg
        and "SinkhornMatchingLoss" in str(cfg.loss.get("_target_"))
    ):
        # The README's matching-loss commands are recipes that train: not the relu head that dies.
        assert cfg.model.head.activation != "none", line
