"""The `actsweep` command: LightningCLI's fit/validate/test, plus `sweep` and `report`."""

from __future__ import annotations

import sys

import sys

from lightning.pytorch.cli import LightningCLI

from .data import TextDataModule
from .errors import ActSweepError
from .module import ActSweepModule


class ActSweepCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # Sizes come from the data; the model never repeats them.
        parser.link_arguments("data.block_size", "model.block_size")
        parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")
        parser.link_arguments("seed_everything", "data.seed")


def run_cli(args: list[str] | None = None) -> ActSweepCLI:
    return ActSweepCLI(
        ActSweepModule,
        TextDataModule,
        seed_everything_default=1337,
        save_config_kwargs={"overwrite": True},
        args=args,
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point; `argv=None` reads the command line (LightningCLI warns if given both).

    `sweep` and `report` are the runner's own argparse commands; everything else is LightningCLI's.
    Bad input ends with one line naming the problem and the fix, and exit status 2."""
    args = sys.argv[1:] if argv is None else argv
    try:
        if args[:1] in (["sweep"], ["report"]):
            from . import report, sweep

            sys.exit({"sweep": sweep.main, "report": report.main}[args[0]](args[1:]))
        run_cli(argv)
    except ActSweepError as err:
        print(f"actsweep: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
