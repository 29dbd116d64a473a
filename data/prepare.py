"""From the configured sources to the three sets a run uses: labeled, pool, test.

The pool keeps its true labels (if the source has them) in ``hidden_label``: the pipeline never
trains on them, they only score pseudo-label accuracy.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .dataset_store import Version, text_keys, texts_key
from .location import checksum, exists, is_url, location
from .errors import DataError
from .ingest import named_test_set
from .labels import known_labels
from .leaks import Leaks, drop_leaks
from .sources import Source, dataset_store, read_source, source_path
from .splits import draw_per_class, sample_rows
from .outputs import atomic_path, content_key, file_digest, read_json, write_json
from .readers import READER
from .validate import check_examples

MANIFEST = "manifest.json"
SETS_DIR = "data"  # the prepared sets of every data key, each named by its content
SET_NAMES = ("labeled", "pool", "test")  # the sets a manifest names (test may be None)
STORE_FIELDS = ("store", "dataset", "kind", "version")


class DataConfig(BaseModel):
    """Either ``train`` (a labeled source the few-shot set and the pool are drawn from) or
    explicit ``labeled`` and ``unlabeled`` sources; ``test`` is optional. Relative paths are
    resolved against ``root``."""

    model_config = ConfigDict(extra="forbid")

    root: str = "."
    train: Source | None = None
    labeled_per_class: int | None = Field(None, ge=0)
    labeled: Source | None = None
    unlabeled: Source | None = None
    test: Source | None = None
    pool_size: int | None = Field(None, ge=1)
    test_size: int | None = Field(None, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _one_layout(self) -> "DataConfig":
        if self.train is not None:
            if self.labeled is not None or self.unlabeled is not None:
                raise ValueError("give either 'train' (drawn from) or 'labeled'/'unlabeled', not both")
            if self.labeled_per_class is None:
                raise ValueError("'train' needs 'labeled_per_class' (0 for zero-shot)")
        elif self.unlabeled is None:
            raise ValueError("give 'train' with 'labeled_per_class', or an 'unlabeled' pool source")
        elif self.labeled_per_class is not None and (self.labeled is not None or self.labeled_per_class):
            # ignored in this layout; only 0 without 'labeled' (zero-shot) says what happens anyway
            raise ValueError(f"'labeled_per_class: {self.labeled_per_class}' draws the gold set from 'train'; with "
                             "'labeled'/'unlabeled' the gold set is every row of 'labeled' (none without it), "
                             "so remove it")
        if self.test_size is not None and self.test is None:  # it would sample nothing, without a word
            raise ValueError(f"'test_size: {self.test_size}' samples the test set, and there is no 'test' source; "
                             "add one or remove test_size")
        for slot, source in self.slots().items():  # a store source reads the kind its slot needs
            if source.store and source.kind is None:
                source.kind = "unlabeled" if slot == "unlabeled" else "labeled"
        return self

    def slots(self) -> dict[str, Source]:
        return {slot: source for slot in ("train", "labeled", "unlabeled", "test")
                if (source := getattr(self, slot)) is not None}


@dataclass(frozen=True)
class Pinned:
    """A data config with every store source at a version, and those versions as read. A run's
    digests and reads take them from here, so each dataset store is resolved once per run.

    Attributes:
        config: the config, each store source's ``version`` set.
        versions: by slot, the version each store source reads.
    """

    config: DataConfig
    versions: Mapping[str, Version]


def pin_versions(config: DataConfig) -> Pinned:
    """Every store source pinned to a version (the current one unless the config names one), each
    dataset's version read once, so all of a run's sets come from one consistent version even while
    an ingest commits the next."""
    resolved: dict[tuple[Path, int | None], Version] = {}
    versions = {}
    for slot, source in config.slots().items():
        if source.store:
            store = dataset_store(source, config.root)
            key = (store.directory, source.version)
            if key not in resolved:
                resolved[key] = store.version(source.version)
            versions[slot] = resolved[key]
    update = {slot: getattr(config, slot).model_copy(update={"version": version.number})
              for slot, version in versions.items()}
    return Pinned(config.model_copy(update=update), versions)


def _settings(config: DataConfig) -> dict:
    """The data settings a key covers. Unset store fields are left out, so file and hub sources
    keep the keys they had before stores existed and their finished runs are still reused."""
    settings = config.model_dump(exclude={"root"})
    for slot in config.slots():
        settings[slot] = {k: v for k, v in settings[slot].items() if not (k in STORE_FIELDS and v is None)}
    return settings


def _digest(pinned: Pinned, slot: str) -> str:
    """What identifies a source's content: the file's bytes, a store version's segment hashes (of both
    kinds: labeling a pool text takes it out of the pool), a hub name."""
    source = getattr(pinned.config, slot)
    if source.path:
        path = source_path(source, pinned.config.root)
        return checksum(path) if is_url(path) else file_digest(path)
    if source.store:
        return content_key(pinned.versions[slot].manifest["hashes"])
    return source.hub


def load_sets(data: DataConfig | Pinned, fields: Sequence[str],
              labels: Sequence[str]) -> tuple[dict[str, pa.Table], Leaks]:
    """Read, check and split the sources (a config is pinned first), the test set's texts dropped
    from the pool; raises DataError listing every problem found. Also returns what leaked
    (``data/leaks.py``)."""
    pinned = data if isinstance(data, Pinned) else pin_versions(data)
    config = pinned.config
    root = config.root  # a folder or a URL
    problems: list[str] = []

    def read(slot: str, labels_required: bool) -> pa.Table | None:
        source = getattr(config, slot)
        if source is None:
            return None
        try:
            table = known_labels(read_source(source, root, pinned.versions.get(slot)), labels)
        except DataError as err:
            problems.append(str(err))
            return None
        problems.extend(check_examples(table, fields, labels, source.name, labels_required))
        return table

    if config.train is not None:
        train = read("train", labels_required=True)
        test = read("test", labels_required=True)
        if problems:
            raise DataError("\n".join(problems))
        labeled, pool = draw_per_class(train, config.labeled_per_class, labels, config.seed, config.train.name)
    else:
        labeled = read("labeled", labels_required=True)
        pool = read("unlabeled", labels_required=False)
        test = read("test", labels_required=True)
        if problems:
            raise DataError("\n".join(problems))
        if labeled is None:  # zero-shot: an empty gold set, with the label column every gold set has
            labeled = pool.select(["id", *fields]).slice(0, 0).append_column("label", pa.array([], pa.string()))
        elif labeled.num_rows:
            absent = [label for label in labels if label not in set(labeled["label"].to_pylist())]
            if absent:  # balanced selection would never pseudo-label them
                raise DataError(f"{config.labeled.name}: no examples of label(s) {absent}; give every label at "
                                "least one, or leave out `labeled` for zero-shot")
    others = _other_test_sets(pinned, test) if test is not None else []  # the whole test set, as a store records it
    if test is not None:
        test = sample_rows(test, config.test_size, config.seed)
    pool, leaks = drop_leaks(pool, labeled, test, fields)
    leaks = replace(leaks, other_test_sets=others, typed_fields=_typed_fields(pinned))
    if pool.num_rows == 0:  # a `train` source drawn empty, or a pool that is all test rows
        source = (config.train or config.unlabeled).name
        raise DataError(f"{source}: no rows left for the unlabeled pool after drawing labeled_per_class="
                        f"{config.labeled_per_class} per label; add rows or lower labeled_per_class"
                        if not leaks.dropped
                        else f"{source}: no rows left for the unlabeled pool: every one is also in the test set")
    return _select(labeled, sample_rows(pool, config.pool_size, config.seed), test, fields, labels), leaks


def _other_test_sets(pinned: Pinned, test: pa.Table) -> list[dict]:
    """The dataset store versions the run trains on whose test set holds other texts than ``test``: each kept
    its own test set's texts out of its rows (``ipet ingest``), not this one's, so the store never guarded
    against rows that are this run's test rows (``drop_leaks`` still does, on the sets drawn). Compared by the
    key over their distinct texts (``schema.test_key``); a version that recorded none is not compared."""
    @functools.cache  # once per store's fields: the labeled and unlabeled slots of one store share them
    def key_of(fields: tuple[str, ...]) -> str | None:
        return texts_key(text_keys(test, fields)) if set(fields) <= set(test.column_names) else None

    found = {}
    for slot, version in pinned.versions.items():
        schema, source = version.manifest["schema"], getattr(pinned.config, slot)
        if slot == "test" or "test_key" not in schema:
            continue
        if key_of(tuple(schema["fields"])) != schema["test_key"]:
            found[(source.store, source.dataset, version.number)] = {
                "store": f"{source.store}/{source.dataset}", "version": version.number,
                "test": named_test_set(schema["test"]) if schema["test"] else None}
    return list(found.values())


def _typed_fields(pinned: Pinned) -> list[dict]:
    """The store versions read whose rows an earlier reader may have changed (``Version.typed_fields``), once each."""
    read = {}
    for slot, version in pinned.versions.items():
        source = getattr(pinned.config, slot)
        read[f"{source.store}/{source.dataset}", version.number] = version
    return [{"store": store, "version": number, "fields": fields}
            for (store, number), version in read.items() if (fields := version.typed_fields())]


def _select(labeled: pa.Table, pool: pa.Table, test: pa.Table | None, fields: Sequence[str],
            labels: Sequence[str]) -> dict[str, pa.Table]:
    """The columns each set keeps; the pool's labels, if it has any, as ``hidden_label``: only those that
    are labels, the others (``-1``, the hub's mark of an unlabeled row) null, and none at all if none is."""
    if "label" in pool.column_names:
        hidden = pool["label"]
        known = pc.is_in(hidden, value_set=pa.array(list(labels), pa.string()))
        pool = pool.drop_columns(["label"])
        if pc.any(known).as_py():  # else no hidden labels: a pool of -1s scored 0 pseudo-label accuracy
            pool = pool.append_column("hidden_label", pc.if_else(known, hidden, pa.scalar(None, pa.string())))
    keep = ["id", *fields]
    sets = {
        "labeled": labeled.select(keep + ["label"]),
        "pool": pool.select(keep + (["hidden_label"] if "hidden_label" in pool.column_names else [])),
    }
    if test is not None:
        sets["test"] = test.select(keep + ["label"])
    return sets


def data_key(pinned: Pinned, fields: Sequence[str], labels: Sequence[str]) -> tuple[str, dict[str, str]]:
    """The key of the sets ``pinned`` prepares, and the digest of each source it covers.

    The key covers the data settings, the bytes of every source file, the version of every store
    source and ``READER``, so changed data is never mistaken for prepared data. Take it before the
    sources are read: a file changed meanwhile is then prepared again, never filed under its new bytes."""
    config = pinned.config
    digests = {s.name: _digest(pinned, slot) for slot, s in config.slots().items()}
    return content_key("data", READER, _settings(config), digests, list(fields), list(labels)), digests


def key_before_reading(pinned: Pinned, fields: Sequence[str], labels: Sequence[str]) -> tuple[str, dict[str, str]] | None:
    """``data_key`` taken before the sources are read; None where a source cannot be hashed (a file not there,
    a bucket that refuses us), which the read then reports in one line, as it does without a key."""
    try:
        return data_key(pinned, fields, labels)
    except Exception:  # whatever the storage raised: the read that follows says it, naming the source
        return None


def prepare(config: DataConfig, fields: Sequence[str], labels: Sequence[str], out_root: str | Path) -> dict:
    """Write the run's sets as parquet under ``out_root/data/`` and their manifest as
    ``out_root/data-<key>/manifest.json`` (``data_key``; reused when present, as ``ipet run``'s checks
    wrote it from what they read: ``write_prepared``).

    Each set's file is named by its own bytes, not by the key: a change that leaves a set as it was (new
    unlabeled rows leave the gold set alone) gives it the same path, so what was computed from it
    (models, logits) is reused.
    """
    pinned = pin_versions(config)
    key, digests = data_key(pinned, fields, labels)
    manifest_path = _manifest_path(out_root, key)
    if exists(manifest_path):
        return _sets_in(_completed(read_json(manifest_path), pinned, manifest_path), out_root)
    write_prepared(out_root, (key, digests), pinned, *load_sets(pinned, fields, labels))
    return _sets_in(read_json(manifest_path), out_root)


def write_prepared(out_root: str | Path, keyed: tuple[str, dict[str, str]], pinned: Pinned,
                   sets: Mapping[str, pa.Table], leaks: Leaks) -> None:
    """The sets ``load_sets`` read from ``pinned`` written under ``keyed`` (its ``data_key``, taken before
    that read), unless that key's manifest is there: each set atomically, the manifest last, so present
    means every set is. ``ipet run``'s checks write what they read with it, so the flow's ``prepare`` finds
    the sets by key instead of reading every source a second time."""
    key, digests = keyed
    manifest_path = _manifest_path(out_root, key)
    if exists(manifest_path):
        return
    paths = {name: f"{SETS_DIR}/{write_set(table, location(out_root) / SETS_DIR, name).name}"
             for name, table in sets.items()}
    write_json({
        "key": key,
        "sources": digests,
        "versions": {slot: {"store": s.store, "dataset": s.dataset, "kind": s.kind, "version": s.version}
                     for slot, s in pinned.config.slots().items() if s.store},
        "rows": {name: t.num_rows for name, t in sets.items()},
        "leaks": leaks.record(),
        **paths,
        "test": paths.get("test"),
    }, manifest_path)


def _manifest_path(out_root: str | Path, key: str) -> Path:
    return location(out_root) / f"data-{key}" / MANIFEST


def _completed(manifest: dict, pinned: Pinned, path: str | Path) -> dict:
    """A reused ``manifest`` with the typed fields of the store versions read (``Leaks.typed_fields``) recorded if
    it lacks them: one prepared between ``READER`` 2 and that record has this version's key, so its run (a
    deployment's, which has no checks to warn it) was never told. They depend only on the versions its key names,
    so what they are now is what they were then."""
    leaks = manifest.get("leaks") or {}
    if "typed_fields" in leaks:
        return manifest
    manifest = {**manifest, "leaks": {**leaks, "typed_fields": _typed_fields(pinned)}}
    write_json(manifest, path)
    return manifest


def _sets_in(manifest: dict, out_root: str | Path) -> dict:
    """``manifest`` with each set's path in ``out_root``, the run directory in use. The manifest records
    them relative to it, so a copied or moved run directory reads its own sets; earlier versions recorded
    absolute paths, which name the original's (gone once it moves): a set is named by its bytes, so the
    file of that name in this run directory's ``data/`` is the same set."""
    return {**manifest, **{name: str(location(out_root) / SETS_DIR / location(path).name)
                           for name in SET_NAMES if (path := manifest.get(name))}}


def write_set(table: pa.Table, directory: Path, name: str) -> Path:
    """``directory/<name>-<sha256 of its parquet bytes, 16 hex>.parquet``, written atomically unless present.

    Chunks are combined first: parquet's page boundaries follow the table's chunks, so the same
    rows in other chunks would give other bytes, hence another name. The bytes are hashed in
    memory (a set is in memory here anyway) so the file is written once, under its final name.
    """
    sink = pa.BufferOutputStream()
    pq.write_table(table.combine_chunks(), sink)
    data = sink.getvalue()
    path = directory / f"{name}-{hashlib.sha256(data).hexdigest()[:16]}.parquet"
    if not exists(path):
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    return path
