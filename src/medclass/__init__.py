"""medclass: medical image classification on a plain CPU."""

from __future__ import annotations

__version__ = "0.1.0"
