"""Write one benchmark's section of ``BENCHMARKS.md`` (between ``<!-- name:start -->`` and ``<!-- name:end -->``); load
its saved results."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

PATH = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
_NEW = "# Benchmarks\n\nLatest figures, each with the command that produced it.\n"


def update_section(name: str, heading: str, body: str, path: Path = PATH) -> None:
    """Replace the marked section ``name`` (or append it under ``## heading``) with ``body``."""
    text = path.read_text() if path.exists() else _NEW
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.strip()}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + f"\n\n## {heading}\n\n{block}\n"
    path.write_text(text)


def load_results(path: Path, merge_from: list[Path] | None, merge: Callable[[dict, dict], None]) -> dict:
    """A bench's saved results (``{"results": {}}`` if none), with the files of ``merge_from`` merged in and saved.

    Benches run in parallel write their own ``--results`` files; ``--merge`` brings them into the main one.
    """
    saved = json.loads(path.read_text()) if path.exists() else {"results": {}}
    for other in merge_from or []:
        merge(saved, json.loads(other.read_text()))
    if merge_from:
        path.write_text(json.dumps(saved, indent=1) + "\n")
    return saved
