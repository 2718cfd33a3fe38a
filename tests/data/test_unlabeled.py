"""Unlabelled pools: copies of evaluation images found at another size and crop, sources read in any layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from medclass.data.unlabeled import find_copies, read_images


def _smooth(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    coarse = torch.rand(n, 1, 5, 5, generator=torch.Generator().manual_seed(seed)) * 255
    return F.interpolate(coarse, size=(h, w), mode="bicubic").clamp(0, 255)


def test_a_copy_squeezed_to_a_square_is_found_where_the_reference_was_centre_cropped():
    originals = _smooth(6, 40, 64, seed=0)  # landscape images
    # the task's copy: the central 40x40 square, at 28 px (as MedMNIST prepared its images)
    reference = F.interpolate(originals[..., 12:52], size=28, mode="bilinear", antialias=True)
    # the pooled copy: the whole image squeezed to 32x32 (as a 224 px redistribution did), slightly brighter
    squeezed = F.interpolate(originals, size=(32, 32), mode="bilinear", antialias=True) * 1.1
    others = _smooth(6, 32, 32, seed=1)
    pool = torch.cat([squeezed, others]).round().clamp(0, 255).to(torch.uint8)
    found = find_copies(pool, reference.round().to(torch.uint8))
    assert found.copies.tolist() == [True] * 6 + [False] * 6
    assert (found.exact, found.near) == (0, 6)


def test_exact_copies_are_counted_apart():
    images = _smooth(4, 16, 16, seed=2).round().to(torch.uint8)
    found = find_copies(images, images[:2])
    assert found.copies.tolist() == [True, True, False, False] and found.exact == 2


def test_read_images_takes_a_flat_folder_and_bare_arrays(tmp_path):
    for i, a in enumerate(_smooth(3, 20, 20, seed=4)[:, 0].round().to(torch.uint8).numpy()):
        Image.fromarray(a).save(tmp_path / f"scan{i}.png")
    Image.fromarray(a).save(tmp_path / "same_again.png")  # byte-identical: read once
    assert read_images(str(tmp_path), {"dedup": True}).shape == (3, 1, 20, 20)
    np.save(tmp_path / "a.npy", np.zeros((5, 9, 9), np.uint8))
    assert read_images(str(tmp_path / "a.npy")).shape == (5, 1, 9, 9)
    np.savez(tmp_path / "b.npz", train_images=np.zeros((2, 9, 9, 3), np.uint8), extra=np.zeros(3))
    assert read_images(str(tmp_path / "b.npz")).shape == (2, 3, 9, 9)
    np.savez(tmp_path / "c.npz", labels=np.zeros(3))
    from medclass.errors import DataError

    with pytest.raises(DataError, match="c.npz: no '\\*images' array"):
        read_images(str(tmp_path / "c.npz"))
