"""The node's worker: take a ready series from the queue, classify it, store SR and SC in the PACS, record it.

One series at a time (the model runs on the CPU). A series that cannot be read or does not fit the model is
marked ``failed`` with its reason and logged by a short hash of its UID; a PACS that does not take the results
leaves the series ``pending`` to be tried again after ``retry_s``. No log line holds a patient's name or ID.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from medclass.errors import MedclassError
from medclass.node.pacs import PacsUnavailable
from medclass.node.queue import NodeQueue, SeriesJob, short_id

LOG = logging.getLogger("medclass.node")


def _headers(job: SeriesJob) -> list[Any]:
    import pydicom

    return [pydicom.dcmread(f, stop_before_pixels=True) for f in job.files]


def _reason(err: BaseException) -> str:
    """A one-line reason for a failure, without the spool path (hash-named files: no identifiers)."""
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}"[:300]


class Worker:
    """Process the queue's series until stopped.

    Args:
        queue: The node's queue.
        predictor: The run's :class:`~medclass.predict.Predictor`.
        sender: A :class:`~medclass.node.pacs.DicomSender` or :class:`~medclass.node.pacs.StowSender`.
        marker: An :class:`~medclass.node.pacs.OrthancMarker`, or ``None``.
        heatmap: Also send the heat-map Secondary Capture.
        retry_s: Wait before trying a series again after the PACS refused it.
    """

    def __init__(
        self,
        queue: NodeQueue,
        predictor: Any,
        sender: Any,
        *,
        marker: Any = None,
        heatmap: bool = True,
        retry_s: float = 5.0,
    ) -> None:
        self.queue, self.predictor, self.sender, self.marker = queue, predictor, sender, marker
        self.heatmap, self.retry_s = heatmap, retry_s
        self.wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Run in a background thread."""
        self._thread = threading.Thread(target=self.run, name="medclass-node-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the series in hand."""
        self._stop.set()
        self.wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        """Loop: process ready series; sleep until woken or a series may have settled."""
        while not self._stop.is_set():
            try:
                busy = self.process_one()
            except Exception as err:  # noqa: BLE001 - the worker must outlive any one series (e.g. a full disk)
                LOG.error("worker error, continuing: %s", _reason(err))
                self._stop.wait(1.0)
                continue
            if not busy:
                self.wake.wait(min(0.05, self.queue.settle_s / 4) if self.queue.settle_s else 0.05)
                self.wake.clear()

    def process_one(self) -> bool:
        """Process one ready series; ``False`` when none was ready."""
        job = self.queue.take()
        if job is None:
            return False
        tag = short_id(job.series_uid)
        t0 = time.perf_counter()
        try:
            datasets, result = self._results(job)
        except Exception as err:  # noqa: BLE001 - any unreadable or unsupported series fails alone; the node goes on
            reason = _reason(err)
            self.queue.fail(job.series_uid, reason)
            level = logging.WARNING if isinstance(err, MedclassError | ValueError) else logging.ERROR
            LOG.log(level, "series %s failed (%d instances): %s", tag, len(job.files), reason)
            return True
        try:
            self.sender.send(datasets)
        except PacsUnavailable as err:
            LOG.warning("series %s: results not stored, retry in %.0f s: %s", tag, self.retry_s, err)
            self.queue.retry_later(job.series_uid)
            self._stop.wait(self.retry_s)
            return True
        except Exception as err:  # noqa: BLE001 - results the sender cannot encode fail this series alone
            self.queue.fail(job.series_uid, _reason(err))
            LOG.error("series %s: results could not be sent: %s", tag, _reason(err))
            return True
        if self.marker is not None:
            try:
                self.marker.mark(job.study_uid, result.urgency, result.refer, result.label)
            except Exception as err:  # noqa: BLE001 - the mark is optional; the results are stored
                LOG.warning("series %s: triage metadata not set: %s", tag, err)
        row = result.as_dict() | {"sr_uid": str(datasets[0].SOPInstanceUID), "instances": len(job.files)}
        self.queue.finish(job.series_uid, row)
        LOG.info(
            "series %s done in %.0f ms: %s, urgency %.3f%s (%d instances)",
            tag, 1000 * (time.perf_counter() - t0), result.label, result.urgency,
            ", refer" if result.refer else "", len(job.files),
        )  # fmt: skip
        return True

    def _results(self, job: SeriesJob) -> tuple[list[Any], Any]:
        """The SR (and SC) of a series, and its result."""
        from medclass.node.classify import classify_series
        from medclass.node.dicom_results import build_sc, build_sr

        headers = _headers(job)
        result, picture = classify_series(self.predictor, job.files, heatmap=self.heatmap)
        datasets = [build_sr(result, headers, job.series_uid)]
        if picture is not None:
            datasets.append(build_sc(result, picture, headers[result.source_index], job.series_uid))
        return datasets, result
