"""A fit's launcher process: `python -m actsweep.study.child PARENT CPUS -- COMMAND...`.

The sweep starts fits from its pool's threads, where code between fork and exec (`preexec_fn`) is
unsafe (CPython's subprocess docs). So a fit starts as this small process instead, which in its own
single thread asks for SIGTERM when its parent dies (however it dies: SIGKILL too, so a killed sweep
or SLURM task leaves no fit training under PID 1), keeps to its slot's CPUs (inherited by every
thread the fit starts), and then becomes the fit by `exec` (same PID, same file descriptors).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def main(argv: list[str]) -> None:
    parent, cpus, separator, *command = argv
    if separator != "--" or not command:
        sys.exit("usage: python -m actsweep.study.child PARENT CPUS -- COMMAND...")
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
    if os.getppid() != int(parent):  # the parent died before the request took hold
        os._exit(1)
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
