"""argparse types shared by the command lines of annotation_io, model and backend."""

from __future__ import annotations

import argparse

__all__ = ["positive_int"]


def positive_int(text: str, unit: str = "") -> int:
    """An integer >= 1 (argparse type), checked before a command does any work.

    Args:
        text: the option's value.
        unit: what is counted, named in the message (``functools.partial(positive_int, unit="frames")``).
    """
    try:
        value = int(text)
    except ValueError:
        counted = f" of {unit}" if unit else ""
        raise argparse.ArgumentTypeError(f"expected a whole number{counted}, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
