"""When to draw a progress bar: only for a person watching a terminal, never into a log file or CI output."""

from __future__ import annotations

import sys
from typing import Any


def on_terminal(stream: Any = None) -> bool:
    """Whether ``stream`` (default ``sys.stderr``, where tqdm draws) is an interactive terminal.

    Args:
        stream: A file-like object; ``None`` means the current ``sys.stderr``.

    Returns:
        ``True`` only for a stream whose ``isatty()`` says so; ``False`` for files, pipes, captured
        output, a closed stream or no stream at all.
    """
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # None (no console) or a closed stream
        return False


def show_progress(progress: bool) -> bool:
    """A progress bar is drawn when the caller allows one (``progress``) and stderr is a terminal."""
    return bool(progress) and on_terminal()
