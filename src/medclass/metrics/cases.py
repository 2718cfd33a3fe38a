"""Several images per case: one prediction per lesion, study or patient (``data.group_by``).

A case's prediction is the mean of its images' logits (before calibration; the run's calibration is
applied to the mean as it is to one image's logits). A case's label is its images' label; where they
disagree the most common one wins (multi-label: a label is present when any image has it), and the
number of such cases is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Cases:
    """Which case each image belongs to.

    Attributes:
        ids: ``(M,)`` case identifiers, in order of first appearance.
        index: ``(N,)`` the case (a row of ``ids``) of each image.
    """

    ids: np.ndarray
    index: np.ndarray

    @classmethod
    def of(cls, cases: np.ndarray) -> Cases:
        """Group ``cases`` ``(N,)`` (any hashable identifiers) into cases, kept in order of first appearance."""
        first: dict = {}
        index = np.array([first.setdefault(c, len(first)) for c in cases.tolist()], dtype=np.int64)
        return cls(np.array(list(first), dtype=object), index)

    def __len__(self) -> int:
        return len(self.ids)

    def sizes(self) -> np.ndarray:
        """``(M,)`` images per case."""
        return np.bincount(self.index, minlength=len(self))

    def mean_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """``(N, K)`` image logits -> ``(M, K)`` case logits, the mean over each case's images."""
        z = logits.reshape(len(self.index), -1).float()
        index = torch.as_tensor(self.index)
        total = torch.zeros(len(self), z.shape[1], dtype=z.dtype).index_add_(0, index, z)
        counts = torch.as_tensor(self.sizes(), dtype=z.dtype).clamp_min(1)
        return (total / counts[:, None]).reshape(len(self), *logits.shape[1:])

    def labels(self, labels: np.ndarray) -> tuple[np.ndarray, int]:
        """Image labels ``(N,)`` or ``(N, L)`` (NaN unknown) -> ``(case labels (M,) or (M, L), cases whose images
        disagree)``. Unknown labels are ignored; a case with none stays unknown (NaN)."""
        out = np.full((len(self), *labels.shape[1:]), np.nan, dtype=np.float32)
        mixed = 0
        for c in range(len(self)):
            rows = labels[self.index == c]
            if labels.ndim == 2:
                known = ~np.isnan(rows)
                if known.any():
                    values = np.where(known, rows, 0.0)
                    out[c] = np.where(known.any(0), values.max(0), np.nan)
                    mixed += int(np.any(known.all(0) & (values.min(0) != values.max(0))))
                continue
            known = rows[~np.isnan(rows)]
            if known.size:
                values, counts = np.unique(known, return_counts=True)
                out[c] = values[np.argmax(counts)]
                mixed += int(values.size > 1)
        return out, mixed
