"""Checking and coercing configuration values against their annotated types, with one-line errors."""

from __future__ import annotations

import types
from typing import Any, Literal, Union, get_args, get_origin

from medclass.errors import ConfigError


def check_choice(value: Any, choices: tuple[Any, ...], where: str, *, nullable: bool = False) -> Any:
    """``value`` as one of ``choices`` (a ``Literal``'s values), matched exactly, then ignoring case.

    With ``nullable``, the text ``none`` or ``null`` (as ``--set key=none`` gives) is ``None`` too.

    Raises:
        ConfigError: Any other value, with a one-line message that lists the choices.
    """
    if value in choices and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        for choice in choices:
            if isinstance(choice, str) and choice.lower() == value.lower():
                return choice
        if nullable and value.lower() in ("none", "null"):
            return None
    allowed = ", ".join(str(c) for c in choices) + (", null" if nullable else "")
    raise ConfigError(f"{where}: {value!r} is not one of {allowed}")


def check_literal(value: Any, hint: Any, where: str) -> tuple[bool, Any]:
    """Check ``value`` against a ``Literal`` hint (also ``Literal[...] | None`` and ``list[Literal[...]]``).

    Returns:
        ``(True, checked value)``, or ``(False, None)`` when ``hint`` holds no ``Literal``.
    """
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        if value is None:
            raise ConfigError(f"{where}: null is not allowed (use one of {', '.join(str(a) for a in args)})")
        return True, check_choice(value, args, where)
    if origin in (Union, types.UnionType):
        literals = [a for a in args if get_origin(a) is Literal]
        if len(literals) == 1 and set(args) <= {literals[0], type(None)}:
            if value is None and type(None) in args:
                return True, None
            return True, check_choice(value, get_args(literals[0]), where, nullable=type(None) in args)
    if origin is list and len(args) == 1 and get_origin(args[0]) is Literal:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return True, [check_choice(v, get_args(args[0]), f"{where}[{i}]") for i, v in enumerate(value)]
    return False, None


def check_type(value: Any, hint: Any, where: str) -> Any:
    """Coerce ``value`` to the annotated type where that is lossless, else raise ConfigError.

    A ``Literal`` (enum-like) field takes only its listed values: ``train.select_metric: 'aucc' is not one of
    auc, acc, loss``, where ``where`` names the file (or ``command line``) the value came from.
    """
    is_literal, checked = check_literal(value, hint, where)
    if is_literal:
        return checked
    text = str(hint)
    if text.startswith("dict"):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if value is None:
        if "None" in text:
            return None
        raise ConfigError(f"{where}: null is not allowed")
    if text.startswith("list"):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [float(v) for v in value] if "float" in text else list(value)
    if "bool" in text:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if "int" in text and "str" in text:  # e.g. frame: "middle" or an index
        return int(value) if isinstance(value, int) or (isinstance(value, str) and value.isdigit()) else str(value)
    if "int" in text and "float" not in text:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.isdigit())):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if "float" in text:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if "str" in text:
        return str(value)
    return value
