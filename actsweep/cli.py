"""The `actsweep` command: LightningCLI's fit/validate/test, plus `sweep` and `report`.

Lightning is imported only for the LightningCLI commands, so `sweep` and `report` start at once.
"""

from __future__ import annotations

import sys

from .errors import ActSweepError


def main(argv: list[str] | None = None) -> None:
    """Entry point; `argv=None` reads the command line (LightningCLI warns if given both).

    `sweep` and `report` are the runner's own argparse commands; everything else is LightningCLI's.
    Bad input ends with one line naming the problem and the fix, and exit status 2."""
    args = sys.argv[1:] if argv is None else argv
    try:
        if args[:1] in (["sweep"], ["report"]):
            from . import report, sweep

            sys.exit({"sweep": sweep.main, "report": report.main}[args[0]](args[1:]))
        from .lightning_cli import run_cli

        run_cli(argv)
    except ActSweepError as err:
        print(f"actsweep: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
