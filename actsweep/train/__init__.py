"""Training: `ActSweepModule` (loss, AdamW groups, schedules, evaluation, logging), the progress bar,
and the LightningCLI that joins the module to the data.

Imports the model, the data and the statistics; never the studies or the top-level CLI.
"""

from actsweep.train.module import ActSweepModule

__all__ = ["ActSweepModule"]
