"""Error types that medclass raises for bad input.

Every user-facing error is a :class:`MedclassError`: the CLI prints its message as one line on
stderr and exits with status 2, without a traceback. Messages name the file (or setting) and the
problem, e.g. ``"data/x.npz: missing key 'train_labels'"``.
"""

from __future__ import annotations


class MedclassError(Exception):
    """Base class for errors caused by the user's input, not by a bug."""


class ConfigError(MedclassError):
    """A configuration file or option is invalid."""


class DataError(MedclassError):
    """A dataset cannot be found, read or used."""


class InvalidImageError(DataError):
    """An image file is unreadable, truncated, corrupt or too large."""


class ModelError(MedclassError):
    """A model name, architecture or checkpoint is invalid."""


class TrainingDiverged(MedclassError):
    """The training loss became NaN or infinite: the settings (learning rate, precision) do not train this data."""


class UndefinedMetricWarning(UserWarning):
    """A metric is undefined for the given data (e.g. one class only); its value is NaN.

    Defined here rather than in :mod:`medclass.metrics`, which re-exports it, so that the metric
    modules need not import their own package.
    """
