"""How every ``posematch-*`` command ends on a user error: one line, the same in each command.

A bad option, a missing or unreadable file, a bad record: ``<command>: error: <message>`` on
stderr and exit status 1, no traceback (the messages name the option, file or record; a traceback
would bury them). ``HYDRA_FULL_ERROR=1`` shows the traceback as Hydra does. A run folder that the
failed start left holding only Hydra's own log is removed, with the empty ``outputs/...`` folders
above it, so a mistyped command leaves nothing behind. In a Hydra multirun the error propagates
unchanged: the sweep runs its other jobs and fails at the end, as Hydra does.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

# Errors a user causes and can fix: the project raises ValueError (BadRecordError included) and
# OSError (FileNotFoundError...) naming the culprit; omegaconf and Hydra raise theirs for a
# missing ``???`` key or a failed instantiation. Anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    OSError,
    OmegaConfBaseException,
    HydraException,
)

# What Hydra writes into a run folder before any code of ours runs (the job's log file; .hydra/
# where the command keeps Hydra's output_subdir).
_HYDRA_FILES = {".hydra"}


@contextlib.contextmanager
def user_errors(command: str) -> Iterator[None]:
    """Run a command's body; a user error ends the process as the module docstring says."""
    try:
        yield
    except USER_ERRORS as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or _multirun() or not _is_user_error(err):
            raise
        _remove_unused_run_dir()
        sys.stderr.write(f"{command}: error: {_message(err)}\n")
        sys.stderr.flush()
        raise SystemExit(1) from None


def _is_user_error(err: BaseException) -> bool:
    """A Hydra error is the user's when it wraps none or one of theirs (a bad option or file named
    by a constructor, an unknown ``_target_``); a TypeError or KeyError raised inside a
    constructor is a bug, and keeps its traceback."""
    if not isinstance(err, HydraException):
        return True
    cause = err.__cause__
    return cause is None or isinstance(cause, (*USER_ERRORS, ImportError))


def _message(err: BaseException) -> str:
    """The error's own text: for a failed instantiation its cause's (which names the option),
    for omegaconf's errors the first line (the rest is the key path again)."""
    cause = err.__cause__
    if isinstance(err, HydraException) and isinstance(cause, USER_ERRORS):
        return _message(cause)
    if isinstance(err, MissingMandatoryValue) and err.full_key:
        return f"{err.full_key} is required (add {err.full_key}=... to the command)"
    text = str(err).strip() or type(err).__name__
    if isinstance(err, OmegaConfBaseException):
        text = text.splitlines()[0]
    return text


def _multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _remove_unused_run_dir() -> None:
    """Remove this job's output folder when it holds nothing but Hydra's own files, then its empty
    parents inside the working directory (``outputs/train/<date>``). A folder that holds anything
    else (a resumed run, the user's files) is left as it is."""
    if not HydraConfig.initialized() or os.environ.get("RANK", "0") != "0":
        return  # under torchrun the ranks share the folder: rank 0 alone tidies it
    hydra_cfg = HydraConfig.get()
    folder = Path(hydra_cfg.runtime.output_dir).resolve()
    cwd = Path.cwd().resolve()
    if folder == cwd or not folder.is_dir():
        return  # a command that writes into the working directory itself
    log_file = f"{hydra_cfg.job.name}.log"
    entries = {p.name for p in folder.iterdir()}
    if not entries <= _HYDRA_FILES | {log_file}:
        return
    try:
        for name in entries:
            path = folder / name
            if path.is_dir():
                for child in path.iterdir():
                    child.unlink()
                path.rmdir()
            else:
                path.unlink()
        folder.rmdir()
        folder = folder.parent
        while cwd in folder.parents and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent
    except OSError:
        pass  # tidying is a courtesy: the error message matters more
