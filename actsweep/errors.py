"""Errors that mean "the input is wrong" rather than "the code is wrong".

The CLI prints these as one line that names the problem and the fix, with no traceback, and exits
with status 2. They subclass the built-in error a caller would expect (ValueError, OSError, ...).
"""

import argparse


class ActSweepError(Exception):
    """Bad input from the user: a config value, a path, a corpus, a sweep file."""


class ConfigError(ActSweepError, ValueError):
    """A setting that is not allowed or sizes that do not fit."""


class MissingPathError(ActSweepError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class OneLineParser(argparse.ArgumentParser):
    """Usage errors are bad input too: one line, not a usage dump."""

    def error(self, message: str):
        raise ConfigError(f"{message} (see {self.prog} --help)")


def check_choice(switch: str, value: object, choices) -> None:
    """Refuse a value outside a switch's named choices (a registry's keys, or a tuple of names), naming them."""
    if value not in choices:
        raise ConfigError(f"unknown {switch} {value!r}; choose one of {', '.join(map(str, choices))}")
