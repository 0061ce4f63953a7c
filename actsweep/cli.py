"""The `actsweep` command: LightningCLI's fit/validate/test, plus `sweep`, `report`, `plan-seeds` and `sample`.

Lightning is imported only where a command needs it, so `sweep` and `report` start quickly.
"""

from __future__ import annotations

import errno
import importlib
import sys

from actsweep.errors import ActSweepError

# Commands of our own, imported only when asked for (Lightning is slow to import).
COMMANDS = {"sweep": "actsweep.study.runner", "report": "actsweep.study.report", "plan-seeds": "actsweep.study.seeds",
            "sample": "actsweep.sample"}
# OS errors that mean "this place cannot be written": the fix is the user's, not the code's.
FULL = {errno.ENOSPC, errno.EDQUOT}
UNWRITABLE = FULL | {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST, errno.EFBIG}


def write_error(err: OSError) -> str:
    """One line naming the place that could not be written and what to do."""
    where = err.filename or "the output"
    folders = "--trainer.logger.save_dir (logs, checkpoints), --data.cache_dir (token cache)"
    if err.errno in FULL:
        return f"no space left on the device while writing {where}; free some space, or write elsewhere: {folders}"
    return f"cannot write {where} ({err.strerror}); choose a writable folder: {folders}"


def main(argv: list[str] | None = None) -> None:
    """Entry point; `argv=None` reads the command line (LightningCLI warns if given both).

    The names in `COMMANDS` are argparse commands of their own; everything else is LightningCLI's.
    Bad input ends with one line naming the problem and the fix, and exit status 2."""
    args = sys.argv[1:] if argv is None else argv
    try:
        if args[:1] and args[0] in COMMANDS:
            command = importlib.import_module(COMMANDS[args[0]])
            sys.exit(command.main(args[1:]))
        from actsweep.train.cli import run_cli

        run_cli(argv)
    except ActSweepError as err:
        print(f"actsweep: error: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:
        if err.errno not in UNWRITABLE:
            raise
        print(f"actsweep: error: {write_error(err)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
