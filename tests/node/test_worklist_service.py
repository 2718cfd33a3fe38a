"""``GET /v1/worklist`` of the REST service over a node's queue, behind the token, and on the web page."""

from __future__ import annotations

from functools import partial

from medclass.node.queue import NodeQueue
from medclass.node.worklist import read_worklist
from medclass.predict import Predictor


def test_service_serves_the_nodes_worklist_behind_its_token(small_binary_run, tmp_path):
    from fastapi.testclient import TestClient

    from medclass.serve.app import create_app

    run, _ = small_binary_run
    q = NodeQueue(tmp_path, settle_s=0)
    for sop, study, urgency, refer in (("1", "S1", 0.9, False), ("2", "S2", 0.1, True), ("3", "S3", 0.5, False)):
        path = q.spool_path(sop)
        path.write_bytes(b"x")
        q.add_instance(sop, f"series-{sop}", study, path)
        q.finish(q.take().series_uid, {"urgency": urgency, "refer": refer, "label": "1", "probs": {"1": urgency}})
    predictor = Predictor.from_checkpoint(run)
    client = TestClient(create_app(predictor, token="t", worklist=partial(read_worklist, tmp_path)))
    assert client.get("/v1/worklist").status_code == 401
    body = client.get("/v1/worklist", headers={"Authorization": "Bearer t"}).json()
    assert [(s["rank"], s["study_uid"], s["refer"]) for s in body["studies"]] == [
        (1, "S2", True),
        (2, "S1", False),
        (3, "S3", False),
    ]
    assert "PatientName" not in str(body) and "PatientID" not in str(body)
    page = client.get("/").text
    assert 'id="worklist"' in page and "/v1/worklist" in page
    assert TestClient(create_app(predictor)).get("/v1/worklist").status_code == 404
