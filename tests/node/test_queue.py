"""The node's durable queue and the worklist ranking: no instance lost or counted twice, restarts, triage order."""

from __future__ import annotations

from pathlib import Path

from medclass.node.queue import NodeQueue, short_id
from medclass.node.worklist import rank, read_worklist


def _add(q: NodeQueue, sop: str, series: str = "1.2.3", study: str = "1.2") -> bool:
    path = q.spool_path(sop)
    path.write_bytes(b"x")
    return q.add_instance(sop, series, study, path)


def test_an_instance_sent_twice_is_kept_once_and_a_series_is_taken_once(tmp_path: Path):
    q = NodeQueue(tmp_path, settle_s=0)
    assert _add(q, "1.2.3.1") and _add(q, "1.2.3.2")
    assert not _add(q, "1.2.3.1")
    job = q.take()
    assert job is not None and len(job.files) == 2 and job.attempts == 0
    assert q.take() is None
    q.finish(job.series_uid, {"urgency": 0.5})
    assert not any(f.exists() for f in job.files)  # the PACS keeps the images; the node only their UIDs
    assert not _add(q, "1.2.3.1")  # re-sent after the report: nothing new
    assert _add(q, "1.2.3.3")  # a new instance of a reported series is kept but queues no second report
    assert q.take() is None
    assert q.counts() == {"done": 1, "instances": 3, "rejected": 0}


def test_a_series_waits_until_no_instance_arrived_for_settle_seconds(tmp_path: Path):
    import time

    q = NodeQueue(tmp_path, settle_s=30)
    _add(q, "9.1")
    assert q.take() is None
    assert q.take(now=time.time() + 31) is not None


def test_a_restart_takes_up_a_series_left_working_and_keeps_everything(tmp_path: Path):
    q = NodeQueue(tmp_path, settle_s=0)
    _add(q, "5.1", series="5")
    _add(q, "6.1", series="6")
    assert q.take() is not None  # the node is killed while classifying series 5
    q.close()
    again = NodeQueue(tmp_path, settle_s=0)
    taken = [again.take(), again.take()]
    assert sorted(j.series_uid for j in taken if j) == ["5", "6"]
    assert next(j for j in taken if j and j.series_uid == "5").attempts == 1
    assert all(f.is_file() for j in taken if j for f in j.files)


def test_failures_and_rejections_are_recorded_without_identifiers(tmp_path: Path):
    q = NodeQueue(tmp_path, settle_s=0)
    _add(q, "7.1", series="7")
    job = q.take()
    q.fail(job.series_uid, "InvalidImageError: cannot decode")
    rid = q.reject("malformed: InvalidDicomError")
    assert rid == 1
    assert q.counts() == {"failed": 1, "instances": 1, "rejected": 1}
    assert q.series_rows(("failed",))[0]["error"].startswith("InvalidImageError")
    assert len(short_id("1.2.840.1")) == 12 and short_id("1.2.840.1") == short_id("1.2.840.1")


def test_worklist_puts_referrals_first_then_urgency_and_reads_a_live_queue(tmp_path: Path):
    rows = [
        {"series_uid": "a", "study_uid": "A", "received": 1.0, "result": {"urgency": 0.9, "refer": False}},
        {"series_uid": "b", "study_uid": "B", "received": 2.0, "result": {"urgency": 0.2, "refer": True}},
        {"series_uid": "c", "study_uid": "C", "received": 3.0, "result": {"urgency": 0.95, "refer": False}},
        {"series_uid": "c2", "study_uid": "C", "received": 4.0, "result": {"urgency": 0.1, "refer": False}},
    ]
    ranked = rank(rows)
    assert [r["study_uid"] for r in ranked] == ["B", "C", "A"]
    assert ranked[1]["series"] == 2 and ranked[1]["series_uid"] == "c"

    q = NodeQueue(tmp_path, settle_s=0)
    assert read_worklist(tmp_path / "none") == []
    for sop, series, study, urgency in (("1", "s1", "S1", 0.3), ("2", "s2", "S2", 0.7)):
        _add(q, sop, series=series, study=study)
        q.finish(q.take().series_uid, {"urgency": urgency, "refer": False, "label": "x"})
    listed = read_worklist(tmp_path)
    assert [(r["rank"], r["study_uid"]) for r in listed] == [(1, "S2"), (2, "S1")]
