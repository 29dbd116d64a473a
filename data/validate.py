"""Checks that examples fit the task: fields present, texts non-empty, labels known, ids unique.

Every check returns messages instead of raising at the first, so a user fixes a file in one go.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from prompt_core.pattern import empty_text

from .dataset_store import text_keys
from .errors import nearest

SHOWN = 5


def delimiter_hint(columns: Sequence[str]) -> str:
    """A hint for a header read as one or two columns that hold delimiters (a ``;``-separated sheet
    from a spreadsheet, a TSV read as CSV): the column a user names is not missing, it is merged."""
    merged = len(columns) <= 2 and any(d in c for c in columns for d in "\t;,|")
    return "; is the delimiter right (format: csv or tsv)?" if merged else ""


def check_examples(table: pa.Table, fields: Sequence[str], labels: Sequence[str] | None, source: str,
                   labels_required: bool) -> list[str]:
    problems = []
    missing = [f for f in fields if f not in table.column_names]
    if missing:
        found = table.column_names[1:]
        return [f"{source}: missing column(s) {missing} that the patterns use (columns: {found})"
                f"{delimiter_hint(found)}"]
    nested = [c for c in [*fields, "label"] if c in table.column_names and not pa.types.is_string(table[c].type)]
    if nested:
        return [f"{source}: column {c!r} holds {table[c].type} values, not text" for c in nested]
    if table.num_rows == 0:
        return [f"{source}: no rows"]
    blank = None
    for f in fields:
        empty = pc.equal(pc.utf8_trim_whitespace(pc.fill_null(table[f], "")), "")
        blank = empty if blank is None else pc.and_(blank, empty)
    if blank is not None:
        problems += _rows(table, blank, source, empty_text(fields))
    if labels_required:
        if "label" not in table.column_names:
            problems.append(_no_label_column(table.column_names[1:], source))
        else:
            known = pa.array(list(labels or []), pa.string())
            missing = pc.equal(pc.utf8_trim_whitespace(pc.fill_null(table["label"], "")), "")
            problems += _rows(table, missing, source, "no label")
            unknown = pc.and_(pc.invert(missing), pc.invert(pc.is_in(table["label"], value_set=known)))
            if pc.any(unknown).as_py():
                values = sorted(set(pc.filter(table["label"], unknown).to_pylist()), key=str)[:SHOWN]
                problems += _rows(table, unknown, source,
                                  f"label(s) {values} not in the verbalizer (labels: {list(labels or [])}"
                                  f"{_by_case(values, labels or [])})")
    dupes = [i for i, n in Counter(table["id"].to_pylist()).items() if n > 1]
    if dupes:
        problems.append(f"{source}: duplicate id(s) {dupes[:SHOWN]}{' …' if len(dupes) > SHOWN else ''}")
    return problems


def label_conflicts(labeled: pa.Table, fields: Sequence[str], source: str) -> list[str]:
    """A warning naming the gold set's texts that stand under two labels or more (annotators who disagreed, a
    pasted row relabeled): every model trains on each of the rows, which teach opposite things. Texts are
    compared as ``ipet ingest`` compares them (``text_keys``), which reports such rows as label conflicts."""
    keys = text_keys(labeled, fields).to_pylist()
    labels_of: dict[str, set] = {}
    for key, label in zip(keys, labeled["label"].to_pylist()):
        labels_of.setdefault(key, set()).add(label)
    ids = [i for i, key in zip(labeled["id"].to_pylist(), keys) if len(labels_of[key]) > 1]
    if not ids:
        return []
    texts = sum(len(v) > 1 for v in labels_of.values())
    more = f" and {len(ids) - SHOWN} more" if len(ids) > SHOWN else ""
    return [f"{source}: {texts} text(s) of the labeled set stand under two labels or more, at row id(s) "
            f"{ids[:SHOWN]}{more}; every model trains on each of those rows: keep the right label"]


def _by_case(values: Sequence[str], labels: Sequence[str]) -> str:
    """Why a value that is a label but for its case is not that label: labels are matched with their case
    (``POS`` and ``pos`` may be two labels), which a file written in capitals does not show."""
    pairs = [(v, label) for v in values for label in labels if v != label and v.casefold() == label.casefold()]
    return f"; labels are matched with their case: {pairs[0][0]!r} is not {pairs[0][1]!r}" if pairs else ""


def _no_label_column(columns: Sequence[str], source: str) -> str:
    """The columns there are, and the one a user most likely means (``Label``, `` label`` after a
    ``, `` separator, ``labels``), as the setting that reads it."""
    near = nearest("label", columns)
    fix = f"set label_column: {near!r}" if near else "set label_column: or rename:"
    return f"{source}: no 'label' column (columns: {list(columns)}; {fix}){delimiter_hint(columns)}"


def _rows(table: pa.Table, flags: pa.ChunkedArray, source: str, what: str) -> list[str]:
    ids = pc.filter(table["id"], flags).to_pylist()
    if not ids:
        return []
    more = f" and {len(ids) - SHOWN} more" if len(ids) > SHOWN else ""
    return [f"{source}: {what} at row id(s) {ids[:SHOWN]}{more}"]
