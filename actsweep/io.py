"""Files that stay whole and folders that one process owns: atomic writes, per-run locks."""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

from actsweep.errors import ActSweepError


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, flush it to disk, then rename it over `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# -- one process per run folder -------------------------------------------------------------------

LOCK_FILE = ".lock"
# A process that hands its lock to a child names the open descriptor here (see `hold_run`).
LOCK_FD_VAR = "ACTSWEEP_RUN_LOCK_FD"
_held: dict[Path, int] = {}  # run folders this process holds, kept open until it exits


class RunBusy(ActSweepError, BlockingIOError):
    """Another live process holds the run folder (a sweep, a fit, a SLURM task)."""


def lock_run(run_dir: str | os.PathLike) -> int:
    """An open descriptor holding an exclusive `flock` on `run_dir/.lock`; raises `RunBusy` if taken.

    The kernel drops the lock when every descriptor sharing it is closed, that is when its holders
    die however they die (SIGKILL included): a dead process never keeps a run. A child process given
    the descriptor (`pass_fds`) shares the lock. The file holds the holder's process id, for messages.
    """
    path = Path(run_dir) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise RunBusy(f"run folder {path.parent} is in use by process {holder} (a sweep, fit or SLURM task); "
                      "wait for it to end or stop it") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def hold_run(run_dir: str | os.PathLike) -> None:
    """Hold `run_dir` until this process exits: the lock a parent passed down (`LOCK_FD_VAR`), or a new one."""
    run_dir = Path(run_dir).resolve()
    if run_dir in _held:
        return
    inherited = os.environ.get(LOCK_FD_VAR)
    if inherited and _same_file(int(inherited), run_dir / LOCK_FILE):
        _held[run_dir] = int(inherited)
        return
    _held[run_dir] = lock_run(run_dir)


def _same_file(fd: int, path: Path) -> bool:
    try:
        ours, theirs = os.fstat(fd), path.stat()
    except OSError:
        return False
    return (ours.st_dev, ours.st_ino) == (theirs.st_dev, theirs.st_ino)


def clear_run(run_dir: str | os.PathLike) -> None:
    """Empty a held run folder for a fresh start, keeping its lock file (removing it would free the run)."""
    for entry in Path(run_dir).iterdir():
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
