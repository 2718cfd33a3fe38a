"""The triage worklist: the node's classified studies, most urgent first.

Order: studies with a series flagged for referral first, then by urgency (the probability of the urgent or
positive class; a study takes its most urgent series), then the oldest first. Rows hold UIDs, results and
times only: no patient name or ID (the PACS shows who the study belongs to).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any


def rank(series_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Worklist rows, one per study, from the queue's ``done`` series rows (see the module docstring)."""
    studies: dict[str, dict[str, Any]] = {}
    for row in series_rows:
        res = row.get("result") or {}
        item = {
            "study_uid": row["study_uid"],
            "urgency": float(res.get("urgency", 0.0)),
            "refer": bool(res.get("refer")),
            "finding": res.get("label"),
            "probabilities": res.get("probs", {}),
            "threshold": res.get("threshold"),
            "series": 1,
            "series_uid": row["series_uid"],
            "sr_uid": res.get("sr_uid"),
            "received": row.get("received"),
            "finished": row.get("finished"),
        }
        old = studies.get(row["study_uid"])
        if old is None:
            studies[row["study_uid"]] = item
            continue
        item["series"] = old["series"] + 1
        item["received"] = min(x for x in (old["received"], item["received"]) if x is not None)
        if (old["refer"], old["urgency"]) >= (item["refer"], item["urgency"]):
            old["series"], old["received"] = item["series"], item["received"]
        else:
            studies[row["study_uid"]] = item
    return sorted(studies.values(), key=lambda r: (not r["refer"], -r["urgency"], r["received"] or 0.0))


def read_worklist(state_dir: str | Path, limit: int = 500) -> list[dict[str, Any]]:
    """The worklist of a node's state folder (read-only; the node may be running), at most ``limit`` studies.

    Returns:
        Rows with ``rank``, ``study_uid``, ``urgency``, ``refer``, ``finding``, ``probabilities``, ``threshold``,
        ``series`` (classified series), ``series_uid`` and ``sr_uid`` of the most urgent one, ``received``,
        ``finished`` (Unix times). Empty when the node has not classified anything yet.
    """
    import json

    db_path = Path(state_dir) / "queue.sqlite"
    if not db_path.is_file():
        return []
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
    try:
        rows = db.execute(
            "SELECT series_uid, study_uid, first_received, finished, result FROM series WHERE state='done'"
        ).fetchall()
    finally:
        db.close()
    series = [
        {"series_uid": s, "study_uid": st, "received": r, "finished": f, "result": json.loads(res) if res else None}
        for s, st, r, f, res in rows
    ]
    out = rank(series)[:limit]
    for i, row in enumerate(out, 1):
        row["rank"] = i
    return out
