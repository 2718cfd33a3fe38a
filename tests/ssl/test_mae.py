"""The masked autoencoder: its loss and patches against naive loops, the transformer seeing only visible tokens, and
pretraining the hybrid end to end into weights that ``train --init-from`` loads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medclass import checkpoint
from medclass.config import PretrainConfig, RunConfig
from medclass.data.sources import load_dataset
from medclass.errors import ConfigError
from medclass.models import create_model
from medclass.ssl.losses import masked_patch_mse
from medclass.ssl.mae import MaskedAutoencoder, patchify
from medclass.ssl.pretrain import pretrain


def test_masked_patch_mse_matches_a_naive_loop():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 5, 6, generator=g), torch.randn(2, 5, 6, generator=g) * 3 + 1
    mask = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 1, 1]], dtype=torch.float32)
    total, count = 0.0, 0
    for b in range(2):
        for n in range(5):
            if mask[b, n]:
                t = target[b, n].double()
                t = (t - t.mean()) / (t.var(unbiased=False) + 1e-6).sqrt()
                total += float(((pred[b, n].double() - t) ** 2).mean())
                count += 1
    assert float(masked_patch_mse(pred, target, mask)) == pytest.approx(total / count, rel=1e-5)


def test_patchify_lays_out_each_patch_in_grid_order():
    x = torch.arange(2 * 2 * 4 * 6, dtype=torch.float32).reshape(2, 2, 4, 6)
    p = patchify(x, 2)
    assert p.shape == (2, 6, 8)
    for b in range(2):
        for i in range(2):
            for j in range(3):
                assert torch.equal(p[b, i * 3 + j], x[b, :, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].reshape(-1))


def test_the_vit_blocks_see_only_the_visible_tokens_and_every_encoder_part_learns():
    encoder = create_model("vit_tiny", num_classes=0, in_chans=1, img_size=28)
    mae = MaskedAutoencoder(encoder, PretrainConfig(method="mae", mask_ratio=0.75), (1, 28, 28))
    seen = []
    encoder.blocks.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape)))
    g = torch.Generator().manual_seed(0)
    loss = mae.loss(torch.randn(3, 1, 28, 28, generator=g), g, lambda x, _g: x)
    assert mae.patch == 4 and seen == [(3, 1 + 49 - 37, 192)]  # the class token and 12 of 49 patches
    loss.backward()
    for name in ("patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "cls_token", "pos_embed"):
        grad = dict(encoder.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_the_encoded_tokens_do_not_depend_on_hidden_pixels():
    torch.manual_seed(0)
    encoder = create_model("hybrid_cnn_vit", num_classes=0, in_chans=1)
    mae = MaskedAutoencoder(encoder, PretrainConfig(method="mae", mask_ratio=0.5), (1, 28, 28)).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, 28, 28, generator=g)
    keep, mask = mae.hide(2, 49, torch.Generator().manual_seed(5))
    assert mask.sum(1).tolist() == [24.0, 24.0] and keep.shape == (2, 25)
    pixel = mask.reshape(2, 1, 7, 7).repeat_interleave(4, 2).repeat_interleave(4, 3)
    changed = x + 10 * pixel * torch.randn(x.shape, generator=g)  # other pixels in the hidden patches only
    encoded = []
    mae.embed.register_forward_pre_hook(lambda _m, args: encoded.append(args[0]))
    with torch.no_grad():
        losses = [mae.loss(v, torch.Generator().manual_seed(5), lambda im, _g: im) for v in (x, changed)]
    assert encoded[0].shape == (2, 25, 128) and torch.equal(encoded[0], encoded[1])
    assert losses[0] != losses[1], "the hidden pixels are the reconstruction target"


def test_mae_refuses_encoders_without_transformer_tokens():
    with pytest.raises(ConfigError, match="mae needs a ViT .* use mim"):
        MaskedAutoencoder(create_model("smallcnn", num_classes=0), PretrainConfig(method="mae"), (1, 28, 28))


def test_pretraining_the_hybrid_with_mae_gives_weights_that_init_from_loads(tmp_path, make_npz):
    data = make_npz(tmp_path / "d.npz", sizes=(24, 8, 8), size=16)
    dataset = load_dataset(str(data))
    cfg = RunConfig()
    cfg.data.spec, cfg.model.name, cfg.train.precision, cfg.train.threads = str(data), "hybrid_cnn_vit", "fp32", 1
    for key, value in {"batch_size": 8, "epochs": 2, "lr": 1e-3, "warmup_epochs": 0.5, "method": "mae"}.items():
        setattr(cfg.pretrain, key, value)
    history = pretrain(cfg, dataset, dataset.splits["train"].images[:0], tmp_path / "run")
    assert len(history) == 2 and all(np.isfinite(r["loss"]) for r in history)
    assert checkpoint.read_model_meta(tmp_path / "run")["pretrain"]["method"] == "mae"
    from medclass.models import build_model
    from medclass.training.transfer import head_parameter_names, load_matching, read_weights

    meta = checkpoint.read_model_meta(tmp_path / "run")
    model = build_model({**meta["architecture"], "num_outputs": 2})
    report = load_matching(model, read_weights(tmp_path / "run"), where="run")
    assert set(report["skipped"]) == set(head_parameter_names(model))
