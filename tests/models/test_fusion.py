"""Fusion of images with clinical fields: each method against a naive reference, the contract, modality dropout."""

from __future__ import annotations

import pytest
import torch

from medclass.models import build_model, create_model, list_models, model_info
from medclass.models.fusion import FusionModel, build_fusion, film, modality_dropout

T = 5
MISSING = torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0])  # e.g. age, age:missing, sex=f, sex=m, sex:missing


def _image(name: str, k: int = 3, size: int = 28) -> tuple[torch.nn.Module, tuple[int, ...]]:
    kwargs = {"img_size": size} if model_info(name).takes_img_size else {}
    return create_model(name, in_chans=1, num_classes=k, **kwargs), (1, size, size)


def _inputs(b: int = 4, size: int = 28, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 1, size, size, generator=g), torch.randn(b, T, generator=g)


@pytest.mark.parametrize("name", ["smallcnn", "resnet18_28", "vit_tiny"])
def test_each_method_matches_its_naive_reference(name):
    torch.manual_seed(0)
    x, tab = _inputs()
    for method in ("concat", "film", "late"):
        image, shape = _image(name)
        model = FusionModel(image, T, 3, method, missing=MISSING, input_shape=shape).eval()
        with torch.no_grad():
            out = model(x, tab)
            emb = model.tabular(tab)
            if method == "concat":
                pooled = image.forward_head(image.forward_features(x), pre_logits=True)
                ref = model.head(torch.cat([pooled, emb], 1))
            elif method == "late":
                ref = image(x) + model.head(emb)
            else:
                assert torch.allclose(out, image(x), atol=1e-6), "FiLM starts as the identity"
                torch.nn.init.normal_(model.head.weight, std=0.5)
                out = model(x, tab)
                gamma, beta = model.head(emb).chunk(2, 1)
                feats = image.forward_features(x)
                if feats.ndim == 3:  # ViT tokens: channels last
                    mod = feats * (1 + gamma[:, None, :]) + beta[:, None, :]
                else:
                    mod = feats * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]
                ref = image.forward_head(mod)
        assert out.shape == (4, 3)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        with torch.no_grad():
            torch.testing.assert_close(model.forward_head(model.forward_features(x, tab)), out)
        assert model.default_cam_layer == f"image.{image.default_cam_layer}"
        model.get_submodule(model.default_cam_layer)  # the CAM layer exists


def test_the_tabular_signal_reaches_the_output_and_gradients_flow():
    x, tab = _inputs()
    for method in ("concat", "film", "late", "tabular_only"):
        image = None if method == "tabular_only" else _image("smallcnn", k=2)[0]
        model = FusionModel(image, T, 2, method, missing=MISSING, input_shape=(1, 28, 28))
        if method == "film":
            torch.nn.init.normal_(model.head.weight, std=0.1)
        model.train()
        model.modality_dropout = 0.0
        out = model(x, tab)
        out.sum().backward()
        grads = [p.grad for p in model.tabular.parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), method
        model.eval()
        with torch.no_grad():
            assert not torch.allclose(model(x, tab), model(x, tab + 1.0)), method
        if method == "tabular_only":
            with torch.no_grad():
                assert torch.equal(model(x, tab), model(torch.zeros_like(x), tab)), "images are ignored"
            assert model.default_cam_layer == ""


def test_no_fields_means_every_field_missing():
    x, _ = _inputs()
    model = FusionModel(_image("smallcnn", k=2)[0], T, 2, "concat", missing=MISSING, input_shape=(1, 28, 28)).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x, MISSING.expand(4, -1)))


def test_film_function_on_maps_and_tokens():
    g = torch.Generator().manual_seed(1)
    maps, tokens = torch.randn(2, 3, 4, 5, generator=g), torch.randn(2, 6, 3, generator=g)
    gamma, beta = torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g)
    out_maps, out_tokens = film(maps, gamma, beta), film(tokens, gamma, beta)
    for b in range(2):
        for c in range(3):
            ref = maps[b, c] * (1 + gamma[b, c]) + beta[b, c]
            torch.testing.assert_close(out_maps[b, c], ref)
            torch.testing.assert_close(out_tokens[b, :, c], tokens[b, :, c] * (1 + gamma[b, c]) + beta[b, c])


def test_modality_dropout_replaces_rows_at_the_rate_with_a_fixed_generator():
    n, p = 20000, 0.3
    tab = torch.randn(n, T)
    out = modality_dropout(tab, MISSING, p, torch.Generator().manual_seed(7))
    expect = torch.rand(n, generator=torch.Generator().manual_seed(7)) < p  # the same draws, by hand
    dropped = (out == MISSING).all(1)
    assert torch.equal(dropped, expect)
    assert torch.equal(out[~dropped], tab[~dropped])
    assert abs(dropped.float().mean().item() - p) < 0.01
    assert torch.equal(modality_dropout(tab, MISSING, 0.0), tab)


def test_modality_dropout_is_on_in_training_and_off_in_eval():
    model = FusionModel(None, T, 2, "tabular_only", missing=MISSING, modality_dropout=0.5)
    tab = torch.randn(1000, T)
    model.generator = torch.Generator().manual_seed(3)
    seen = model.train().fields(tab, 1000, torch.device("cpu"))
    expect = torch.rand(1000, generator=torch.Generator().manual_seed(3)) < 0.5
    assert torch.equal((seen == MISSING).all(1), expect)
    assert torch.equal(model.eval().fields(tab, 1000, torch.device("cpu")), tab)


def test_the_checkpoint_description_rebuilds_the_same_network():
    arch = {
        "name": "resnet18_28",
        "in_chans": 1,
        "num_outputs": 1,
        "spatial_dims": 2,
        "kwargs": {},
        "fusion": {"method": "film", "tabular_dim": T, "missing": MISSING.tolist(), "input_shape": [1, 28, 28]},
    }
    a, b = build_model(arch), build_model(arch)
    assert isinstance(a, FusionModel) and torch.equal(a.missing, MISSING)
    torch.nn.init.normal_(a.head.weight)
    b.load_state_dict(a.state_dict())
    x, tab = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x, tab), b.eval()(x, tab))
    assert not any(k.startswith("missing") for k in a.state_dict()), "derived from model.json, not stored"


def test_every_registered_image_model_takes_film():
    """FiLM needs the most of the contract: the feature map, and the pooled pre-logits (probed at build time,
    which is also what ``concat`` uses)."""
    _, tab = _inputs(b=2)
    for name in list_models():
        info = model_info(name)
        size = max(28, info.min_size)
        dims = info.spatial_dims[0]
        shape = (1, size, size) if dims == 2 else (1, 16, 16, 16)
        arch = {
            "name": name,
            "in_chans": 1,
            "num_outputs": 2,
            "spatial_dims": dims,
            "kwargs": {"img_size": size} if info.takes_img_size else {},
            "fusion": {"method": "film", "tabular_dim": T, "input_shape": list(shape)},
        }
        model = build_fusion(arch).eval()
        torch.nn.init.normal_(model.head.weight, std=0.1)
        with torch.no_grad():
            out = model(torch.randn(2, *shape), tab)
        assert out.shape == (2, 2) and torch.isfinite(out).all(), name
