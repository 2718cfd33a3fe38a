"""What every ``medclass`` command shares: help formatting, ``-v``/``-q`` and logging to stderr, table printing."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

_HANDLER_NAME = "medclass-cli"


class HelpFormatter(argparse.HelpFormatter):
    """Help text that shows each option's default, when it has a meaningful one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "%(default)" in text or default in (None, False, argparse.SUPPRESS) or default == []:
            return text
        if action.option_strings or action.nargs in ("?", "*"):
            text += " (default: %(default)s)"
        return text


def verbosity_parent() -> argparse.ArgumentParser:
    """A parent parser with ``-v``/``--verbose`` and ``-q``/``--quiet``, given to every subcommand."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_mutually_exclusive_group()
    g.add_argument("-v", "--verbose", action="store_true", help="more detail (debug messages)")
    g.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only; no progress bar")
    return p


class _StderrHandler(logging.StreamHandler):
    """A stream handler that writes to whatever ``sys.stderr`` is when a message comes (so that a redirected or
    replaced stderr, as in tests, is never written after it is closed)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # set by StreamHandler.__init__; always follow sys.stderr instead
        pass


@contextlib.contextmanager
def cli_logging(verbose: bool = False, quiet: bool = False) -> Iterator[None]:
    """While a command runs, send the ``medclass`` loggers' messages to stderr as bare lines (INFO; DEBUG with
    ``verbose``, WARNING with ``quiet``); afterwards the logger is as it was (the library alone logs nothing)."""
    logger = logging.getLogger("medclass")
    handler = _StderrHandler()
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def print_table(rows: list[list[Any]], header: list[str]) -> None:
    """Print ``rows`` under ``header`` as aligned columns on stdout."""
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for j, r in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if j == 0:
            print("  ".join("-" * w for w in widths))


def set_options(items: list[str] | None) -> dict[str, Any]:
    """``--set section.key=value`` items as dotted options of :mod:`medclass.api` (``{"train.ema": 0}``)."""
    from medclass.config_overrides import parse_set

    return _dotted(parse_set(items or []))


def _dotted(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value and prefix.count(".") < 1 and key != "per_modality":
            out.update(_dotted(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
