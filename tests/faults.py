"""A callback that faults a fit from inside, at a chosen moment: fits in child processes import it
(the tests put this folder on PYTHONPATH), so a kill lands exactly where the test wants it."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger


class SignalOnce(Callback):
    """Sends `signal` (e.g. SIGKILL: no cleanup, no final status; a list: one per step) to its own
    process at `hook` of each of `steps`, once per step over all processes of a test (a marker file
    `<marker>.<step>` remembers), so the rerun of the same command goes past."""

    def __init__(self, steps: list[int], marker: str, hook: str = "on_train_batch_start",
                 signal: str | list[str] = "SIGKILL") -> None:
        self.steps, self.marker, self.hook = steps, marker, hook
        self.signals = dict(zip(steps, [signal] * len(steps) if isinstance(signal, str) else signal))

    def _fire(self, hook: str, step: int) -> None:
        done = Path(f"{self.marker}.{step}")
        if hook == self.hook and step in self.steps and not done.exists():
            done.touch()
            os.kill(os.getpid(), getattr(signal, self.signals[step]))

    def on_train_batch_start(self, trainer, *args) -> None:
        self._fire("on_train_batch_start", trainer.global_step)

    def on_validation_start(self, trainer, *args) -> None:
        self._fire("on_validation_start", trainer.global_step)


def signal_once(marker: Path, steps: list[int], hook: str = "on_train_batch_start", sig: str | list[str] = "SIGKILL") -> dict:
    """The `fixed` entry of a sweep file (or a config's callback) that adds `SignalOnce`."""
    init = {"steps": steps, "marker": str(marker), "hook": hook, "signal": sig}
    return {"trainer.callbacks+": {"class_path": "faults.SignalOnce", "init_args": init}}


class FolderLogger(TensorBoardLogger):
    """TensorBoard logging into `folder` itself, named by no `save_dir` or `version` that the settings
    show: only the trainer's resolved `log_dir` says where it writes."""

    def __init__(self, folder: str) -> None:
        super().__init__(save_dir=str(Path(folder).parent), name="", version=Path(folder).name)
