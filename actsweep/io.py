"""Write a file so that readers see the old content or the new, never half of it; checksums of files."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

HASH_BLOCK = 1 << 24


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


def remove_orphans(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of `path` (`<name>.tmp-<pid>`, `.<name>.tmp-<pid>`) whose writer
    is no longer alive, as a killed process leaves them; returns what was deleted."""
    path = Path(path)
    removed = []
    for tmp in [*path.parent.glob(f"{path.name}.tmp-*"), *path.parent.glob(f".{path.name}.tmp-*")]:
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
    if sha256_file(path) not in digests:
        return f"damaged (sha256 differs from the one recorded in {record.name} when it was written)"
    return None
