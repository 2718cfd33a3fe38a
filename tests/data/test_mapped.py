"""Sets larger than memory: splits decoded into memory-mapped ``.npy`` files, read a batch at a time.

The mapped path gives the same pixels as the in-memory one (a late colour file included) and the same training
run; under a data-segment limit (``RLIMIT_DATA``, which file-backed mappings do not count against) that the
in-memory path exceeds, the mapped path still walks every batch.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import medclass
from medclass.data.sources import load_dataset
from medclass.errors import DataError

REPO = Path(__file__).resolve().parents[2]


def _folder(root: Path, n: int, size: int, colour_at: int | None = None) -> Path:
    """``n`` smooth images in two class folders (fast to write and read); one RGB image at ``colour_at``."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, size)[None, :] * np.linspace(0, 1, size)[:, None]
    for i in range(n):
        label = i % 2
        pixels = (ramp * (150 + 100 * label) + rng.integers(0, 20)).clip(0, 255).astype(np.uint8)
        pixels[0, :2] = i % 256, i // 256  # every file unique: exact duplicates would be dropped
        image = Image.fromarray(pixels)
        if i == colour_at:
            image = Image.fromarray(np.stack([pixels, pixels // 2, 255 - pixels], -1))
        folder = root / f"c{label}"
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{i:05d}.png")
    return root


def _mapped_file(t: torch.Tensor) -> str | None:
    """The file whose mapping holds ``t``'s data (from /proc/self/maps), or ``None`` for anonymous memory."""
    ptr = t.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        lo, hi = (int(v, 16) for v in parts[0].split("-"))
        if lo <= ptr < hi:
            return parts[5] if len(parts) == 6 and parts[5].startswith("/") else None
    return None


def test_mapped_splits_hold_the_pixels_of_the_in_memory_path(tmp_path):
    root = _folder(tmp_path / "f", 60, 16, colour_at=50)
    held = load_dataset(str(root), mmap="never")
    mapped = load_dataset(str(root), mmap="always")
    for name, split in held.splits.items():
        other = mapped.splits[name]
        assert _mapped_file(other.images).endswith(".npy") and _mapped_file(split.images) is None
        assert torch.equal(split.images, other.images) and np.array_equal(split.labels, other.labels)
    assert mapped.channels == 3, "a colour file late in the order makes every image RGB"
    assert load_dataset(str(root), mmap="always").splits["train"].images.shape == mapped.splits["train"].images.shape
    with pytest.raises(DataError, match="data.mmap: 'sometimes'"):
        load_dataset(str(root), mmap="sometimes")


def test_training_on_mapped_splits_is_training_on_the_same_pixels(tmp_path):
    root = _folder(tmp_path / "f", 48, 16)
    options = {"epochs": 2, "batch_size": 16, "train.min_steps": 0, "train.threads": 1, "eval.n_bootstrap": 10}
    a = medclass.train(root, out=tmp_path / "held", progress=False, **options, **{"data.mmap": "never"})
    b = medclass.train(root, out=tmp_path / "mapped", progress=False, **options, **{"data.mmap": "always"})
    assert (a.path / "history.csv").read_text().split("\n")[1].split(",")[:5] == (
        (b.path / "history.csv").read_text().split("\n")[1].split(",")[:5]
    )
    assert "mmap: always" in (b.path / "config.yaml").read_text()


WALK = """
import re, resource, sys
from medclass.data.dataset import iterate_batches
from medclass.data.sources import load_dataset
# both caches exist: what is measured is holding the set, not decoding it
used = int(re.search(r"VmData:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024
resource.setrlimit(resource.RLIMIT_DATA, (used + (48 << 20), resource.RLIM_INFINITY))
try:
    ds = load_dataset(sys.argv[1], mmap=sys.argv[2], image_size=256)
    total = sum(int(b[0].numpy().sum(dtype="int64")) for s in ds.splits.values() for b in iterate_batches(s, 8))
    print("walked", total)
except MemoryError:
    print("out of memory")
"""


def test_a_set_larger_than_the_memory_limit_is_walked_through_its_mapping(tmp_path):
    root = _folder(tmp_path / "big", 1600, 256)  # 1600 x 256 x 256 = 105 MB of pixels, the limit 48 MB more

    def walk(mode: str) -> str:
        cmd = [sys.executable, "-c", WALK, str(root), mode]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        assert done.stdout, done.stderr[-2000:]
        return done.stdout

    pixels = np.stack([np.asarray(Image.open(p)) for p in sorted(root.glob("c*/*.png"))])
    for mode in ("always", "never"):  # decode both caches; every pixel is there once
        ds = load_dataset(str(root), mmap=mode, image_size=256)
        assert sum(int(s.images.numpy().sum(dtype="int64")) for s in ds.splits.values()) == int(
            pixels.sum(dtype="int64")
        )
        del ds
    assert walk("always").startswith("walked"), "the mapped set is read a batch at a time"
    assert walk("never") == "out of memory\n", "the limit binds: the set does not fit under it"


def test_releasing_pages_keeps_the_data_and_never_touches_other_memory(tmp_path):
    from medclass.data.mapped import release

    images = load_dataset(str(_folder(tmp_path / "f", 40, 64)), mmap="always").splits["train"].images
    copy = images.clone()
    release(images)
    assert torch.equal(images, copy), "pages dropped are read again from the file"
    anonymous = torch.arange(100_000, dtype=torch.int64)
    release(anonymous)
    release(copy)  # a copy is ordinary memory
    assert torch.equal(anonymous, torch.arange(100_000)) and torch.equal(copy, images)
