"""Clinical fields in the REST service: what the model card says about them, and the form fields a request sends.

A model trained with clinical fields (``--tabular``) takes them in ``POST /v1/predict`` and ``POST /v1/explain``
as multipart form fields beside ``file``, one per field, named as the field (``age=61``, ``sex=female``). A field
left out, empty, or one of the missing tokens (``unknown``, ``nan``, ...) is missing, as in training. Values are
checked against the checkpoint's schema (:class:`medclass.data.tabular.TabularSchema`) before the model runs: a
numeric field must read as a finite number and a categorical one must be a category seen in training (the REST
service is stricter here than :class:`~medclass.predict.Predictor`, which encodes an unseen category as "other":
a typo sent by a form should not pass silently). Form fields the model does not take are refused too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medclass.data.tabular import TabularSchema, category_of, is_missing, read_number
from medclass.errors import DataError


class FieldError(DataError):
    """A clinical form field the model cannot take (one line naming the field); the service answers 422."""


def describe(schema: TabularSchema | None) -> list[dict[str, Any]]:
    """The model card's ``clinical_fields``: one entry per field, in the model's order.

    Returns:
        ``[{"name": "age", "kind": "numeric"}, {"name": "sex", "kind": "categorical", "categories": [...]}]``;
        empty for an image-only model.
    """
    if schema is None:
        return []
    out = []
    for code in schema.columns:
        entry: dict[str, Any] = {"name": code.name, "kind": code.kind}
        if code.kind == "categorical":
            entry["categories"] = list(code.categories)
        out.append(entry)
    return out


def read_fields(form: Any, schema: TabularSchema | None, *, file_field: str = "file") -> dict[str, Any] | None:
    """The clinical fields of a multipart form, checked against ``schema``.

    Args:
        form: The parsed form (Starlette ``FormData``: ``multi_items()`` gives ``(name, value)`` pairs), or a
            mapping name -> value.
        schema: The checkpoint's schema, ``None`` for an image-only model.
        file_field: The upload's field, not a clinical field.

    Returns:
        ``None`` for an image-only model; else field -> value (``float`` for numeric fields, the category's text
        for categorical ones) for each field given and not missing.

    Raises:
        FieldError: A form field the model does not take (any, for an image-only model), one given twice, a file
            sent as a field, a numeric value that is not a number, or a category not seen in training.
    """
    pairs = list(form.multi_items()) if hasattr(form, "multi_items") else list(dict(form).items())
    pairs = [(k, v) for k, v in pairs if k != file_field]
    if schema is None:
        if pairs:
            raise FieldError(f"form field '{pairs[0][0]}': this model was trained on images only; it takes no fields")
        return None
    codes = {c.name: c for c in schema.columns}
    row: dict[str, Any] = {}
    seen: set[str] = set()
    for name, value in pairs:
        code = codes.get(name)
        if code is None:
            raise FieldError(f"form field '{name}': not a clinical field of this model (it takes {', '.join(codes)})")
        if name in seen:
            raise FieldError(f"clinical field '{name}': given twice")
        seen.add(name)
        if not isinstance(value, str):
            raise FieldError(f"clinical field '{name}': send a value, not a file")
        if is_missing(value):
            continue
        if code.kind == "numeric":
            number = read_number(value)
            if number is None:
                raise FieldError(f"clinical field '{name}': {value.strip()[:40]!r} is not a number")
            row[name] = number
        else:
            category = category_of(value)
            if category not in code.categories:
                known = ", ".join(code.categories)
                raise FieldError(
                    f"clinical field '{name}': {category[:40]!r} is not one of {known} (or leave it empty)"
                )
            row[name] = category
    return row


def echo(row: Mapping[str, Any] | None, schema: TabularSchema | None) -> dict[str, Any] | None:
    """What a prediction reports as the fields it used: every field's value, ``None`` where it was missing."""
    if schema is None or row is None:
        return None
    return {name: row.get(name) for name in schema.names}
