"""The DICOM node (pynetdicom): C-ECHO, C-STORE into the durable queue, and the worker that reports results.

An instance is acknowledged (status 0x0000) only once its bytes are on disk and it is recorded in the queue.
The same SOP Instance UID sent again is acknowledged and dropped. An object pydicom cannot parse, or one
without the UIDs needed to group it, is answered 0xC210 (cannot understand); an object the model cannot take
(no pixel data, or a modality outside ``modalities``) is acknowledged but not queued. Both are recorded as
rejected and logged by their rejection id: no log line names a patient.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medclass.node.queue import NodeQueue, short_id
from medclass.node.worker import Worker

LOG = logging.getLogger("medclass.node")

SUCCESS = 0x0000
CANNOT_UNDERSTAND = 0xC210
OUT_OF_RESOURCES = 0xA700
_PIXELS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def quiet_third_party() -> dict[str, int]:
    """Keep header values out of the node's output: pydicom and highdicom quote them in warnings and log lines
    (a patient's name in "unlikely to represent the intended person name", dates in "Invalid value for VR DA").

    Their loggers are set to ERROR, pynetdicom's (one INFO line per association) to WARNING, and their
    ``UserWarning``s are ignored. A node is an application that owns its process, so this is its choice.

    Returns:
        The loggers' levels before, for :meth:`Node.stop` to put back.
    """
    import warnings

    before = {}
    for name, level in (("pydicom", logging.ERROR), ("highdicom", logging.ERROR), ("pynetdicom", logging.WARNING)):
        before[name] = logging.getLogger(name).level
        logging.getLogger(name).setLevel(level)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(pydicom|highdicom)(\.|$)")
    return before


class Node:
    """A DICOM node that classifies what it is sent and stores the results in the PACS.

    Args:
        predictor: The run's :class:`~medclass.predict.Predictor` (loaded through :func:`medclass.load`).
        state_dir: Folder of the queue and the received files (keep it across restarts).
        sender: Where results go (:class:`~medclass.node.pacs.DicomSender` or
            :class:`~medclass.node.pacs.StowSender`).
        ae_title: The node's AE title.
        port: TCP port to listen on (0: any free port; see :attr:`port` after :meth:`start`).
        host: Address to listen on.
        allowed_aets: Calling AE titles allowed to associate (``None``: any).
        modalities: Modalities queued (``None``: any object with pixel data).
        marker: An :class:`~medclass.node.pacs.OrthancMarker` for the study's triage metadata, or ``None``.
        settle_s: A series is classified once no instance of it arrived for this long.
        heatmap: Also store the heat-map Secondary Capture.
        retry_s: Wait before retrying results the PACS refused.
    """

    def __init__(
        self,
        predictor: Any,
        state_dir: str | Path,
        sender: Any,
        *,
        ae_title: str = "MEDCLASS",
        port: int = 11112,
        host: str = "0.0.0.0",
        allowed_aets: Sequence[str] | None = None,
        modalities: Sequence[str] | None = None,
        marker: Any = None,
        settle_s: float = 0.5,
        heatmap: bool = True,
        retry_s: float = 5.0,
    ) -> None:
        self.predictor, self.ae_title, self.host, self.port = predictor, ae_title, host, port
        self.allowed_aets = list(allowed_aets) if allowed_aets else None
        self.modalities = {m.upper() for m in modalities} if modalities else None
        self.queue = NodeQueue(state_dir, settle_s=settle_s)
        self.worker = Worker(self.queue, predictor, sender, marker=marker, heatmap=heatmap, retry_s=retry_s)
        self._server: Any = None
        self._levels: dict[str, int] = {}

    def start(self) -> None:
        """Listen (in background threads) and start the worker."""
        self._levels = quiet_third_party()
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification

        ae = AE(ae_title=self.ae_title)
        ae.add_supported_context(Verification)
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        if self.allowed_aets:
            ae.require_calling_aet = self.allowed_aets
        ae.maximum_pdu_size = 0
        handlers = [(evt.EVT_C_ECHO, self._on_echo), (evt.EVT_C_STORE, self._on_store)]
        self._server = ae.start_server((self.host, self.port), block=False, evt_handlers=handlers)
        self.port = int(self._server.server_address[1])
        self.worker.start()
        LOG.info("node %s listening on %s:%d", self.ae_title, self.host, self.port)

    def stop(self) -> None:
        """Stop listening, finish the series in hand, close the queue."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self.worker.stop()
        self.queue.close()
        for name, level in self._levels.items():
            logging.getLogger(name).setLevel(level)

    def _on_echo(self, event: Any) -> int:
        return SUCCESS

    def _on_store(self, event: Any) -> int:
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
            sop, series, study = str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID), str(ds.StudyInstanceUID)
            if not (sop and series and study):
                raise ValueError("empty UID")
            has_pixels = any(k in ds for k in _PIXELS)
            modality = str(ds.get("Modality", "") or "").upper()
        except Exception as err:  # noqa: BLE001 - a malformed object must not stop the node
            rid = self.queue.reject(f"malformed: {type(err).__name__}")
            LOG.warning("rejected object #%d: cannot be parsed or lacks its UIDs (%s)", rid, type(err).__name__)
            return CANNOT_UNDERSTAND
        if not has_pixels or (self.modalities is not None and modality not in self.modalities):
            why = "no pixel data" if not has_pixels else f"modality {modality or '(none)'} not served"
            rid = self.queue.reject(f"unsupported: {why}")
            LOG.warning("rejected object #%d (series %s): %s", rid, short_id(series), why)
            return SUCCESS
        if self.queue.has_instance(sop):
            LOG.info("instance %s of series %s received again: kept once", short_id(sop), short_id(series))
            return SUCCESS
        path = self.queue.spool_path(sop)
        try:
            from medclass.utils.files import write_bytes

            write_bytes(path, event.encoded_dataset(include_meta=True))
        except OSError as err:
            LOG.error("instance %s not stored: %s", short_id(sop), err.strerror or type(err).__name__)
            return OUT_OF_RESOURCES
        self.queue.add_instance(sop, series, study, path)
        self.worker.wake.set()
        return SUCCESS
