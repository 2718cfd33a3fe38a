"""ONNX export: parity with PyTorch (TTA and calibration in the graph), int8 and bf16 with their AUC change, the
ONNX engine."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from medclass.deploy.export import ExportError, bf16_bits, export_onnx, onnx_probs, onnx_session, read_metadata
from medclass.predict import Predictor


@pytest.fixture(scope="module")
def run_with_tta(tmp_path_factory, fast_config, make_npz, cli_main):

    root = tmp_path_factory.mktemp("export")
    data = make_npz(root / "d.npz", sizes=(60, 20, 40), size=16)
    cfg = yaml.safe_load(fast_config.read_text())
    cfg["eval"]["tta"] = ["hflip", "shift"]
    (root / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert (
        cli_main(
            ["train", "--data", str(data), "--config", str(root / "c.yaml"), "--out", str(root / "run"), "--quiet"]
        )
        == 0
    )
    return root / "run", data


def test_export_matches_pytorch_with_tta_and_calibration(run_with_tta, run_cli):
    run, data = run_with_tta
    res = run_cli("export", "--checkpoint", run)
    assert res.code == 0, res.err
    path = run / "model.onnx"
    meta = read_metadata(path)
    assert meta["medclass"]["preprocessing"]["tta"] == ["hflip", "shift"] and meta["parity_max_abs_diff"] <= 1e-4
    images = np.load(data)["test_images"][:, None]
    torch_probs, _ = Predictor.from_checkpoint(run).predict_array(images)
    np.testing.assert_allclose(onnx_probs(onnx_session(path), images), torch_probs, atol=1e-4)  # any batch size


def test_int8_records_the_auc_change_and_the_engine_uses_it(run_with_tta, run_cli, tmp_path):
    run, data = run_with_tta
    out = tmp_path / "m8.onnx"
    res = run_cli("export", "--checkpoint", run, "--quantize", "int8", "--out", out)
    assert res.code == 0, res.err
    q = read_metadata(out)["int8_test_auc"]
    assert q["change"] == pytest.approx(q["int8"] - q["fp32"]) and "test AUC" in res.out.split("int8: ")[1]
    pred = run_cli("predict", "--checkpoint", run, data, "--engine", "onnxruntime", "--onnx", out)
    assert pred.code == 0, pred.err
    torch_rows = run_cli("predict", "--checkpoint", run, data).out.splitlines()
    onnx_rows = pred.out.splitlines()
    assert len(onnx_rows) == len(torch_rows)
    p_torch = np.array([float(r.split(",")[2]) for r in torch_rows[1:]])
    p_onnx = np.array([float(r.split(",")[2]) for r in onnx_rows[1:]])
    assert np.abs(p_torch - p_onnx).max() < 0.1  # int8: close, not equal


def test_bf16_bits_round_to_nearest_even_like_torch():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 3, 5000), [0.0, -0.0, 1.0, 1 + 2**-8, 1 + 3 * 2**-8, 3e38, -1e-40]])
    values = values.astype(np.float32)
    # 1 + 2**-8 is a tie between 1 and 1 + 2**-7: it goes to the even pattern (1.0); 1 + 3 * 2**-8 rounds up
    expected = torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(bf16_bits(values), expected)
    back = (bf16_bits(values).astype(np.uint32) << 16).view(np.float32)
    assert back[-4] == 1.0 and back[-3] == 1 + 2**-6


def test_bf16_halves_the_weights_keeps_fp32_arithmetic_and_records_the_auc_change(run_with_tta, run_cli, tmp_path):
    import onnx

    run, data = run_with_tta
    res = run_cli("export", "--checkpoint", run, "--quantize", "bf16")
    assert res.code == 0, res.err
    fp32, bf16 = run / "model.onnx", run / "model.bf16.onnx"
    assert run_cli("export", "--checkpoint", run).code == 0
    proto = onnx.load(str(bf16))
    types = {i.data_type for i in proto.graph.initializer if len(i.dims) >= 2}
    assert types == {onnx.TensorProto.BFLOAT16}
    assert bf16.stat().st_size < 0.6 * fp32.stat().st_size
    meta = read_metadata(bf16)
    q = meta["bf16_test_auc"]
    assert meta["quantization"] == "bf16" and q["change"] == pytest.approx(q["bf16"] - q["fp32"])
    assert "bf16: max |dp| against fp32" in res.out
    images = np.load(data)["test_images"][:, None]
    p32, p16 = onnx_probs(onnx_session(fp32), images), onnx_probs(onnx_session(bf16), images)
    # bf16 keeps 8 significant bits of each weight: close to fp32, but not identical
    assert 0 < np.abs(p32 - p16).max() < 0.02
    assert meta["reduced_max_abs_diff"] < 0.02


def test_engine_exports_on_first_use_and_errors(tmp_path, make_npz, train_cli, run_cli):
    data = make_npz(tmp_path / "d.npz", sizes=(24, 8, 8), size=12)
    train_cli(data, tmp_path / "run")
    res = run_cli("predict", "--checkpoint", tmp_path / "run", data, "--engine", "onnxruntime")
    assert res.code == 0, res.err
    assert (tmp_path / "run" / "model.onnx").is_file()
    bad = run_cli(
        "predict", "--checkpoint", tmp_path / "run", data, "--engine", "onnxruntime", "--onnx", tmp_path / "x.onnx"
    )
    assert bad.code == 2 and "ONNX file not found" in bad.err
    model, meta = Predictor.from_checkpoint(tmp_path / "run").model, Predictor.from_checkpoint(tmp_path / "run").meta
    images = np.zeros((2, 1, 12, 12), np.uint8)
    with pytest.raises(ExportError, match="unknown 'int4'"):
        export_onnx(model, meta, tmp_path / "m.onnx", check_images=images, quantize="int4")
    eq = {**meta, "preprocessing": {**meta["preprocessing"], "equalize": {"method": "hist"}}}
    with pytest.raises(ExportError, match="contrast equalisation"):
        export_onnx(model, eq, tmp_path / "m.onnx", check_images=images)


class _Eigenvalues(torch.nn.Module):
    """A model with an operator no ONNX exporter translates (eigenvalues of a general matrix)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.linalg.eigvals(x.flatten(1)[:, :16].reshape(-1, 4, 4)).real)


class _UnevenPool(torch.nn.Module):
    """Adaptive pooling to a size that does not divide the input (VGG's head below 224 px), then batch norm."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.pool = torch.nn.AdaptiveAvgPool2d(7)
        self.fc = torch.nn.Linear(4 * 49, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.bn(self.conv(x))).flatten(1))


def test_what_tracing_cannot_translate_goes_through_torch_export_with_parity(tmp_path) -> None:
    import onnx

    torch.manual_seed(0)
    model = _UnevenPool()
    model.train()(torch.randn(4, 1, 16, 16))  # batch-norm statistics away from their initial values
    with pytest.raises(torch.onnx.errors.OnnxExporterError):  # the first exporter refuses it ...
        torch.onnx.export(model.eval(), (torch.zeros(2, 1, 16, 16),), str(tmp_path / "t.onnx"), dynamo=False)
    prep = {"channels": 1, "input_shape": [1, 16, 16], "scale": 1 / 255, "mean": [0.5], "std": [0.25], "tta": []}
    images = np.random.default_rng(0).integers(0, 256, (3, 1, 16, 16), dtype=np.uint8)  # 3: not the traced batch
    entries = export_onnx(model.eval(), {"task": "binary", "preprocessing": prep}, tmp_path / "m.onnx",
                          check_images=images)  # fmt: skip
    assert entries["parity_max_abs_diff"] <= 1e-4  # ... and the second one's graph matches PyTorch
    weights = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False).graph.initializer
    assert weights and not any(w.external_data for w in weights), "the weights inside the one file"


def test_a_model_no_exporter_translates_gets_one_clear_error_and_no_file(tmp_path) -> None:
    prep = {"channels": 1, "input_shape": [1, 8, 8], "scale": 1 / 255, "mean": [0.5], "std": [0.25], "tta": []}
    out = tmp_path / "m.onnx"
    with pytest.raises(ExportError, match=r"m\.onnx: this model cannot be exported to ONNX \(.*eigvals"):
        export_onnx(_Eigenvalues().eval(), {"task": "binary", "preprocessing": prep}, out,
                    check_images=np.zeros((2, 1, 8, 8), np.uint8))  # fmt: skip
    assert list(tmp_path.iterdir()) == []
