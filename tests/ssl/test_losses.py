"""Self-supervised losses and pretext batches, checked against naive loops on known values."""

from __future__ import annotations

import math

import pytest
import torch

from medclass.ssl.losses import byol_loss, masked_l1, nt_xent
from medclass.ssl.methods import feature_grid, unfold_pixels
from medclass.ssl.pretext import SLAB_ORDERS, patch_mask, rotate_batch, shuffle_slabs


def _naive_nt_xent(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    z = [v / v.norm() for v in torch.cat([z1, z2]).double()]
    n, total = len(z1), 0.0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        denom = sum(math.exp(float(z[i] @ z[k]) / t) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(float(z[i] @ z[pos]) / t) / denom)
    return total / (2 * n)


def test_nt_xent_matches_a_naive_loop():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    assert float(nt_xent(z1, z2, 0.3)) == pytest.approx(_naive_nt_xent(z1, z2, 0.3), rel=1e-5)


def test_nt_xent_is_low_for_matching_views_and_high_for_swapped_ones():
    z = torch.eye(4) * 5
    assert float(nt_xent(z, z, 0.1)) < 1e-3
    assert float(nt_xent(z, z.roll(1, dims=0), 0.1)) > 5


def test_byol_loss_is_two_minus_two_cosine():
    p, z = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]]), torch.tensor([[2.0, 0.0], [1.0, 0.0], [-1.0, -1.0]])
    naive = sum(2 - 2 * float(a @ b) / float(a.norm() * b.norm()) for a, b in zip(p, z, strict=True)) / 3
    assert float(byol_loss(p, z)) == pytest.approx(naive)
    assert float(byol_loss(p, z)) == pytest.approx((0 + 2 + 4) / 3)


def test_masked_l1_averages_only_hidden_pixels():
    x = torch.zeros(1, 2, 2, 2)
    r = torch.arange(8.0).view(1, 2, 2, 2)
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    # hidden pixels (0,0) and (1,1) in both channels: |0|, |3|, |4|, |7| -> mean 3.5
    assert float(masked_l1(r, x, mask)) == pytest.approx(3.5)
    assert float(masked_l1(r, x, torch.zeros_like(mask))) == 0.0


def test_rotation_labels_undo_the_turns():
    x = torch.arange(2 * 1 * 3 * 3, dtype=torch.float32).view(2, 1, 3, 3).repeat(8, 1, 1, 1)
    turned, k = rotate_batch(x, torch.Generator().manual_seed(1))
    assert set(k.tolist()) <= {0, 1, 2, 3} and len(set(k.tolist())) > 1
    for i in range(len(x)):
        assert torch.equal(torch.rot90(turned[i], -int(k[i]), dims=(-2, -1)), x[i])
    with pytest.raises(ValueError, match="square 2D"):
        rotate_batch(torch.zeros(1, 1, 2, 3), torch.Generator())


def test_shuffled_slabs_follow_their_order_label():
    x = torch.arange(6, dtype=torch.float32).view(1, 1, 6, 1, 1).repeat(12, 1, 1, 2, 2)
    out, label = shuffle_slabs(x, torch.Generator().manual_seed(0))
    for i in range(len(x)):
        order = SLAB_ORDERS[int(label[i])]
        expect = torch.cat([x[i, :, 2 * s : 2 * s + 2] for s in order], dim=1)
        assert torch.equal(out[i], expect)
    assert len(set(label.tolist())) > 2


def test_patch_mask_hides_whole_patches_in_the_asked_share():
    m = patch_mask(torch.Size([3, 1, 8, 8]), 2, 0.25, torch.Generator().manual_seed(0))
    assert m.shape == (3, 1, 8, 8)
    patches = m.view(3, 4, 2, 4, 2).permute(0, 1, 3, 2, 4).reshape(3, 16, 4)
    assert (patches.min(-1).values == patches.max(-1).values).all()  # a patch is all hidden or all shown
    assert patches[..., 0].sum(1).tolist() == [4.0, 4.0, 4.0]  # 25% of 16 patches per image
    m3 = patch_mask(torch.Size([2, 1, 4, 4, 4]), 2, 0.5, torch.Generator().manual_seed(0))
    assert m3.sum().item() == 2 * 4 * 8  # 4 of 8 cubes of 8 voxels per volume


def test_unfold_pixels_lays_each_cell_out_as_a_block():
    pred = torch.arange(2 * 4 * 2 * 3, dtype=torch.float32).view(1, 8, 2, 3)  # C=2, s=2, grid 2x3
    out = unfold_pixels(pred, channels=2, scale=2)
    assert out.shape == (1, 2, 4, 6)
    for c in range(2):
        for gy in range(2):
            for gx in range(3):
                for dy in range(2):
                    for dx in range(2):
                        assert out[0, c, gy * 2 + dy, gx * 2 + dx] == pred[0, c * 4 + dy * 2 + dx, gy, gx]


def test_feature_grid_puts_vit_tokens_back_on_their_grid():
    tokens = torch.arange(1 * 5 * 3, dtype=torch.float32).view(1, 5, 3)  # a class token + 2x2 patches
    grid = feature_grid(tokens, 2)
    assert grid.shape == (1, 3, 2, 2)
    assert torch.equal(grid[0, :, 1, 0], tokens[0, 3])
