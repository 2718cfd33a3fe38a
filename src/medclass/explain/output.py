"""Explanation files: a heat-map overlay PNG and the raw map (``.npy``) per input; montages for volumes."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from medclass.utils.files import atomic_write


def overlay(image: np.ndarray, heat: np.ndarray, *, weight: float = 0.45) -> np.ndarray:
    """``uint8`` ``(H, W, 3)``: a ``(C, H, W)`` ``uint8`` image under a ``(H, W)`` map in [0, 1] (jet colours)."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    rgb = np.repeat(image[:1], 3, 0) if image.shape[0] == 1 else image[:3]
    base = np.ascontiguousarray(rgb.transpose(1, 2, 0), dtype=np.float32) / 255
    return show_cam_on_image(base, heat.astype(np.float32), use_rgb=True, image_weight=1 - weight)


def montage(tiles: list[np.ndarray], columns: int | None = None) -> np.ndarray:
    """Lay ``(H, W, 3)`` tiles out in a grid (slices of a volume), left to right, top to bottom."""
    n = len(tiles)
    cols = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    h, w = tiles[0].shape[:2]
    grid = np.zeros((rows * h, cols * w, 3), dtype=np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = t
    return grid


def safe_name(source: str, index: int) -> str:
    """A file-name stem for an input: its base name with unsafe characters replaced, prefixed by its index."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(source.replace("[", "_").rstrip("]")).name).strip("._") or "input"
    return f"{index:04d}_{stem[:80]}"


def write_explanation(out_dir: Path, stem: str, image: np.ndarray, heat: np.ndarray) -> tuple[Path, Path]:
    """Write ``stem.png`` (overlay; volumes as a montage of slices) and ``stem.npy`` (the map) atomically."""
    from PIL import Image

    if heat.ndim == 3:  # (D, H, W): one tile per slice
        picture = montage([overlay(image[:, d], heat[d]) for d in range(heat.shape[0])])
    else:
        picture = overlay(image, heat)
    png = atomic_write(out_dir / f"{stem}.png", lambda fh: Image.fromarray(picture).save(fh, format="PNG"), binary=True)
    npy = atomic_write(out_dir / f"{stem}.npy", lambda fh: np.save(fh, heat), binary=True)
    return png, npy
