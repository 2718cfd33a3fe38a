"""ONNX export of models with clinical fields: a second graph input (the encoded fields), parity with PyTorch with
fields missing, the onnxruntime engine taking ``tabular=``, and the CLI's export on the run's own rows."""

from __future__ import annotations

import numpy as np
import pytest

import medclass
from medclass.checkpoint import load_model
from medclass.deploy.export import ExportError, check_fields, export_onnx, onnx_probs, onnx_session, read_metadata
from medclass.predict import Predictor

ROWS = [{"age": 25, "sex": "f"}, {"age": 75}, {}, {"sex": "m"}, {"age": "61.5", "sex": ""}, {"age": 40, "sex": "x"}]


def _images(n: int = len(ROWS), seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 1, 8, 8)).astype(np.uint8)


@pytest.mark.parametrize("method", ["concat", "film"])
def test_the_graph_takes_the_encoded_fields_and_matches_pytorch_with_missing_fields(
    small_multimodal_runs, tmp_path, method
):
    run = small_multimodal_runs[method]
    model, meta = load_model(run)
    schema = meta["preprocessing"]["tabular"]
    check = check_fields(schema, 16)
    assert check.shape == (16, 5) and check[0].tolist() == [0, 1, 0, 0, 1], "row 0: every field missing"
    assert check[:, 1].sum() > 0 and check[:, 1].sum() < 16, "some ages missing, some not"
    out = tmp_path / "m.onnx"
    entries = export_onnx(model, meta, out, check_images=_images(16), check_tabular=check)
    assert entries["parity_max_abs_diff"] <= 1e-4
    session = onnx_session(out)
    inputs = {i.name: i.shape for i in session.get_inputs()}
    assert inputs == {"image": ["batch", 1, 8, 8], "tabular": ["batch", 5]}
    assert read_metadata(out)["medclass"]["preprocessing"]["tabular"] == schema  # how to encode travels along

    torch_pred = Predictor.from_checkpoint(run)
    fields = torch_pred.encode_tabular(ROWS, len(ROWS)).numpy()
    reference = torch_pred.probs(torch_pred.prepare(_images()), tabular=ROWS)
    got = onnx_probs(session, _images(), batch_size=4, tabular=fields)  # two batches of a dynamic size
    assert np.abs(got - reference).max() < 1e-4
    assert np.ptp(reference[:, 1]) > 1e-3, "the fields move the prediction, so parity covers the tabular branch"
    with pytest.raises(ExportError, match="takes clinical fields"):
        onnx_probs(session, _images())
    with pytest.raises(ExportError, match=r"shape \(6, 4\)"):
        export_onnx(model, meta, tmp_path / "bad.onnx", check_images=_images(), check_tabular=fields[:, :4])


def test_the_onnxruntime_engine_takes_tabular_and_exports_on_first_use(small_multimodal_runs, tmp_path):
    import shutil

    run = shutil.copytree(small_multimodal_runs["film"], tmp_path / "run")
    onnx = medclass.load(run, engine="onnxruntime")
    assert (run / "model.onnx").is_file() and onnx.clinical_fields == ["age", "sex"]
    torch_pred = medclass.load(run)
    images = _images()[:, 0]
    np.testing.assert_allclose(
        onnx.predict_proba(images, tabular=ROWS), torch_pred.predict_proba(images, tabular=ROWS), atol=1e-4
    )
    np.testing.assert_allclose(onnx.predict_proba(images), torch_pred.predict_proba(images), atol=1e-4)  # all missing
    young, old = (onnx.predict_proba(images[:1], tabular=[{"age": a}])[0, 1] for a in (25, 75))
    assert old > young, "the model learnt that age > 50 is positive; the ONNX graph still sees the age"


def test_cli_export_checks_parity_on_the_runs_own_rows_and_bf16_records_the_auc_change(
    small_multimodal_runs, run_cli, tmp_path
):
    import shutil

    run = shutil.copytree(small_multimodal_runs["concat"], tmp_path / "run")
    res = run_cli("export", "--checkpoint", run, "--quantize", "bf16")
    assert res.code == 0, res.err
    meta = read_metadata(run / "model.bf16.onnx")
    assert meta["parity_max_abs_diff"] <= 1e-4 and meta["reduced_max_abs_diff"] < 0.02
    auc = meta["bf16_test_auc"]
    assert auc["fp32"] > 0.7, "the test AUC is measured with the test rows' fields (images alone carry no signal)"
    pred = run_cli("predict", "--checkpoint", run, "--engine", "onnxruntime", "--onnx", run / "model.bf16.onnx",
                   small_multimodal_runs["data"].parent / "img" / "003.png")  # fmt: skip
    assert pred.code == 0, pred.err


def test_an_image_only_graph_refuses_clinical_fields(small_binary_run, tmp_path):
    model, meta = load_model(small_binary_run[0])
    images = np.zeros((2, 1, 16, 16), np.uint8)
    with pytest.raises(ExportError, match="trained on images only"):
        export_onnx(model, meta, tmp_path / "m.onnx", check_images=images, check_tabular=np.zeros((2, 3), np.float32))
    export_onnx(model, meta, tmp_path / "m.onnx", check_images=images)
    session = onnx_session(tmp_path / "m.onnx")
    assert [i.name for i in session.get_inputs()] == ["image"]
    with pytest.raises(ExportError, match="takes images only"):
        onnx_probs(session, images, tabular=np.zeros((2, 3), np.float32))
