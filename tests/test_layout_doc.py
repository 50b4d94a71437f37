"""docs/layout.md, the repository's map, says what the import-linter contracts enforce (issue 14):
its layers and leaves are read from the file and from pyproject.toml and must be equal."""

from __future__ import annotations

import re

import tomllib

from tests.conftest import REPO


def contracts() -> list[dict]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return data["tool"]["importlinter"]["contracts"]


def doc_section(marker: str) -> str:
    text = (REPO / "docs" / "layout.md").read_text()
    after = text.split(f"<!-- {marker}", 1)[1].split("-->\n", 1)[1]
    return after.split("\n\n", 1)[0]


def test_the_layers_of_the_map_are_the_contracts_layers():
    layers = next(c for c in contracts() if c["type"] == "layers")["layers"]
    documented = re.findall(r"^\d+\. `(.+)`$", doc_section("layers"), flags=re.M)
    assert documented == layers


def test_the_leaves_of_the_map_are_the_contracts_leaves():
    leaves = contracts()[0]["source_modules"]
    assert re.findall(r"^- `(posematch\.\w+)`$", doc_section("leaves"), flags=re.M) == leaves
