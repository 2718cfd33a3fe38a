"""Shipped training recipes (the ``*.yaml`` files beside this module) and the ``auto`` choice among them."""

from __future__ import annotations

from typing import Any

#: Side length (pixels) from which 2D images get the ``hires`` recipe (stride-4 stem).
HIRES_MIN_SIZE = 64
#: Tasks decided by an argmax over classes, which get the ``multiclass`` recipe below ``HIRES_MIN_SIZE``.
ARGMAX_TASKS = ("multiclass", "ordinal")


def auto_recipe(dataset: Any) -> str:
    """The recipe ``--recipe auto`` uses for a dataset, from its task and image shape.

    * 2D images of :data:`HIRES_MIN_SIZE` px or more: ``hires`` (the small residual CNN with a stride-4
      stem, 30 epochs, stronger augmentation and shift TTA).
    * Smaller 2D images of a multi-class or ordinal task: ``multiclass`` (the default recipe trained 30
      epochs instead of 12; neither trains multi-class tasks with class weights).
    * Anything else (binary and multi-label 2D below 64 px, 3D volumes): ``default``.

    The number of images needs no rule of its own: every recipe's ``train.min_steps`` gives small
    datasets more epochs. Evidence: BENCHMARKS.md, sections "multiclass" and "best".

    Args:
        dataset: A :class:`~medclass.data.dataset.Dataset` (its task and training images' shape are read).

    Returns:
        A recipe name that :func:`medclass.config.find_recipe` resolves.
    """
    shape = tuple(dataset.splits["train"].images.shape[2:])  # (H, W) or (D, H, W)
    if len(shape) != 2:
        return "default"
    if min(shape) >= HIRES_MIN_SIZE:
        return "hires"
    return "multiclass" if dataset.task in ARGMAX_TASKS else "default"
