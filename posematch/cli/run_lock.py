"""One training per run folder: a lock file taken before the run writes anything of its own.

``run_dir/.posematch.lock`` holds the holder's host name and process id. A second training into the
same folder is refused while the holder lives; a lock whose process has ended (a killed run) is
stale and replaced, with a warning. (Hydra opens its own log file in the folder before any code of
ours runs; that file is Hydra's.)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("posematch.train")

LOCK_NAME = ".posematch.lock"


class RunFolderBusy(RuntimeError):
    """Another live training holds the run folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _holder(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def run_folder_lock(run_dir: Path) -> Iterator[Path]:
    """Hold ``run_dir``'s lock for the ``with`` block; ``RunFolderBusy`` naming the holder when a
    live process on this host has it. A lock from another host is honoured as live (its process
    cannot be checked from here): remove the file by hand once that run is over."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(path) or {}
            pid, host = holder.get("pid"), holder.get("host")
            if host == me["host"] and isinstance(pid, int) and not _alive(pid):
                log.warning("%s: removing a stale lock of process %d, which has ended", path, pid)
                path.unlink(missing_ok=True)
                continue
            raise RunFolderBusy(
                f"run folder {run_dir} is in use by another training (process {pid} on {host}, "
                f"{path}): one run folder, one training. If that run is over, remove the file"
            ) from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    try:
        yield path
    finally:
        if (_holder(path) or {}).get("pid") == me["pid"]:
            path.unlink(missing_ok=True)
