"""Errors the fitter raises on bad input. Each subclasses ValueError so callers can catch either."""


class InvalidTableError(ValueError):
    """A results table the fitter cannot use; the message names the rows and what to do."""


class UnknownNameError(ValueError):
    """An unknown data set, form, method or split name; the message lists the known ones."""
