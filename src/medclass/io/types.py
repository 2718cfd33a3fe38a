"""The one result type of every reader: pixels plus a metadata dictionary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class ImageData:
    """Pixels and metadata of one image file (or one series).

    Attributes:
        array: ``float32`` pixels shaped ``(H, W)`` or ``(H, W, 3)`` for an image, ``(F, H, W)`` or
            ``(F, H, W, 3)`` for a multi-frame file or volume; ``None`` when only the header was read.
            Values are the file's native values (DICOM: after the modality LUT, e.g. Hounsfield units
            for CT), or 0..1 when ``meta["windowed"]`` is true.
        meta: Metadata. Every reader sets ``path``, ``format``, ``rows``, ``columns``, ``frames``,
            ``samples`` (stored samples per pixel), ``channels`` (1 or 3 in ``array``), ``bits``
            (bits per stored sample), ``windowed`` and ``spacing`` (one value per spatial axis of
            ``array``, in array order, or ``None``); the format readers add their own keys.
            DICOM ``patient_id`` is the raw identifier: it is kept in memory only, and anything
            that writes it out must write a salted hash instead.
    """

    array: np.ndarray | None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def is_volume(self) -> bool:
        """True when ``array`` holds several frames/slices (its first axis)."""
        if self.array is None:
            return int(self.meta.get("frames") or 1) > 1
        return self.array.ndim - (self.meta.get("channels", 1) == 3) == 3
