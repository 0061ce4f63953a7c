"""LightningCLI for actsweep: `fit`, `validate`, `test` with data sizes linked into the model."""

from __future__ import annotations

from lightning.pytorch.cli import LightningCLI

from .data import TextDataModule
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
