"""``--help`` for the Hydra commands, written from the command's own config file.

Hydra's help lists every config group of ``conf/`` and dumps the whole composed config. A
command's help here starts with what it does (the config file's header comment), then the keys
it requires (``???``), the config groups it composes (its defaults list) with their options (the
files in ``conf/<group>/``), and its own options with their comments. ``--cfg job`` still prints
the composed config and ``--hydra-help`` Hydra's flags.
"""

from __future__ import annotations

import functools
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import yaml

from posematch.cli.common import CONFIG_PATH


def command_help(config_name: str, conf_dir: Path) -> str:
    """The help text of the command whose config is ``conf_dir/<config_name>.yaml``."""
    path = conf_dir / f"{config_name}.yaml"
    lines = path.read_text().splitlines()
    header = []
    for line in lines:
        if not line.startswith("#"):
            break
        header.append(line[1:].removeprefix(" ") if line != "#" else "")
    parsed = yaml.safe_load(path.read_text()) or {}
    required = [key for key, value in parsed.items() if value == "???"]
    groups = _groups(parsed.get("defaults", []))
    out = [*header, ""]
    if required:
        out.append("Required: " + " ".join(f"{key}=..." for key in required))
        out.append("")
    if groups:
        out.append("Config groups (group=option; a group's files are in conf/<group>/):")
        for group, default in groups:
            options = _options(conf_dir / group)
            shown = ", ".join(options) if options else "(none)"
            out += textwrap.wrap(
                f"{group} (default {default}): {shown}",
                width=100,
                initial_indent="  ",
                subsequent_indent="      ",
                break_on_hyphens=False,
            )
        out.append("")
    out.append(f"Options (conf/{config_name}.yaml; any key of the composed config: key=value):")
    out += [f"  {line}" for line in _own_options(lines)]
    out += [
        "",
        "--cfg job prints the composed config; --hydra-help lists Hydra's own flags.",
        "A user error prints one line; HYDRA_FULL_ERROR=1 adds the traceback.",
    ]
    return "\n".join(out)


def _groups(defaults: list) -> list[tuple[str, str]]:
    """(group, default option) of a defaults list. Skipped: ``_self_``, ``override hydra/...`` and
    the empty places (``loss: null``) that only an experiment fills; ``experiment`` is kept."""
    found = []
    for entry in defaults:
        if not isinstance(entry, dict):
            continue
        for key, value in entry.items():
            if key.startswith("override ") or key.startswith("hydra/"):
                continue
            if value is None and key != "experiment":
                continue
            found.append((key, "none" if value is None else str(value)))
    return found


def _options(folder: Path) -> list[str]:
    """The group's options: its yaml files, sub-folders as ``sub/name``."""
    if not folder.is_dir():
        return []
    return sorted(str(p.relative_to(folder).with_suffix("")) for p in folder.rglob("*.yaml"))


def _own_options(lines: list[str]) -> list[str]:
    """The config file's top-level options with their comments: every line after the defaults
    list up to the ``hydra:`` block."""
    own: list[str] = []
    in_defaults = False
    for line in lines:
        if line.startswith("#") and not own and not in_defaults:
            continue  # the header
        if line.startswith("defaults:"):
            in_defaults = True
            continue
        if in_defaults and (line.startswith(" ") or line.startswith("-") or not line.strip()):
            continue
        in_defaults = False
        if line.startswith("hydra:"):
            break
        own.append(line)
    while own and not own[-1].strip():
        own.pop()
    return own


def with_help(config_name: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    """Wrap a ``@hydra.main`` entry point: ``--help`` / ``-h`` print :func:`command_help`
    (Hydra's own help where the config folder is not beside the package)."""

    def wrap(hydra_main: Callable[[], None]) -> Callable[[], None]:
        @functools.wraps(hydra_main)
        def main() -> None:
            if CONFIG_PATH is not None and any(a in ("--help", "-h") for a in sys.argv[1:]):
                print(command_help(config_name, Path(CONFIG_PATH)))
                return
            hydra_main()

        return main

    return wrap
