"""The model registry and the model contract every architecture honours, 2D and 3D, 1 and 3 channels."""

from __future__ import annotations

import pytest
import torch

from medclass.errors import ModelError
from medclass.models import create_model, list_models, model_info, register_model
from medclass.models.registry import _REGISTRY

TIMM_MODELS = ("timm/resnet18", "timm/mobilenetv3_small_050")
SIZE = {2: 28, 3: 16}


# VGG's 4096-wide head makes its models 130M parameters: every family is checked in `make test` by the contract
# test (1 channel); VGG's other registry-wide cases, about 100 s of the 2-core budget, run in the slow tier
# (`make test-all`). The exporter's fallback they exercise has its own small test (tests/deploy/test_export.py).
HEAVY_FAMILIES = ("vgg",)


def _heavy(name: str) -> bool:
    return not name.startswith("timm/") and model_info(name).family in HEAVY_FAMILIES


def _cases(*, heavy_slow: bool = True) -> list:
    cases = [(name, dims) for name in list_models() for dims in model_info(name).spatial_dims]
    cases += [(name, 2) for name in TIMM_MODELS]
    slow = [pytest.mark.slow] if heavy_slow else []
    return [pytest.param(*c, marks=slow if _heavy(c[0]) else [], id=f"{c[0]}-{c[1]}") for c in cases]


def _build(name: str, dims: int, in_chans: int, num_classes: int) -> tuple[torch.nn.Module, int, dict]:
    """The model at the smallest tested size its entry allows, that size, and the builder's extra arguments."""
    entry = model_info(name) if not name.startswith("timm/") else None
    size = max(SIZE[dims], entry.min_size if entry else 1)
    kwargs = {"img_size": size} if entry and entry.takes_img_size else {}
    return create_model(name, in_chans=in_chans, num_classes=num_classes, spatial_dims=dims, **kwargs), size, kwargs


def _contract_cases() -> list:
    """Every model with 1 and 3 channels; VGG's 3-channel case in the slow tier."""
    one = [pytest.param(*c.values, 1, id=f"{c.id}-1") for c in _cases(heavy_slow=False)]
    return one + [pytest.param(*c.values, 3, marks=c.marks, id=f"{c.id}-3") for c in _cases()]


@pytest.mark.parametrize(("name", "dims", "in_chans"), _contract_cases())
def test_model_contract(name: str, dims: int, in_chans: int) -> None:
    torch.manual_seed(0)
    model, size, _ = _build(name, dims, in_chans, 3)
    assert model.spatial_dims == dims
    x = torch.randn(2, in_chans, *(size,) * dims)

    model.train()
    out = model(x)
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    out.sum().backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{pname} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"

    with torch.no_grad():  # still in training mode (batch statistics), without dropout: same result
        features = model.forward_features(x)
        assert torch.allclose(out, model.forward_head(features), atol=1e-5)
        model.reset_classifier(5)
        assert model.forward_head(features).shape == (2, 5)
    cam = model.default_cam_layer
    assert isinstance(cam, str) and cam
    assert isinstance(model.get_submodule(cam), torch.nn.Module)


def test_list_models_filters_and_sorts() -> None:
    names = list_models()
    assert names == sorted(names) and {"smallcnn", "resnet18_28", "resnet50_3d"} <= set(names)
    assert list_models("resnet*_3d") == ["resnet18_3d", "resnet50_3d"]
    assert list_models("RESNET18*") == [n for n in names if n.startswith("resnet18")]


def test_duplicate_registration_raises() -> None:
    list_models()  # make sure the built-in models are registered

    def builder(**kwargs):  # pragma: no cover - never built
        raise AssertionError

    with pytest.raises(ValueError, match="already registered"):
        register_model("smallcnn", family="cnn")(builder)
    with pytest.raises(ValueError, match="already registered"):
        register_model("SmallCNN", family="cnn")(builder)  # names ignore case


def test_register_new_model() -> None:
    @register_model("tiny_test_net", family="test", description="a test model")
    def tiny(*, in_chans: int = 1, num_classes: int = 2, **kwargs):
        return create_model("smallcnn", in_chans=in_chans, num_classes=num_classes, widths=(4, 8), **kwargs)

    try:
        assert "tiny_test_net" in list_models()
        assert model_info("tiny_test_net").spatial_dims == (2,)
        assert create_model("Tiny_Test_Net", num_classes=4)(torch.randn(2, 1, 12, 12)).shape == (2, 4)
    finally:
        _REGISTRY.pop("tiny_test_net", None)


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [("resnet18", "resnet18_"), ("smalcnn", "smallcnn"), ("timm/resnet181", "timm/resnet18")],
)
def test_unknown_model_suggests(name: str, suggestion: str) -> None:
    with pytest.raises(ModelError, match="did you mean") as err:
        create_model(name)
    assert suggestion in str(err.value) and name.split("/")[-1] in str(err.value)


def test_unknown_model_without_close_match() -> None:
    with pytest.raises(ModelError, match="unknown model 'zzzz'"):
        model_info("zzzz")


def test_unsupported_dimensions_and_weights() -> None:
    with pytest.raises(ModelError, match="resnet18_3d"):
        create_model("resnet18_28", spatial_dims=3)
    with pytest.raises(ModelError, match="2D only"):
        create_model("timm/resnet18", spatial_dims=3)
    with pytest.raises(ModelError, match="pretrained"):
        create_model("smallcnn", pretrained=True)


def test_too_small_inputs_are_refused_with_the_size_to_use(tmp_path, make_npz, run_cli, fast_config):
    data = make_npz(tmp_path / "a.npz", sizes=(24, 8, 8), size=12)
    res = run_cli("train", "--data", data, "--config", fast_config, "--model", "densenet121", "--out", tmp_path / "r")
    assert res.code == 2
    assert "needs inputs of at least 32 px, these are 12 px" in res.err and "--image-size 32" in res.err


def test_vit_gets_the_input_size_and_is_rebuilt_for_prediction(tmp_path, make_npz, run_cli, fast_config):
    import json

    from medclass.predict import Predictor

    data = make_npz(tmp_path / "a.npz", sizes=(24, 8, 8), size=16)
    res = run_cli("train", "--data", data, "--config", fast_config, "--model", "vit_tiny", "--out", tmp_path / "r")
    assert res.code == 0, res.err
    arch = json.loads((tmp_path / "r" / "model.json").read_text())["architecture"]
    assert arch["kwargs"]["img_size"] == 16
    pred = Predictor.from_checkpoint(tmp_path / "r")
    assert pred.model.patch_embed.patch_size == (4, 4)
    assert pred.predict_array(torch.randint(0, 255, (2, 16, 16), dtype=torch.uint8).numpy())[0].shape == (2, 2)


@pytest.mark.parametrize(("name", "dims"), _cases())
def test_checkpoint_round_trip_gives_identical_predictions(name: str, dims: int, tmp_path) -> None:
    """Saved as a run saves it (safetensors + model.json), rebuilt from the metadata alone: same outputs."""
    from medclass.checkpoint import load_model, save_model

    torch.manual_seed(0)
    model, size, kwargs = _build(name, dims, 1, 2)
    arch = {"name": name, "spatial_dims": dims, "in_chans": 1, "num_outputs": 2, "kwargs": kwargs}
    x = torch.randn(2, 1, *(size,) * dims)
    model.train()(x)  # move batch-norm statistics away from their initial values
    prep = {"scale": 1 / 255, "mean": [0.5], "std": [0.5]}
    save_model(
        tmp_path,
        model.eval(),
        {"architecture": arch, "task": "binary", "label_names": ["0", "1"], "preprocessing": prep},
    )
    loaded, meta = load_model(tmp_path)
    assert meta["architecture"] == arch
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


@pytest.mark.parametrize(("name", "dims"), _cases())
def test_every_model_exports_to_onnx_with_parity(name: str, dims: int, tmp_path) -> None:
    """Each architecture, 2D and 3D, at the smallest size it takes: the export's own parity check (1e-4) passes on a
    batch size other than the traced one, and the one file carries the model's metadata. VGG's head below 224 px
    (adaptive pooling to 7 x 7 from a smaller map) is what tracing cannot translate: it takes the fallback."""
    import numpy as np

    from medclass.deploy.export import export_onnx, read_metadata

    torch.manual_seed(0)
    model, size, _ = _build(name, dims, 1, 2)
    model.train()(torch.randn(4, 1, *(size,) * dims))  # batch-norm statistics away from their initial values
    shape = [1] + [size] * dims
    prep = {"channels": 1, "input_shape": shape, "scale": 1 / 255, "mean": [0.5], "std": [0.25], "tta": ["hflip"]}
    meta = {"task": "binary", "label_names": ["no", "yes"], "preprocessing": prep, "architecture": {"name": name}}
    images = np.random.default_rng(0).integers(0, 256, (3, *shape), dtype=np.uint8)
    entries = export_onnx(model.eval(), meta, tmp_path / "m.onnx", check_images=images)
    assert entries["parity_max_abs_diff"] <= 1e-4
    assert read_metadata(tmp_path / "m.onnx")["medclass"]["architecture"]["name"] == name
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # one self-contained file, no external weights


def _larger_sizes() -> list:
    return [
        pytest.param(n, s, marks=[pytest.mark.slow] if _heavy(n) else [], id=f"{n}-{s}")
        for n in list_models()
        if 2 in model_info(n).spatial_dims
        for s in (64, 224)
        if s >= model_info(n).min_size
    ]


@pytest.mark.parametrize(("name", "size"), _larger_sizes())
def test_larger_inputs_give_finite_outputs(name: str, size: int) -> None:
    """Every 2D model at 64 and 224 px (where its minimum allows), 3 channels: finite logits of the right shape."""
    torch.manual_seed(0)
    kwargs = {"img_size": size} if model_info(name).takes_img_size else {}
    model = create_model(name, in_chans=3, num_classes=2, spatial_dims=2, **kwargs).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, size, size))
    assert out.shape == (1, 2) and torch.isfinite(out).all()
