"""Errors the fitter raises on bad input (each subclasses ValueError so callers can catch either), and how every
command of the toolkit reports an error its user can fix: one line, exit status 2."""

import functools
import sys


class InvalidTableError(ValueError):
    """A results table the fitter cannot use; the message names the rows and what to do."""


class UnknownNameError(ValueError):
    """An unknown data set, form, method or split name; the message lists the known ones."""


def report_error(error: Exception) -> int:
    """What every command does with an error its user can fix: `error: <message>` on stderr, exit status 2."""
    print(f"error: {error}", file=sys.stderr)
    return 2


def warn_if_degenerate(result) -> None:
    """A plan or an optimum from a law at a bound or not converged extrapolates a law the data did not pin down:
    said on stderr (the command goes on)."""
    if result.status != "converged" or result.at_bound:
        where = f" (at a bound: {', '.join(result.at_bound)})" if result.at_bound else ""
        print(f"warning: the fit's status is {result.status}{where}: the data do not pin the law down, so this "
              "plan is not to be trusted; add runs (more sizes or P) and fit again", file=sys.stderr)


def exits_on(*kinds: type[Exception]):
    """Decorates a command's `main(argv) -> int`: an error of `kinds` (ValueError, whose subclasses all our
    errors are, by default) ends it through `report_error` instead of a traceback."""
    kinds = kinds or (ValueError,)

    def decorate(main):
        @functools.wraps(main)
        def guarded(*args, **kwargs):
            try:
                return main(*args, **kwargs)
            except kinds as error:
                return report_error(error)

        return guarded

    return decorate
