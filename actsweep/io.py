"""Files that stay whole and folders that one process owns: atomic writes, checksums, per-run locks;
YAML files read strictly (a repeated key is an error, not a silent replacement)."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from actsweep.errors import ActSweepError, ConfigError

HASH_BLOCK = 1 << 24
SAMPLES, SAMPLE_BYTES = 256, 1 << 16  # what `sample_sha256` reads of a file: 16 MB at spread offsets


def check_writable(folder: str | os.PathLike) -> None:
    """Raise, before anything is written, the OSError that creating `folder` (or files in it) would
    meet: its nearest existing ancestor is a file, or a folder this process may not write."""
    path = Path(folder).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OSError(errno.EACCES, os.strerror(errno.EACCES), str(path))


def repeated_key(node: yaml.Node | None) -> tuple[str, int, int] | None:
    """(key, first line, second line) of the first key some mapping under `node` repeats, or None."""
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in first:
                    return key.value, first[key.value], key.start_mark.line + 1
                first[key.value] = key.start_mark.line + 1
            found = repeated_key(value)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        return next(filter(None, map(repeated_key, node.value)), None)
    return None


def check_unique_keys(path: str | os.PathLike, text: str) -> None:
    """Refuse YAML that repeats a key: PyYAML keeps the last one, so a second `model:` section would
    silently replace the first (and every setting it held would fall back to its default)."""
    try:
        found = repeated_key(yaml.compose(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError:
        return  # a syntax error: the reader that follows says where
    if found:
        key, first, second = found
        raise ConfigError(f"{path} repeats the key {key!r} (lines {first} and {second}); keep one and merge them")


def check_config_files(args: list[str]) -> None:
    """Refuse a `--config` file named in `args` that repeats a key (a missing one is the parser's to name)."""
    for path in dict.fromkeys(config_files(args)):
        if Path(path).is_file():
            check_unique_keys(path, Path(path).read_text())


def config_files(args: list[str]) -> list[str]:
    """The files that `--config` options (`--config F` or `--config=F`) in `args` name."""
    pairs = zip(args, [*args[1:], None])
    return [value if flag == "--config" else flag.split("=", 1)[1] for flag, value in pairs
            if (flag == "--config" and value) or flag.startswith("--config=")]


def read_yaml(path: str | os.PathLike) -> Any:
    """The YAML file at `path` (safe types), refused when it repeats a key."""
    text = Path(path).read_text()
    check_unique_keys(path, text)
    return yaml.safe_load(text)


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, flush it to disk, then rename it over `path`.
    A failed write (a full disk) leaves `path` as it was, no temporary file, and an OSError naming `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise naming(err, path) from err
    finally:
        tmp.unlink(missing_ok=True)


def naming(err: OSError, path: str | os.PathLike) -> OSError:
    """`err` as an OSError of the same kind that names `path`, the file the user knows (not a
    temporary one, nor none: a failed `write` names no file)."""
    return type(err)(err.errno, err.strerror or str(err), str(path)) if err.errno else err


def remove_orphans(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of `path` (`<name>.tmp-<pid>`, `.<name>.tmp-<pid>`) whose writer
    is no longer alive, as a killed process leaves them; returns what was deleted."""
    path = Path(path)
    return _remove_dead([*path.parent.glob(f"{path.name}.tmp-*"), *path.parent.glob(f".{path.name}.tmp-*")])


def remove_orphans_in(folder: str | os.PathLike) -> list[Path]:
    """`remove_orphans` for every file of `folder`: what killed writers (a full disk, SIGKILL) left."""
    return _remove_dead([*Path(folder).glob("*.tmp-*"), *Path(folder).glob(".*.tmp-*")])


def _remove_dead(temporaries: list[Path]) -> list[Path]:
    removed = []
    for tmp in temporaries:
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def sample_sha256(path: str | os.PathLike) -> str:
    """sha256 of SAMPLES blocks of SAMPLE_BYTES spread evenly over the file: what a big file (a
    token cache, a corpus) pays instead of the full hash (a change that misses every block goes unseen)."""
    size = os.stat(path).st_size
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for i in range(SAMPLES):
            f.seek(max(0, size - SAMPLE_BYTES) * i // (SAMPLES - 1))
            digest.update(f.read(SAMPLE_BYTES))
    return digest.hexdigest()


def checksum_path(path: str | os.PathLike) -> Path:
    return Path(f"{path}.sha256")


def write_checksum(written: str | os.PathLike, path: str | os.PathLike) -> None:
    """Rename the fsync'd file `written` over `path`, recording its sha256 in `<path>.sha256`.

    The record lists the new digest and the one before, and is written before the rename: a kill
    between the two leaves the old file, which still matches, never a file without its digest."""
    written, path = Path(written), Path(path)
    with open(written, "rb+") as f:
        os.fsync(f.fileno())
    record = checksum_path(path)
    try:
        before = json.loads(record.read_text())["sha256"][:1]
    except (OSError, ValueError, KeyError, TypeError):
        before = []
    write_atomic(record, json.dumps({"sha256": [sha256_file(written), *before]}).encode())
    os.replace(written, path)


def checksum_problem(path: str | os.PathLike) -> str | None:
    """'damaged (…)' when `path` does not match its recorded sha256; None when it does or none was recorded."""
    record = checksum_path(path)
    if not record.exists():
        return None
    try:
        digests = json.loads(record.read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"damaged (unreadable checksum record {record.name})"
    if not isinstance(digests, list) or sha256_file(path) not in digests:
        return f"damaged (sha256 differs from the one recorded in {record.name} when it was written)"
    return None


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
        busy = _busy(fd, path)
        os.close(fd)
        raise busy from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _busy(fd: int, path: Path) -> RunBusy:
    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
    return RunBusy(f"run folder {path.parent} is in use by process {holder} (a sweep, fit or SLURM task); "
                   "wait for it to end or stop it")


def check_free(run_dir: str | os.PathLike) -> None:
    """Raise `RunBusy` if another process holds `run_dir`, without taking it or creating anything: a
    command can refuse a busy run before it builds anything (`hold_run` takes the lock later)."""
    run_dir = Path(run_dir).resolve()
    path = run_dir / LOCK_FILE
    if run_dir in _held or not path.is_file() or inherited_lock(run_dir) is not None:
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # released with the descriptor below
    except BlockingIOError:
        raise _busy(fd, path) from None
    finally:
        os.close(fd)


def hold_run(run_dir: str | os.PathLike) -> None:
    """Hold `run_dir` until this process exits: the lock a parent passed down (`LOCK_FD_VAR`), or a new one."""
    run_dir = Path(run_dir).resolve()
    if run_dir not in _held:
        inherited = inherited_lock(run_dir)
        _held[run_dir] = lock_run(run_dir) if inherited is None else inherited


def inherited_lock(run_dir: Path) -> int | None:
    """The descriptor of `run_dir`'s lock a parent passed down (`LOCK_FD_VAR`), if it is that lock."""
    inherited = os.environ.get(LOCK_FD_VAR)
    return int(inherited) if inherited and _same_file(int(inherited), run_dir / LOCK_FILE) else None


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
