"""Hand-crafted image features for the classical baselines: HOG, LBP histograms, dense SIFT and ORB descriptors.

All take a grey ``uint8`` stack ``(N, H, W)``. HOG and LBP give one fixed-length vector per image;
SIFT and ORB give local descriptors on a dense grid of keypoints (small medical images have too
few corners for a detector), which a bag of visual words turns into one histogram per image.
SIFT and ORB come from OpenCV, imported only when used.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-6


def hog(images: np.ndarray, *, cell: int = 4, bins: int = 9, block: int = 2) -> np.ndarray:
    """Histograms of oriented gradients (Dalal and Triggs 2005) per image: ``(N, F)``.

    Unsigned gradient orientations in ``bins`` bins per ``cell`` x ``cell`` pixel cell, votes
    weighted by gradient magnitude and split linearly between neighbouring bins; overlapping
    ``block`` x ``block`` cell blocks, L2-Hys normalised (clipped at 0.2, renormalised).
    """
    x = images.astype(np.float32)
    gy, gx = np.zeros_like(x), np.zeros_like(x)
    gx[:, :, 1:-1] = x[:, :, 2:] - x[:, :, :-2]
    gy[:, 1:-1, :] = x[:, 2:, :] - x[:, :-2, :]
    mag = np.hypot(gx, gy)
    ang = np.rad2deg(np.arctan2(gy, gx)) % 180
    n, h, w = x.shape
    cy, cx = h // cell, w // cell
    pos = ang / (180 / bins) - 0.5
    lo = np.floor(pos).astype(int) % bins
    hi = (lo + 1) % bins
    frac = pos - np.floor(pos)
    hist = np.zeros((n, cy, cx, bins), dtype=np.float32)
    rows = (np.arange(cy * cell) // cell)[None, :, None]
    cols = (np.arange(cx * cell) // cell)[None, None, :]
    img = np.arange(n)[:, None, None]
    m = mag[:, : cy * cell, : cx * cell]
    np.add.at(hist, (img, rows, cols, lo[:, : cy * cell, : cx * cell]), m * (1 - frac[:, : cy * cell, : cx * cell]))
    np.add.at(hist, (img, rows, cols, hi[:, : cy * cell, : cx * cell]), m * frac[:, : cy * cell, : cx * cell])
    blocks = []
    for by in range(cy - block + 1):
        for bx in range(cx - block + 1):
            v = hist[:, by : by + block, bx : bx + block].reshape(n, -1)
            v = v / np.sqrt((v * v).sum(1, keepdims=True) + _EPS)
            v = np.minimum(v, 0.2)
            blocks.append(v / np.sqrt((v * v).sum(1, keepdims=True) + _EPS))
    return np.concatenate(blocks, axis=1)


def lbp_codes(images: np.ndarray) -> np.ndarray:
    """Uniform local binary patterns (8 neighbours, radius 1; Ojala et al. 2002): codes 0-9 per inner pixel.

    Codes 0-8 count the neighbours at least as bright as the centre for patterns with at most two
    0/1 transitions around the circle; 9 collects every other pattern.
    """
    x = images.astype(np.int16)
    c = x[:, 1:-1, 1:-1]
    offsets = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))  # around the circle
    h, w = c.shape[1:]
    bits = np.stack([(x[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] >= c) for dy, dx in offsets], axis=-1)
    transitions = (bits != np.roll(bits, 1, axis=-1)).sum(-1)
    return np.where(transitions <= 2, bits.sum(-1), 9).astype(np.int64)


def lbp(images: np.ndarray, *, grid: int = 4) -> np.ndarray:
    """Uniform LBP histograms on a ``grid`` x ``grid`` layout of regions, concatenated: ``(N, grid * grid * 10)``."""
    codes = lbp_codes(images)
    n, h, w = codes.shape
    feats = []
    for i in range(grid):
        for j in range(grid):
            region = codes[:, i * h // grid : (i + 1) * h // grid, j * w // grid : (j + 1) * w // grid].reshape(n, -1)
            counts = np.stack([np.bincount(r, minlength=10) for r in region]).astype(np.float32)
            feats.append(counts / np.maximum(counts.sum(1, keepdims=True), 1))
    return np.concatenate(feats, axis=1)


def dense_descriptors(images: np.ndarray, kind: str, *, step: int = 4) -> list[np.ndarray]:
    """SIFT (128-D) or ORB (32-byte, as 256 bits) descriptors on a dense keypoint grid, per image.

    Images are enlarged to at least 64 px first (ORB needs a 31 px patch around each keypoint).
    """
    import cv2

    side = max(64, images.shape[1])
    scale = side / images.shape[1]
    extractor = cv2.SIFT_create() if kind == "sift" else cv2.ORB_create(edgeThreshold=15, patchSize=15)
    margin = 16 if kind == "orb" else 4
    grid = [
        cv2.KeyPoint(float(x), float(y), 8.0)
        for y in range(margin, side - margin, int(step * scale))
        for x in range(margin, side - margin, int(step * scale))
    ]
    out = []
    for img in images:
        big = cv2.resize(img, (side, side), interpolation=cv2.INTER_LINEAR) if side != img.shape[0] else img
        _, desc = extractor.compute(np.ascontiguousarray(big), grid)
        if desc is None:
            desc = np.zeros((0, 128 if kind == "sift" else 256), dtype=np.float32)
        elif kind == "orb":
            desc = np.unpackbits(desc, axis=1).astype(np.float32)
        out.append(desc.astype(np.float32))
    return out


def bovw_histograms(descriptors: list[np.ndarray], vocabulary: np.ndarray) -> np.ndarray:
    """Bag of visual words: each image's descriptors assigned to the nearest word, counts normalised: ``(N, K)``."""
    k = len(vocabulary)
    v2 = (vocabulary * vocabulary).sum(1)
    out = np.zeros((len(descriptors), k), dtype=np.float32)
    for i, d in enumerate(descriptors):
        if len(d):
            dist = v2[None, :] - 2 * d @ vocabulary.T
            counts = np.bincount(dist.argmin(1), minlength=k).astype(np.float32)
            out[i] = counts / counts.sum()
    return out
