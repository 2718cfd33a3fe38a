"""Perceptual hashes of images and fast search for near-identical pairs, in NumPy only.

The hash is a DCT hash: the grey image is shrunk to 32x32 (antialiased), transformed with an
orthonormal 2-D DCT-II, and the 63 lowest-frequency AC coefficients (the top-left 8x8 block less
the DC term) become 63 bits, each set when its coefficient exceeds their median. The DC term, which
only carries the overall brightness, is left out of both the median and the bits (bit 0 is always
0), so a brightened copy hashes (nearly) the same. Images whose hashes differ in few bits (Hamming
distance) are candidates; :func:`thumbnail_correlation` then tells copies from mere look-alikes.

:func:`near_duplicate_pairs` finds every pair within a Hamming distance without comparing all pairs:
by the pigeonhole principle two hashes that differ in at most ``d`` bits agree exactly on at least one
of ``d + 1`` disjoint bands of bits, so only hashes that share a band value are compared
(multi-index hashing). Buckets that are still large (many similar images share a band value) are
split again on the remaining bits, so the search stays fast on real, clustered data.

Example:
    >>> import numpy as np
    >>> h = np.array([0b1011, 0b1001, 0xFFFF_0000], dtype=np.uint64)
    >>> near_duplicate_pairs(h, 1).tolist()
    [[0, 1]]
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = [
    "HASH_SIZE",
    "dct_matrix",
    "hamming",
    "near_duplicate_pairs",
    "phash",
    "phash_stack",
    "popcount",
    "thumbnail",
    "thumbnail_correlation",
]

HASH_SIZE = 32
"""Side of the grey thumbnail that is transformed."""
_BLOCK = 8  # the top-left BLOCK x BLOCK coefficients give the bits
_BRUTE = 512  # compare all pairs directly in buckets up to this size
_BLOCK_CELLS = 1 << 22  # hash comparisons per block in the direct all-pairs comparison


def dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix ``C`` (``(n, n)`` float64): ``C @ x`` transforms a length-``n`` signal.

    ``C[k, i] = a_k cos(pi (2 i + 1) k / (2 n))`` with ``a_0 = sqrt(1/n)`` and ``a_k = sqrt(2/n)``, so
    ``C @ C.T`` is the identity.
    """
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    c = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    c[0] /= np.sqrt(2.0)
    return c


_DCT = dct_matrix(HASH_SIZE)[:_BLOCK]  # only the low frequencies are ever needed: (8, 32)
_WEIGHTS = np.left_shift(np.uint64(1), np.arange(_BLOCK * _BLOCK, dtype=np.uint64))  # bit j of the hash


def phash_stack(thumbs: np.ndarray) -> np.ndarray:
    """Hash a stack of grey 32x32 thumbnails.

    Args:
        thumbs: ``(N, 32, 32)`` grey values (any real dtype, e.g. uint8 from :func:`thumbnail`).

    Returns:
        ``(N,)`` ``uint64`` hashes; bit ``8 u + v`` is coefficient ``(u, v)`` of the 8x8 block, bit 0
        (the DC term) is always 0. A constant image hashes to 0.
    """
    x = np.asarray(thumbs, dtype=np.float64)
    if x.ndim != 3 or x.shape[1:] != (HASH_SIZE, HASH_SIZE):
        raise ValueError(f"expected (N, {HASH_SIZE}, {HASH_SIZE}) thumbnails, got {x.shape}")
    coef = np.einsum("ui,nij,vj->nuv", _DCT, x, _DCT, optimize=True).reshape(len(x), -1)  # (N, 64)
    ac = coef[:, 1:]
    med = np.median(ac, axis=1, keepdims=True)
    # Rounding noise of the transform must not decide bits: a flat image has every AC coefficient ~1e-13.
    tol = 1e-9 * np.maximum(np.abs(coef[:, :1]), 1.0)
    bits = np.zeros(coef.shape, dtype=bool)
    bits[:, 1:] = ac - med > tol
    return (bits.astype(np.uint64) * _WEIGHTS).sum(axis=1, dtype=np.uint64)


def thumbnail(image: np.ndarray) -> np.ndarray:
    """Shrink one image to the grey 32x32 thumbnail that is hashed.

    Args:
        image: ``uint8`` ``(H, W)`` grey or ``(H, W, 3)`` RGB.

    Returns:
        ``(32, 32)`` ``uint8``, resized with an antialiasing (Lanczos) filter.
    """
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(image))
    if img.mode != "L":
        img = img.convert("L")
    return np.asarray(img.resize((HASH_SIZE, HASH_SIZE), Image.Resampling.LANCZOS))


def phash(images: Iterable[np.ndarray]) -> np.ndarray:
    """DCT hash of each image (see :func:`phash_stack`).

    Args:
        images: ``uint8`` images, each ``(H, W)`` or ``(H, W, 3)``; sizes may differ.

    Returns:
        ``(N,)`` ``uint64`` hashes.
    """
    thumbs = [thumbnail(a) for a in images]
    if not thumbs:
        return np.zeros(0, dtype=np.uint64)
    return phash_stack(np.stack(thumbs))


def popcount(x: np.ndarray) -> np.ndarray:
    """Number of set bits of each ``uint64``, as ``uint8`` of the same shape."""
    x = np.asarray(x, dtype=np.uint64)
    if hasattr(np, "bitwise_count"):  # NumPy >= 2.0
        return np.bitwise_count(x)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
    return table[x.reshape(-1, 1).view(np.uint8)].sum(axis=1, dtype=np.uint8).reshape(x.shape)


def hamming(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Hamming distance between hashes (broadcasting), as ``uint8``."""
    return popcount(np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64)))


# -------------------------------------------------------------------------------- pair search


def _bands(bits: np.ndarray, n: int) -> list[np.ndarray]:
    """Split bit positions into ``n`` contiguous bands of near-equal width (empty bands dropped)."""
    return [b for b in np.array_split(bits, n) if len(b)]


def _band_keys(hashes: np.ndarray, band: np.ndarray) -> np.ndarray:
    """The bits of ``band`` of each hash, as a ``uint64`` key."""
    mask = np.uint64(0)
    for b in band.tolist():
        mask |= np.uint64(1) << np.uint64(b)
    return hashes & mask


def _pairs_in_groups(order: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All pairs of positions inside each group of a sorted order, vectorised.

    Args:
        order: ``(M,)`` items, sorted so that each group is contiguous.
        starts: ``(G,)`` start of each group in ``order``.
        sizes: ``(G,)`` size of each group.

    Returns:
        Two ``(P,)`` arrays of items, ``P = sum(s (s - 1) / 2)``.
    """
    starts, sizes = np.asarray(starts, dtype=np.int64), np.asarray(sizes, dtype=np.int64)
    offset = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    pos = np.repeat(starts, sizes) + offset
    end = np.repeat(starts + sizes, sizes)
    partners = end - pos - 1  # later members of the same group
    total = int(partners.sum())
    if total == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    left = np.repeat(pos, partners)
    first = np.cumsum(partners) - partners  # index of each left item's first pair
    step = np.arange(total) - np.repeat(first, partners) + 1
    return order[left], order[left + step]


def _all_pairs(items: np.ndarray, hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """Direct comparison of every pair of ``items``, in blocks of rows; returns ``(P, 2)`` item pairs."""
    out = [np.zeros((0, 2), np.int64)]
    h = hashes[items]
    n = len(items)
    step = max(1, _BLOCK_CELLS // max(n, 1))
    for lo in range(0, n - 1, step):
        rows = np.arange(lo, min(lo + step, n - 1))
        cols = slice(lo + 1, n)  # only later items: each pair once
        d = hamming(h[rows, None], h[None, cols])
        i, j = np.nonzero((d <= max_distance) & (np.arange(lo + 1, n)[None, :] > rows[:, None]))
        out.append(np.stack([items[rows[i]], items[lo + 1 + j]], axis=1))
    return np.concatenate(out)


def _search(items: np.ndarray, hashes: np.ndarray, free: np.ndarray, max_distance: int, out: list[np.ndarray]) -> None:
    """Append to ``out`` the pairs of ``items`` within ``max_distance``; all items agree outside ``free`` bits.

    Pairs may be appended more than once (they can share several bands); the caller removes repeats.
    """
    n = len(items)
    if n < 2:
        return
    h = hashes[items]
    varying = np.bitwise_or.reduce(h ^ h[0])
    free = free[((varying >> free.astype(np.uint64)) & np.uint64(1)).astype(bool)]  # equal bits never differ
    if n <= _BRUTE or len(free) <= max_distance + 1:
        out.append(_all_pairs(items, hashes, max_distance))
        return
    groups = []
    cost = 0
    for band in _bands(free, max_distance + 1):
        keys = _band_keys(h, band)
        order = np.argsort(keys, kind="stable")
        _, starts, sizes = np.unique(keys[order], return_index=True, return_counts=True)
        cost += int((sizes * (sizes - 1) // 2).sum())
        groups.append((order, starts, sizes, band))
    if cost >= n * (n - 1) // 2:  # the bands do not separate these hashes: comparing all pairs is cheaper
        out.append(_all_pairs(items, hashes, max_distance))
        return
    for order, starts, sizes, band in groups:
        big = sizes > _BRUTE
        small = (sizes > 1) & ~big
        a, b = _pairs_in_groups(items[order], starts[small], sizes[small])
        close = hamming(hashes[a], hashes[b]) <= max_distance
        out.append(np.stack([a[close], b[close]], axis=1))
        rest = np.setdiff1d(free, band)
        for s, k in zip(starts[big].tolist(), sizes[big].tolist()):
            _search(items[order[s : s + k]], hashes, rest, max_distance, out)


def near_duplicate_pairs(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """Every pair of hashes whose Hamming distance is at most ``max_distance``.

    Identical hashes are collapsed first (so thousands of blank images cost nothing), then the
    distinct ones are searched by multi-index hashing (see the module docstring).

    Args:
        hashes: ``(N,)`` ``uint64`` hashes.
        max_distance: Largest Hamming distance that counts, 0..64.

    Returns:
        ``(P, 2)`` ``int64`` row pairs ``i < j``, sorted; pairs of equal hashes included.
    """
    hashes = np.asarray(hashes, dtype=np.uint64).reshape(-1)
    if not 0 <= max_distance <= 64:
        raise ValueError(f"max_distance must be in 0..64, got {max_distance}")
    uniq, inverse, counts = np.unique(hashes, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    found: list[np.ndarray] = []
    if max_distance > 0 and len(uniq) > 1:
        _search(np.arange(len(uniq)), uniq, np.arange(64), max_distance, found)
    upairs = np.concatenate(found) if found else np.zeros((0, 2), np.int64)
    if len(upairs):
        upairs = np.unique(np.sort(upairs, axis=1), axis=0)
    # expand distinct-hash pairs to rows: members of one hash x members of the other, plus equal-hash rows
    members = np.argsort(inverse, kind="stable")
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    parts = []
    dup = np.flatnonzero(counts > 1)
    if len(dup):
        a, b = _pairs_in_groups(members, first[dup], counts[dup])
        parts.append(np.stack([a, b], axis=1))
    if len(upairs):
        ca, cb = counts[upairs[:, 0]], counts[upairs[:, 1]]
        n = ca * cb
        which = np.repeat(np.arange(len(upairs)), n)
        k = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        a = members[first[upairs[which, 0]] + k // cb[which]]
        b = members[first[upairs[which, 1]] + k % cb[which]]
        parts.append(np.stack([a, b], axis=1))
    if not parts:
        return np.zeros((0, 2), np.int64)
    pairs = np.sort(np.concatenate(parts), axis=1).astype(np.int64)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def thumbnail_correlation(thumbs: np.ndarray, pairs: np.ndarray, *, chunk: int = 8192) -> np.ndarray:
    """Pearson correlation of the thumbnails of each pair: a check of hash matches that looks at pixels.

    Hashes of images that merely look alike (two chest X-rays of different children) can agree
    closely; a brightened, recompressed or resized copy of an image also keeps its thumbnail's
    correlation near 1, while look-alikes stay lower.

    Args:
        thumbs: ``(N, 32, 32)`` grey thumbnails (see :func:`thumbnail`).
        pairs: ``(P, 2)`` row pairs.
        chunk: Pairs per block (memory bound).

    Returns:
        ``(P,)`` ``float32`` correlations; two flat thumbnails count as 1, a flat and a non-flat one as 0.
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    out = np.empty(len(pairs), dtype=np.float32)
    for lo in range(0, len(pairs), chunk):
        p = pairs[lo : lo + chunk]
        z = []
        for side in (0, 1):
            x = thumbs[p[:, side]].reshape(len(p), -1).astype(np.float32)
            x -= x.mean(axis=1, keepdims=True)
            norm = np.sqrt((x * x).sum(axis=1, keepdims=True))
            z.append((x / np.maximum(norm, 1e-6), norm[:, 0] < 1e-3))
        (za, flat_a), (zb, flat_b) = z
        r = (za * zb).sum(axis=1)
        out[lo : lo + len(p)] = np.where(flat_a & flat_b, 1.0, np.where(flat_a | flat_b, 0.0, r))
    return out
