"""Test rows whose text is also in the training data: a leak that inflates every score.

A row leaks when all its input fields equal (ignoring surrounding whitespace, as ``ipet ingest``
compares) those of a labeled row or a pool row. Pool rows that leak are dropped: the pool only
feeds pseudo-labels, so nothing is lost but the leak. A labeled row that leaks is kept (the gold
set is the user's choice) and reported, so the user can fix the files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from .dataset_store import text_keys, typed_line

SHOWN = 10  # row ids listed per finding


@dataclass(frozen=True)
class Leaks:
    """Test row ids whose text is in the labeled set, and in the pool (whose copies were dropped); and the
    dataset store versions read whose own test set is not the run's (``other_test_sets``: ``store``,
    ``version``, ``test``, the name of the store's test set or None), which kept other texts out of their rows;
    and those whose rows an earlier reader may have changed (``typed_fields``: ``store``, ``version``,
    ``fields``; ``Version.typed_fields``)."""

    in_labeled: list[str] = field(default_factory=list)
    in_pool: list[str] = field(default_factory=list)
    dropped: int = 0
    other_test_sets: list[dict] = field(default_factory=list)
    typed_fields: list[dict] = field(default_factory=list)

    def lines(self, test: str) -> list[str]:
        """One line per finding, naming the test source (and the store), the count and the first row ids."""
        found = [f"dataset store {s['store']} (version {s['version']}) kept "
                 + (f"the texts of its own test set ({s['test']})" if s["test"] else "no test set's texts")
                 + f" out of its rows, not those of this run's test set {test}: it never checked its rows against "
                 "this one; the run drops pool rows whose text is in its test set, and reports labeled ones"
                 for s in self.other_test_sets]
        found += [typed_line(s["store"], s["version"], s["fields"]) for s in self.typed_fields]
        if self.in_pool:
            found.append(f"{test}: {len(self.in_pool)} test row(s) also in the unlabeled pool (leak), row id(s) "
                         f"{_ids(self.in_pool)}; their {self.dropped} pool row(s) were dropped")
        if self.in_labeled:
            found.append(f"{test}: {len(self.in_labeled)} test row(s) also in the labeled set (leak: scores are "
                         f"inflated), row id(s) {_ids(self.in_labeled)}; remove them from one of the files")
        return found

    def record(self) -> dict:
        return {"in_labeled": self.in_labeled, "in_pool": self.in_pool, "pool_rows_dropped": self.dropped,
                "other_test_sets": self.other_test_sets, "typed_fields": self.typed_fields}

    @classmethod
    def of(cls, record: dict | None) -> "Leaks":
        """From a data manifest's ``leaks`` (none in a manifest written before leaks were checked)."""
        record = record or {}
        return cls(record.get("in_labeled", []), record.get("in_pool", []), record.get("pool_rows_dropped", 0),
                   record.get("other_test_sets", []), record.get("typed_fields", []))


def drop_leaks(pool: pa.Table, labeled: pa.Table, test: pa.Table | None,
               fields: Sequence[str]) -> tuple[pa.Table, Leaks]:
    """The pool without the test set's texts, and what leaked."""
    if test is None or test.num_rows == 0:
        return pool, Leaks()
    test_keys = text_keys(test, fields).combine_chunks()
    in_pool = pc.is_in(text_keys(pool, fields), value_set=test_keys)
    pool_keys = text_keys(pool.filter(in_pool), fields).combine_chunks()
    labeled_keys = text_keys(labeled, fields).combine_chunks() if labeled.num_rows else pa.array([], pa.string())
    ids = test["id"].to_pylist()
    leaks = Leaks(in_labeled=_where(ids, pc.is_in(test_keys, value_set=labeled_keys)),
                  in_pool=_where(ids, pc.is_in(test_keys, value_set=pool_keys)),
                  dropped=pc.sum(in_pool).as_py() or 0)
    return pool.filter(pc.invert(in_pool)), leaks


def gold_texts_in_pool(pool: pa.Table, labeled: pa.Table, fields: Sequence[str]) -> int:
    """How many pool rows have a gold row's text. They stay in the pool (the final model learns their gold
    label, tasks/pseudo.py), but iPET never pseudo-labels them, so they cannot fill a generation."""
    if not labeled.num_rows or not pool.num_rows:
        return 0
    gold = text_keys(labeled, fields).combine_chunks()
    return pc.sum(pc.is_in(text_keys(pool, fields), value_set=gold)).as_py() or 0


def _where(ids: list[str], mask: pa.Array) -> list[str]:
    return [i for i, hit in zip(ids, mask.to_pylist()) if hit]


def _ids(ids: list[str]) -> str:
    return str(ids[:SHOWN]) + (f" and {len(ids) - SHOWN} more" if len(ids) > SHOWN else "")
