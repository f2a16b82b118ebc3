"""What every command of the toolkit accepts on its command line, checked as it is parsed, before anything is
computed or written: a bad value stops the command with one line on stderr and exit status 2.

`CommandParser` is argparse's parser with a one-line error (argparse's own prints the usage too); the
functions below are its argument types, so `--P 0`, `--bootstrap -3`, `--json missing/fit.json` or
`--out a-file` are refused by the option's name."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path


class CommandParser(argparse.ArgumentParser):
    """argparse with errors in one line: `error: <prog>: <what>; see <prog> --help`, exit status 2."""

    def error(self, message: str):
        print(f"error: {self.prog}: {message}; see {self.prog} --help", file=sys.stderr)
        sys.exit(2)


def positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number >= 1")
    return value


def count(text: str) -> int:
    """A number of things that may be none (resamples, rollout sizes): a whole number >= 0."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number >= 0 (0: none)")
    return value


def resamples(text: str) -> int:
    """A bootstrap's resamples: 0 (none) or at least 2."""
    value = count(text)
    if value == 1:
        raise argparse.ArgumentTypeError("1 resample gives no interval; give 0 (none) or at least 2, usually 1000")
    return value


def positive_float(text: str) -> float:
    value = _float(text)
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number > 0")
    return value


def fraction(text: str) -> float:
    """An efficiency or utilisation: a fraction of a peak, in (0, 1]."""
    value = _float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a fraction of the peak in (0, 1], e.g. 0.4")
    return value


def positive_floats(text: str) -> list[float]:
    """Comma-separated finite numbers > 0, e.g. budgets `1e21,1e22`."""
    return [positive_float(part) for part in _parts(text)]


def stream_counts(text: str) -> list[int]:
    """Comma-separated stream counts P >= 1, e.g. `1,2,4,8`."""
    return [positive_int(part) for part in _parts(text)]


def positive_ints(text: str) -> list[int]:
    return [positive_int(part) for part in _parts(text)]


def output_file(text: str) -> Path:
    """A file the command will write: its folder must exist and be writable, and it must not be a folder."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name in it, e.g. {path / 'out.json'}")
    _check_writable_folder(path.parent, text, create=False)
    return path


def output_folder(text: str) -> Path:
    """A folder the command will create if needed: it must not be a file, nor lie below one, and the nearest
    folder that exists must be writable."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; give a folder")
    _check_writable_folder(path, text, create=True)
    return path


def check_output_folder(path: str | Path, setting: str) -> None:
    """`output_folder` for a path that does not come through argparse (a Hydra setting): raises ValueError."""
    try:
        output_folder(str(path))
    except argparse.ArgumentTypeError as error:
        raise ValueError(f"{setting}={path}: {error}") from None


MIN_RESAMPLES = 100  # below this a 95% interval rests on its two or three most extreme resamples


def warn_if_few_resamples(n: int) -> None:
    """Too few resamples for the intervals a command prints: said on stderr, and the command goes on."""
    if n < MIN_RESAMPLES:
        print(f"warning: --bootstrap {n}: too few resamples for a 95% interval (its ends are the 2.5% and 97.5% "
              f"quantiles of {n} fits); the intervals are rough, use 1000", file=sys.stderr)


def _check_writable_folder(folder: Path, text: str, create: bool) -> None:
    """``folder`` (create: its nearest existing ancestor) must be a folder this user can write to."""
    existing = folder
    if create:
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise argparse.ArgumentTypeError(f"{existing} is a file, so {text} cannot be made; give another folder")
    elif not folder.is_dir():
        what = "is a file" if folder.exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"the folder {folder} {what}; create it first or give another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{existing} is not writable; give a folder you can write to")


def _parts(text: str) -> list[str]:
    parts = [part.strip() for part in str(text).split(",")]
    if not all(parts):
        raise argparse.ArgumentTypeError(f"{text!r}: write values separated by commas, e.g. 1,2,4")
    return parts


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if math.isnan(value):
        raise argparse.ArgumentTypeError("nan is not a value; give a number")
    return value
