"""The cache folder that model files are assembled into, and the lock every assembler takes.

Rules: a file or folder is assembled into a temp entry `<name>.<random>.part` beside its target and renamed into
place, so no reader sees half of it. Assemblers of one target take `<name>.lock` (flock) in turn; the one holding
it first deletes the `.part` entries that killed starts left behind, since under the lock no live one writes.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """The folder that holds assembled model files: $STEPAUDIO_RT_CACHE or ~/.cache/stepaudio-rt."""
    env = os.environ.get("STEPAUDIO_RT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "stepaudio-rt"


def cache_hint(exc: OSError, free: str) -> str:
    """What to do about `exc`, when it happened in the cache folder, which the user may never have named: ' (the
    model cache, DIR: set STEPAUDIO_RT_CACHE to a writable folder with `free` free)'; '' for an error elsewhere."""
    cache = default_cache_dir()
    if not exc.filename or not Path(exc.filename).is_relative_to(cache):
        return ""
    return f" (the model cache, {cache}: set STEPAUDIO_RT_CACHE to a writable folder with {free} free)"


def check_writable(folder: Path) -> None:
    """Raises the OSError that writing a file into `folder` (made if absent) meets, before a model load that would
    meet it minutes later."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:  # named by the folder: the probe's own random file name means nothing to a user
        raise OSError(exc.errno, exc.strerror, str(folder)) from exc


@contextlib.contextmanager
def assembling(target: Path) -> Iterator[None]:
    """Hold the assembly lock of `target` (creating its folder) with the stale `.part` entries of it removed.

    Callers check again inside the block whether another start finished `target` while they waited. The kernel
    drops the lock of a process that dies, so a killed start never blocks the next one.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(target.name + ".lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # A second start sat silent under "loading ..." while the first one's progress bar ran elsewhere.
            logger.info("waiting for another start to finish assembling %s", target)
            fcntl.flock(lock, fcntl.LOCK_EX)
        _remove_stale_parts(target)
        yield


def _remove_stale_parts(target: Path) -> None:
    # A start killed mid-assembly (kill -9, a closed terminal's SIGHUP: no `finally` runs) leaves its temp entry,
    # hundreds of MB, which nothing else would ever delete.
    for stale in target.parent.glob(target.name + ".*.part"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
