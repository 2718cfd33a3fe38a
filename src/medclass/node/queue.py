"""The node's durable work queue: received instances, series to classify, their results (one SQLite file).

Every received instance is written to the spool folder (atomically) and recorded here before the node answers
the C-STORE with success, so an instance the sender saw accepted is never lost: a node killed mid-study finds
its series again after a restart (series left ``working`` go back to ``pending``). The instance table is keyed
by SOP Instance UID, so an instance sent twice is kept once and never queues its series a second time; a series
has one row, so it is classified (and reported) once. Nothing here holds a patient's name or identifier: rows
carry UIDs, file names in the spool, states and results.

States of a series: ``pending`` (instances arriving; ready once none came for ``settle_s`` seconds),
``working`` (being classified), ``done`` (results stored in the PACS), ``failed`` (unreadable or unsupported;
``error`` says why, without identifiers).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY,
    series_uid TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    file TEXT NOT NULL,
    received REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_series ON instances(series_uid);
CREATE TABLE IF NOT EXISTS series (
    series_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    state TEXT NOT NULL,
    first_received REAL NOT NULL,
    last_received REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    finished REAL,
    error TEXT,
    result TEXT
);
CREATE INDEX IF NOT EXISTS series_state ON series(state, last_received);
CREATE TABLE IF NOT EXISTS rejected (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received REAL NOT NULL,
    reason TEXT NOT NULL
);
"""


def short_id(uid: str) -> str:
    """A short, stable stand-in for a UID in log lines (SHA-256, first 12 hex digits)."""
    return hashlib.sha256(uid.encode("utf-8")).hexdigest()[:12]


@dataclass
class SeriesJob:
    """One series ready to classify.

    Attributes:
        series_uid: Its Series Instance UID.
        study_uid: Its study's UID.
        files: Spool files of its instances, in order of arrival.
        attempts: How many times it was taken before (a crash mid-way counts).
    """

    series_uid: str
    study_uid: str
    files: list[Path]
    attempts: int


class NodeQueue:
    """The queue in ``folder/queue.sqlite`` with received files under ``folder/spool/``.

    Safe to share between the DICOM server's threads and the worker (one connection, one lock).

    Args:
        folder: The node's state folder (created when missing).
        settle_s: A series is ready once no instance of it arrived for this long.
    """

    def __init__(self, folder: str | Path, *, settle_s: float = 0.5) -> None:
        self.folder = Path(folder)
        self.spool = self.folder / "spool"
        self.spool.mkdir(parents=True, exist_ok=True)
        self.settle_s = settle_s
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.folder / "queue.sqlite", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        with self._tx() as db:  # a node killed mid-series picks it up again
            db.execute("UPDATE series SET state='pending' WHERE state='working'")

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def spool_path(self, sop_uid: str) -> Path:
        """Where the instance ``sop_uid`` is kept (named by a hash of its UID)."""
        return self.spool / f"{hashlib.sha256(sop_uid.encode('utf-8')).hexdigest()[:32]}.dcm"

    def has_instance(self, sop_uid: str) -> bool:
        """Whether ``sop_uid`` was received before."""
        with self._lock:
            return self._db.execute("SELECT 1 FROM instances WHERE sop_uid=?", (sop_uid,)).fetchone() is not None

    def add_instance(self, sop_uid: str, series_uid: str, study_uid: str, file: Path) -> bool:
        """Record a received instance (already written to ``file``); ``False`` when it was received before.

        A new instance of a series still ``pending`` pushes its ready time back; one of a series already
        classified is kept but does not classify the series again (no second report).
        """
        now = time.time()
        with self._tx() as db:
            row = (sop_uid, series_uid, study_uid, file.name, now)
            cur = db.execute("INSERT OR IGNORE INTO instances VALUES (?, ?, ?, ?, ?)", row)
            if cur.rowcount == 0:
                return False
            db.execute(
                "INSERT INTO series (series_uid, study_uid, state, first_received, last_received) "
                "VALUES (?, ?, 'pending', ?, ?) ON CONFLICT(series_uid) "
                "DO UPDATE SET last_received=excluded.last_received WHERE series.state='pending'",
                (series_uid, study_uid, now, now),
            )
            return True

    def take(self, *, now: float | None = None) -> SeriesJob | None:
        """The oldest series that is ready, marked ``working``; ``None`` when none is."""
        now = time.time() if now is None else now
        with self._tx() as db:
            row = db.execute(
                "SELECT series_uid, study_uid, attempts FROM series WHERE state='pending' AND last_received<=? "
                "ORDER BY first_received LIMIT 1",
                (now - self.settle_s,),
            ).fetchone()
            if row is None:
                return None
            db.execute("UPDATE series SET state='working', attempts=attempts+1 WHERE series_uid=?", (row[0],))
            files = db.execute("SELECT file FROM instances WHERE series_uid=? ORDER BY received", (row[0],)).fetchall()
        return SeriesJob(row[0], row[1], [self.spool / f for (f,) in files], int(row[2]))

    def finish(self, series_uid: str, result: dict[str, Any]) -> None:
        """Mark a series ``done`` with its result (what the worklist shows) and delete its received files.

        The PACS holds the images; the node keeps only their UIDs (so that a re-sent instance is still known).
        Files of ``failed`` series stay in the spool for inspection.
        """
        with self._tx() as db:
            db.execute(
                "UPDATE series SET state='done', finished=?, result=?, error=NULL WHERE series_uid=?",
                (time.time(), json.dumps(result), series_uid),
            )
            files = db.execute("SELECT file FROM instances WHERE series_uid=?", (series_uid,)).fetchall()
        for (name,) in files:
            (self.spool / name).unlink(missing_ok=True)

    def fail(self, series_uid: str, error: str) -> None:
        """Mark a series ``failed``; ``error`` must hold no patient identifier."""
        with self._tx() as db:
            db.execute(
                "UPDATE series SET state='failed', finished=?, error=? WHERE series_uid=?",
                (time.time(), error[:500], series_uid),
            )

    def retry_later(self, series_uid: str) -> None:
        """Put a ``working`` series back to ``pending`` (the PACS was unreachable); it is taken again later."""
        with self._tx() as db:
            db.execute(
                "UPDATE series SET state='pending', last_received=? WHERE series_uid=?", (time.time(), series_uid)
            )

    def reject(self, reason: str) -> int:
        """Record an object that was not queued (malformed, unsupported); returns its id for the log line.

        ``reason`` must hold no patient identifier.
        """
        with self._tx() as db:
            cur = db.execute("INSERT INTO rejected (received, reason) VALUES (?, ?)", (time.time(), reason[:300]))
            return int(cur.lastrowid or 0)

    def counts(self) -> dict[str, int]:
        """Series per state, ``instances`` and ``rejected`` objects."""
        with self._lock:
            out = dict(self._db.execute("SELECT state, COUNT(*) FROM series GROUP BY state").fetchall())
            out["instances"] = self._db.execute("SELECT COUNT(*) FROM instances").fetchone()[0]
            out["rejected"] = self._db.execute("SELECT COUNT(*) FROM rejected").fetchone()[0]
        return out

    def series_rows(self, states: tuple[str, ...] = ("done",)) -> list[dict[str, Any]]:
        """Series in the given states: ``series_uid``, ``study_uid``, ``state``, times, ``error``, ``result``."""
        marks = ",".join("?" * len(states))
        with self._lock:
            rows = self._db.execute(
                "SELECT series_uid, study_uid, state, first_received, finished, error, result FROM series "
                f"WHERE state IN ({marks})",
                states,
            ).fetchall()
        keys = ("series_uid", "study_uid", "state", "received", "finished", "error", "result")
        out = []
        for row in rows:
            item = dict(zip(keys, row, strict=True))
            item["result"] = json.loads(item["result"]) if item["result"] else None
            out.append(item)
        return out
