"""Labels as the data writes them, matched to the config's labels.

The readers give every CSV and JSONL value as written (``data/readers.py``), so texts and ids are
exact. A label is matched more loosely, here and only here, because a file and a YAML verbalizer
write the same label differently: a value that is one of the config's labels as written is that
label; else, its surrounding whitespace aside (`` pos`` after a ``, `` separator), a value that is a
label, or the same number (``1.0``, ``1e0``, ``01`` for ``1``) or the same boolean (``True`` for
``true``) as exactly one label, is that label. Anything else stays as written, for
``check_examples`` (data/validate.py) to name with its file and rows.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc

NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")  # a number as CSV, JSON and YAML write one


def label_text(value: object) -> str:
    """A YAML verbalizer key as a label: YAML reads ``1:``, ``1.0:`` and ``true:`` as numbers and
    booleans; their labels are ``1``, ``1`` and ``true``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _value(text: str) -> tuple[str, object] | None:
    """What ``text`` says as a number or a boolean (exact: ``Decimal("1.0") == Decimal("1")``), if anything."""
    if NUMBER.fullmatch(text):
        try:
            return "number", Decimal(text)
        except InvalidOperation:  # an exponent past what Decimal holds (1e-99999999999999999999): no label's
            return None
    return ("boolean", text.lower()) if text.lower() in ("true", "false") else None


def aliases(values: Iterable[str | None], labels: Sequence[str]) -> dict[str, str]:
    """The label each of ``values`` that is no label as written stands for: trimmed, a label, or the same
    number or boolean as exactly one label; the others are left out (unknown, or ambiguous between two labels)."""
    by_value: dict[tuple[str, object], list[str]] = {}
    for label in labels:
        if (value := _value(label)) is not None:
            by_value.setdefault(value, []).append(label)
    known = set(labels)
    found = {}
    for text in values:
        if text is not None and text not in known:
            trimmed = text.strip()  # a value after a ", " separator, a cell with a stray space
            same = [trimmed] if trimmed in known else by_value.get(_value(trimmed), [])
            if len(same) == 1:
                found[text] = same[0]
    return found


def known_labels(table: pa.Table, labels: Sequence[str]) -> pa.Table:
    """``table`` with each value of its ``label`` column that stands for one of ``labels`` (``aliases``)
    replaced by that label; a table without a text ``label`` column as it is."""
    if "label" not in table.column_names or not pa.types.is_string(table["label"].type):
        return table
    column = table["label"]
    found = aliases(pc.unique(column).to_pylist(), labels)
    if not found:
        return table
    matched = pa.array([found.get(v, v) for v in column.to_pylist()], pa.string())
    return table.set_column(table.column_names.index("label"), "label", matched)
