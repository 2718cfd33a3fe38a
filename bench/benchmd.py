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


def merge_saved(into: dict, other: dict, depth: int) -> None:
    """Add ``other``'s commands, machine and runs to ``into``; a bench's results nest ``depth`` keys down to a seed.

    A recorded run of ``into`` wins, unless it failed (``"error"`` in its row).
    """
    into["commands"] = [*dict.fromkeys([*into.get("commands", []), *other.get("commands", [])])]
    into.setdefault("machine", other.get("machine"))

    def fill(mine: dict, theirs: dict, level: int) -> None:
        for key, value in theirs.items():
            if level > 1:
                fill(mine.setdefault(key, {}), value, level - 1)
            elif key not in mine or "error" in mine[key]:
                mine[key] = value

    fill(into.setdefault("results", {}), other.get("results", {}), depth)


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
