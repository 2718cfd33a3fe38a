"""Values given explicitly, over a recipe: ``--set SECTION.KEY=VALUE`` items and keyword overrides.

:func:`medclass.config.build_config` applies them last. ``None`` means "not given"; :data:`NULL` sets a key
to null on purpose.
"""

from __future__ import annotations

from typing import Any

import yaml

from medclass.errors import ConfigError


def parse_set(items: list[str]) -> dict[str, Any]:
    """Nested overrides from ``--set`` items: ``train.epochs=3`` -> ``{"train": {"epochs": 3}}``.

    Keys may go deeper (``per_modality.ct.train.epochs=3``); a later item for the same key wins. Each
    value is read as YAML, so ``1``, ``0.5``, ``true``, ``null`` and ``[hflip, shift]`` have their
    types. Unknown keys and wrong types are left to :func:`~medclass.config.build_config`, which names them.

    Args:
        items: ``SECTION.KEY=VALUE`` strings.

    Returns:
        The overrides, for :func:`~medclass.config.build_config`.

    Raises:
        ConfigError: An item without ``=``, without a section (``epochs=3``), or whose value is not valid YAML.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        parts = [p.strip() for p in key.split(".")]
        if not sep or len(parts) < 2 or not all(parts):
            raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. train.epochs=3")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item!r}: invalid value ({str(err).splitlines()[0]})") from None
        put_dotted(out, parts, value, f"--set {item!r}")
    return out


def put_dotted(tree: dict[str, Any], key: str | list[str], value: Any, where: str | None = None) -> None:
    """Set ``tree["a"]["b"]["c"] = value`` for the dotted ``key`` ``"a.b.c"`` (or its parts), making sections.

    Args:
        tree: Nested overrides, changed in place.
        key: Dotted key, or its parts.
        value: The value to set.
        where: What the error names (default: the key).

    Raises:
        ConfigError: A part of ``key`` already holds a value, not a section.
    """
    parts = key.split(".") if isinstance(key, str) else key
    node = tree
    for i, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{where or '.'.join(parts)}: '{'.'.join(parts[: i + 1])}' is a value, not a section")
    node[parts[-1]] = value


class _Null:
    """An override that sets a key to null on purpose (``--set train.max_minutes=null``), unlike ``None``, which
    means "not given"."""

    def __repr__(self) -> str:
        return "NULL"


NULL = _Null()


def drop_none(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` without its ``None`` values and emptied sections, with :data:`NULL` turned into ``None``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            sub = drop_none(v)
            if sub:
                out[k] = sub
        elif v is NULL:
            out[k] = None
        elif v is not None:
            out[k] = v
    return out
