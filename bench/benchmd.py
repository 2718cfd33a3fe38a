"""Write one benchmark's section of ``BENCHMARKS.md``, between ``<!-- name:start -->`` and ``<!-- name:end -->``."""

from __future__ import annotations

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
