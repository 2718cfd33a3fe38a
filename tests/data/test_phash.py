"""Perceptual hash and near-duplicate pair search: against direct formulas and an all-pairs reference."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from medclass.data import phash
from medclass.data.phash import (
    dct_matrix,
    hamming,
    near_duplicate_pairs,
    phash_stack,
    popcount,
    thumbnail,
    thumbnail_correlation,
)


def smooth_image(seed: int, size: int = 96) -> np.ndarray:
    """A random smooth grey image ``(size, size)`` uint8 (values about 30..210): upsampled 6x6 noise plus fine noise."""
    rng = np.random.default_rng(seed)
    low = Image.fromarray(rng.integers(40, 200, (6, 6)).astype(np.uint8))
    a = np.asarray(low.resize((size, size), Image.Resampling.BICUBIC)).astype(np.int16)
    return np.clip(a + rng.integers(-8, 9, a.shape), 0, 255).astype(np.uint8)


def hash_of(a: np.ndarray) -> int:
    return int(phash.phash([a])[0])


def naive_pairs(h: np.ndarray, d: int) -> np.ndarray:
    dist = hamming(h[:, None], h[None, :])
    i, j = np.nonzero(np.triu(dist <= d, 1))
    return np.stack([i, j], axis=1)


# -------------------------------------------------------------------------------------------- hash


def test_dct_matrix_is_orthonormal_dct2():
    c = dct_matrix(8)
    assert np.allclose(c @ c.T, np.eye(8))
    x = np.random.default_rng(0).random(8)
    n = np.arange(8)
    direct = [np.sum(x * np.cos(np.pi * (2 * n + 1) * k / 16)) for k in range(8)]
    scale = np.array([np.sqrt(1 / 8)] + [np.sqrt(2 / 8)] * 7)
    assert np.allclose(c @ x, scale * direct)


def test_hash_bits_shape_and_flat_image():
    thumbs = np.stack([thumbnail(smooth_image(s)) for s in range(5)])
    h = phash_stack(thumbs)
    assert h.dtype == np.uint64 and h.shape == (5,)
    assert np.all(h & np.uint64(1) == 0)  # the DC bit is never set
    assert np.all(popcount(h) == 31)  # 63 AC coefficients against their median: 31 above
    assert phash_stack(np.full((2, 32, 32), 77, np.uint8)).tolist() == [0, 0]
    with pytest.raises(ValueError):
        phash_stack(np.zeros((1, 16, 16)))
    assert phash.phash([]).shape == (0,)


def test_hash_of_copies_and_unrelated_images():
    a = smooth_image(1)
    assert hash_of(a) == hash_of(a.copy())
    brighter = np.clip(a.astype(np.int16) + 20, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=75)
    jpeg = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
    smaller = np.asarray(Image.fromarray(a).resize((70, 70), Image.Resampling.BILINEAR))
    rgb = np.repeat(a[..., None], 3, axis=-1)
    for copy in (brighter, jpeg, smaller, rgb):
        assert hamming(hash_of(a), hash_of(copy)) <= 6  # here 0 (brighter), 4 (JPEG), 2 (resized), 0 (RGB)
    far = [int(hamming(hash_of(a), hash_of(smooth_image(s)))) for s in range(2, 12)]
    assert min(far) >= 12, far


def test_popcount_matches_python_and_table_fallback(monkeypatch):
    x = np.random.default_rng(0).integers(0, 2**63, 200, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    expected = [bin(int(v)).count("1") for v in x]
    assert popcount(x).tolist() == expected
    monkeypatch.delattr(np, "bitwise_count", raising=False)
    assert popcount(x).tolist() == expected


def test_thumbnail_correlation():
    a, b = smooth_image(1), smooth_image(2)
    brighter = np.clip(a.astype(np.int16) + 20, 0, 255).astype(np.uint8)
    flat = np.full_like(a, 50)
    thumbs = np.stack([thumbnail(x) for x in (a, brighter, b, flat, flat + 10)])
    r = thumbnail_correlation(thumbs, np.array([[0, 1], [0, 2], [3, 4], [0, 3]]), chunk=3)
    assert r[0] > 0.99 and r[1] < 0.9 and r[2] == 1.0 and r[3] == 0.0


# --------------------------------------------------------------------------------------- pair search


def planted_hashes(n: int, seed: int) -> np.ndarray:
    """Random hashes with exact copies, 1..6-bit variants and a clustered block."""
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**63, n, dtype=np.uint64) | (rng.integers(0, 2, n).astype(np.uint64) << np.uint64(63))
    k = n // 4
    for _ in range(3):
        flips = np.uint64(1) << rng.integers(0, 64, k).astype(np.uint64)
        src = rng.integers(0, n, k)
        dst = rng.integers(0, n, k)
        h[dst] = h[src] ^ flips
    h[:20] = h[20:40]  # exact copies
    h[40 : 40 + k] = rng.integers(0, 2**12, k).astype(np.uint64) << np.uint64(30)  # clustered: 12 free bits
    return h


@pytest.mark.parametrize("d", [0, 1, 3, 4, 8])
def test_pairs_match_all_pairs_reference(d):
    h = planted_hashes(1500, seed=d)
    got = near_duplicate_pairs(h, d)
    assert got.dtype == np.int64 and got.ndim == 2 and got.shape[1] == 2
    assert np.array_equal(got, naive_pairs(h, d))


@pytest.mark.parametrize("d", [2, 4, 6])
def test_pairs_recursive_bucket_splitting(monkeypatch, d):
    monkeypatch.setattr(phash, "_BRUTE", 4)  # force sub-bucketing on a small input
    monkeypatch.setattr(phash, "_BLOCK_CELLS", 64)
    h = planted_hashes(600, seed=10 + d)
    assert np.array_equal(near_duplicate_pairs(h, d), naive_pairs(h, d))


def test_pairs_many_identical_and_edge_cases():
    h = np.zeros(300, dtype=np.uint64)
    h[::3] = np.uint64(0b111)
    pairs = near_duplicate_pairs(h, 2)
    assert len(pairs) == 200 * 199 // 2 + 100 * 99 // 2  # zeros together, 0b111 together, 3 bits apart
    assert np.array_equal(pairs, naive_pairs(h, 2))
    assert near_duplicate_pairs(np.zeros(0, np.uint64), 4).shape == (0, 2)
    assert near_duplicate_pairs(np.array([5], np.uint64), 4).shape == (0, 2)
    assert len(near_duplicate_pairs(np.array([0, 2**64 - 1], np.uint64), 64)) == 1
    with pytest.raises(ValueError):
        near_duplicate_pairs(h, 65)


def test_pairs_fast_on_60k():
    rng = np.random.default_rng(0)
    h = rng.integers(0, 2**63, 60_000, dtype=np.uint64)
    h[30_000:] = h[:30_000] ^ (np.uint64(1) << rng.integers(0, 64, 30_000).astype(np.uint64))
    h[:1000] = 0  # a block of blank images
    start = time.perf_counter()
    pairs = near_duplicate_pairs(h, 4)
    assert time.perf_counter() - start < 10  # about 0.2 s here; generous for shared CPUs
    assert len(pairs) >= 1000 * 999 // 2 + 29_000
