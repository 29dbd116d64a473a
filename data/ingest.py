"""New data into a dataset store: validate the file, drop texts already seen, commit one version.

A bad file raises :class:`DataError` before anything is written, so the current version stays
current. The dataset's schema (input fields, labels, the test set to keep out) is fixed by its
first ingest, which needs a run config; later ingests take it from the current version, and refuse
a test set whose texts are not the ones its versions kept out: the store cannot take back rows it
holds, so a swapped test set would silently overlap them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ValidationError

from .errors import DataError
from .labels import known_labels
from .location import is_url, local
from .sources import Source, dataset_store, read_source, source_path
from .outputs import file_digest
from .validate import SHOWN, check_examples
from .dataset_store import DatasetStore, Kind, Version, text_keys, texts_key


@dataclass(frozen=True)
class Schema:
    """What every version of a dataset holds: the patterns' input fields, the labels, and the test
    set whose texts never enter the store (so training data cannot leak into the score)."""

    fields: tuple[str, ...]
    labels: tuple[str, ...]
    test: dict | None = None  # a Source, as data, with an absolute path (or a URL) to its file or store

    @classmethod
    def from_config(cls, fields: Sequence[str], labels: Sequence[str], test: Source | None,
                    root: str | Path = ".") -> "Schema":
        """The config's test set is read where the config's data root puts it (a folder or a URL),
        whichever directory a later ingest runs from."""
        if test is not None and test.path:
            where = source_path(test, root)
            test = test.model_copy(update={"path": str(where) if is_url(where) else str(Path(where).resolve())})
        elif test is not None and test.store:
            test = test.model_copy(update={"store": str(dataset_store(test, root).directory.parent)})
        return cls(tuple(fields), tuple(labels), test.model_dump(exclude_defaults=True) if test else None)

    def as_record(self) -> dict:
        return {"fields": list(self.fields), "labels": list(self.labels), "test": self.test}


def ingest_file(path: str | Path, dataset: str, store: str | Path, labeled: bool = False,
                schema: Schema | None = None, read: dict[str, Any] | None = None) -> dict:
    """Add the new rows of ``path`` to the dataset as one version; returns what happened.

    ``path`` is a local file or an fsspec URL. ``read`` holds Source options for the file
    (``header``, ``columns``, ``rename``, ``rows``…).
    Dropped as duplicates (all input fields equal after trimming whitespace): repeats inside the
    file, texts of the test set, and texts already in the store. A labeled row whose text is in
    the unlabeled pool is kept: it labels that text, which then leaves the pool. When nothing is
    left, no version is written (``version`` is the unchanged current one, ``added`` 0).
    """
    kind: Kind = "labeled" if labeled else "unlabeled"
    target = DatasetStore(store, dataset)
    schema = _schema(target, schema)
    rows, digest = _read_checked(str(path), schema, labeled, read or {})
    test = _test_keys(schema)
    test_key = texts_key(test)  # the texts kept out, whichever file holds them
    with target.lock() as parent:
        if parent is not None:
            _check_same_schema(target, parent, schema, test_key)
        gold = parent.read("labeled") if parent is not None else None  # read once: duplicates, then conflicts
        typed = parent.typed_fields() if parent is not None else []  # compared as an earlier reader left them
        seen = _seen_texts(schema.fields, parent, gold, test)
        if parent is not None and "test_key" not in parent.manifest["schema"]:
            _check_kept_out(target, parent, schema, seen)
        keep, duplicates, promoted = _new_rows(rows, schema.fields, kind, seen)
        source = {"path": str(path) if is_url(path) else str(Path(path).resolve()), "sha256": digest,
                  "rows": rows.num_rows}
        summary = {"dataset": dataset, "kind": kind, "added": len(keep), "duplicates": sum(duplicates.values()),
                   "duplicates_by_origin": duplicates, "source": source,
                   "label_conflicts": _label_conflicts(rows, schema.fields, keep, gold) if labeled else None,
                   "typed_fields": {"store": f"{store}/{dataset}", "version": parent.number, "fields": typed} if typed else None}
        if not keep:
            return {**summary, "version": parent.number if parent else None, "manifest": None, "committed": False}
        columns = ["id", *schema.fields] + (["label"] if "label" in rows.column_names else [])
        version = target.commit(parent, kind, rows.take(keep).select(columns), {
            "schema": {**schema.as_record(), "test_key": test_key},
            "ingest": {"kind": kind, "source": source, "added": len(keep), "duplicates": duplicates,
                       "labels_for_pool_texts": promoted, "label_conflicts": summary["label_conflicts"]},
        })
    return {**summary, "version": version.number, "manifest": str(version.path), "committed": True}


def _schema(target: DatasetStore, given: Schema | None) -> Schema:
    if given is not None:
        return given
    if target.current() is None:
        raise DataError(f"dataset {target.name!r} has no versions yet: its first ingest needs --config (a run "
                        "config naming the input fields, the labels and the test set)")
    s = target.version().manifest["schema"]
    return Schema(tuple(s["fields"]), tuple(s["labels"]), s["test"])


def _check_same_schema(target: DatasetStore, parent: Version, schema: Schema, test_key: str) -> None:
    """Refuse other fields or labels, and a test set with other texts than ``parent`` recorded (a version
    written before the texts' key was recorded: another test source)."""
    stored = parent.manifest["schema"]
    if list(schema.fields) != stored["fields"] or set(schema.labels) != set(stored["labels"]):
        raise DataError(f"--config: fields {list(schema.fields)} and labels {list(schema.labels)} differ from "
                        f"dataset {target.name!r} (fields {stored['fields']}, labels {stored['labels']}); "
                        "ingest into a new dataset instead")
    same_source = schema.test == stored["test"]
    if (test_key == stored["test_key"]) if "test_key" in stored else same_source:
        return
    given = named_test_set(schema.test)
    if same_source:
        raise DataError(f"dataset {target.name!r}: its test set {given} no longer holds the texts that "
                        f"version {parent.number} and those before it kept out of the store (it changed since); "
                        "restore it, or ingest into a new dataset (with --config)")
    raise DataError(f"--config: data.test ({given}) is not the test set of dataset {target.name!r} "
                    f"({named_test_set(stored['test'])}), whose texts its versions keep out (rows already in the store "
                    "cannot be taken back); point data.test at that test set, or ingest into a new dataset")


def named_test_set(test: dict | None) -> str:
    """A version's recorded test set (``schema.test``) by its source's name."""
    return Source.model_validate(test).name if test else "none"


def _read_checked(path: str, schema: Schema, labeled: bool, read: dict) -> tuple[pa.Table, str]:
    """The file's rows, checked, and its sha256. A file at a URL (new data landing in a bucket) is
    read like a source's: copied into the local mirror, whose copy is then hashed.

    Read whole, as a run reads the same file as a source (the same read options, the same texts, so a
    test text is keyed as a run keys it); a stream would not bound memory: dropping duplicates holds
    the keys of the whole file and of the store's pool.
    """
    if "path" in read:  # the FILE argument is what is read; a second path would be ignored without a word
        raise DataError(f"{path}: read option path: the file to ingest is the FILE argument; drop --read path")
    try:
        source = Source.model_validate({**read, "path": str(path)})
    except ValidationError as err:
        raise DataError("\n".join(f"{path}: read option {'.'.join(map(str, e['loc'])) or '(all)'}: "
                                  f"{e['msg'].removeprefix('Value error, ')}" for e in err.errors())) from None
    if source.store or source.hub:
        raise DataError(f"{path}: ingest reads the FILE argument (a local file or a URL); drop the 'store'/'hub' "
                        "read options")
    table = known_labels(read_source(source), schema.labels)
    problems = check_examples(table, schema.fields, schema.labels, str(path), labels_required=labeled)
    if problems:
        raise DataError("\n".join(problems))
    return table, file_digest(local(path))


def _test_keys(schema: Schema) -> pa.Array:
    if not schema.test:
        return pa.array([], pa.string())
    test = read_source(Source.model_validate(schema.test))
    missing = [f for f in schema.fields if f not in test.column_names]
    if missing:
        raise DataError(f"{Source.model_validate(schema.test).name}: the test set lacks field(s) {missing}")
    return text_keys(test, schema.fields).combine_chunks()


def _seen_texts(fields: Sequence[str], parent: Version | None, gold: pa.Table | None,
                test: pa.Array) -> dict[str, pa.Array]:
    """The texts a new row may repeat, by where they are: the test set, and the parent's labeled rows (``gold``)
    and pool."""
    seen_in = {"test": test}
    if parent is not None:
        seen_in["labeled"] = text_keys(gold, fields).combine_chunks()
        seen_in["unlabeled"] = text_keys(parent.read("unlabeled"), fields).combine_chunks()
    return seen_in


def _check_kept_out(target: DatasetStore, parent: Version, schema: Schema, seen_in: dict[str, pa.Array]) -> None:
    """Refuse a test set that holds texts of the store's rows. A version written before ``test_key`` recorded no
    key of the texts it kept out, so a change of its test file since cannot be seen, but for the change that
    harms: a text of the test set now that is a row of the store, which the ingest that added the row would have
    dropped had the file held it then."""
    stored = pa.chunked_array([seen_in["labeled"], seen_in["unlabeled"]], pa.string())
    overlap = pc.sum(pc.is_in(seen_in["test"], value_set=stored.combine_chunks())).as_py() or 0
    if overlap:
        raise DataError(f"dataset {target.name!r}: its test set {named_test_set(schema.test)} holds {overlap} "
                        f"text(s) that are rows of the store, which version {parent.number} and those before it kept "
                        "their test set's texts out of: it changed since (they recorded no key of its texts, so only "
                        "this shows it); restore it, or ingest into a new dataset (with --config)")


def _new_rows(rows: pa.Table, fields: Sequence[str], kind: Kind,
              seen_in: dict[str, pa.Array]) -> tuple[list[int], dict[str, int], int]:
    """Row indices to keep, duplicates dropped by where the text was seen first (``seen_in``: ``_seen_texts``),
    and (labeled ingests) how many kept rows label a text of the unlabeled pool."""
    keys = text_keys(rows, fields)
    hits = {origin: pc.is_in(keys, value_set=known).to_pylist() for origin, known in seen_in.items()}
    keep, duplicates, promoted, in_file = [], Counter(), 0, set()
    for i, key in enumerate(keys.to_pylist()):
        if key in in_file:
            duplicates["file"] += 1
            continue
        in_file.add(key)
        origin = next((o for o in ("test", "labeled", "unlabeled") if o in hits and hits[o][i]), None)
        if origin == "unlabeled" and kind == "labeled":
            promoted += 1
        elif origin:
            duplicates[origin] += 1
            continue
        keep.append(i)
    return keep, {o: duplicates[o] for o in ("file", "test", "labeled", "unlabeled")}, promoted


def _label_conflicts(rows: pa.Table, fields: Sequence[str], keep: list[int], gold: pa.Table | None) -> dict:
    """The dropped rows whose text has another label, in the gold set (``gold``: the parent's labeled
    rows) or in an earlier row of the file: how many, and the first ids. The earlier label stays (a
    store only grows), but a correction or annotators' disagreement must not vanish among the
    duplicates unnoticed."""
    known: dict[str, str] = {}
    if gold is not None:
        known = dict(zip(text_keys(gold, fields).to_pylist(), gold["label"].to_pylist()))
    keys, labels, ids = text_keys(rows, fields).to_pylist(), rows["label"].to_pylist(), rows["id"].to_pylist()
    for i in keep:
        known.setdefault(keys[i], labels[i])
    kept = set(keep)
    clashes = [ids[i] for i, key in enumerate(keys) if i not in kept and known.get(key, labels[i]) != labels[i]]
    return {"rows": len(clashes), "ids": clashes[:SHOWN]}
