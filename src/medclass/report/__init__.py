"""Self-contained HTML report of a training/evaluation run (inline CSS and SVG, no external resources)."""

from __future__ import annotations

from medclass.report.html import render_report, write_report

__all__ = ["render_report", "write_report"]
