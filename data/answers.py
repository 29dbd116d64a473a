"""A person's answers to a run's questions: the files under ``RUN_DIR/ask/`` and what they change.

    ask/<stage>-<key>.json           the request: the picked pool rows, the ensemble's guesses, when asked
    ask/<stage>.csv                  the rows the run stopped to ask, as a sheet to fill in (empty ``label`` column)
    ask/<stage>-earlier-<hash>.csv   a sheet filled in for rows a later stop no longer asked, kept
    ask/<stage>-<key>-answers.csv    the answered rows, as ingested into the dataset store
    ask/<stage>-<key>-answers.json   the record: rows and labels, who and when, the store version made

The record is written last, so its presence means the answers were applied completely. The key is
the pick's content key (pool, models' logits, pick settings): a rerun that picks the same rows finds
the same request and its answers, and continues past the question instead of asking again.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .dataset_store import DatasetStore, text_keys
from .errors import DataError, nearest
from .ingest import Schema, ingest_file
from .labels import aliases
from .location import exists, local, location, names
from .outputs import atomic_path, file_digest, read_json, write_json
from .prepare import DataConfig, SETS_DIR, write_set
from .sources import Source, dataset_store, read_source

ASK_DIR = "ask"
SKIP = "skip"  # the form's choice (or an empty cell) for a row the person leaves unlabeled


def request_path(run_dir: str, stage: str, key: str) -> Path:
    return location(run_dir) / ASK_DIR / f"{stage}-{key}.json"


def answers_path(run_dir: str, request: Mapping, suffix: str = "json") -> Path:
    return location(run_dir) / ASK_DIR / f"{request['stage']}-{request['key']}-answers.{suffix}"


def write_request(request: dict, run_dir: str) -> None:
    write_json(request, request_path(run_dir, request["stage"], request["key"]))


def sheet_path(run_dir: str, stage: str) -> Path:
    return location(run_dir) / ASK_DIR / f"{stage}.csv"


def write_sheet(request: Mapping, run_dir: str) -> str | None:
    """The sheet the run stops with (``ask/<stage>.csv``: id, fields, guess, confidence, an empty label),
    left as it is when it asks the same rows (a person may be filling it in). A sheet there for other
    rows with labels written in is not overwritten but kept beside it (``<stage>-earlier-<hash>.csv``),
    and its labels of rows asked again are carried over. Returns what was done with it, if anything."""
    path = sheet_path(run_dir, request["stage"])
    earlier = _sheet_rows(path) if exists(path) else []
    if earlier is not None and {r["id"] for r in earlier} == {row["id"] for row in request["rows"]}:
        return None
    filled = {r["id"]: r["label"].strip() for r in earlier or [] if (r["label"] or "").strip()}
    kept = None
    if earlier is None or filled:  # labels a person wrote, or a sheet that cannot be read: keep it
        kept = path.with_name(f"{request['stage']}-earlier-{file_digest(local(path))[:16]}.csv")
        with atomic_path(kept) as tmp:
            tmp.write_bytes(local(path).read_bytes())
    columns = ["id", *request["fields"], "guess", "confidence", "label"]
    sheet = io.StringIO()
    writer = csv.DictWriter(sheet, columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({**row, "label": filled.get(row["id"], "")} for row in request["rows"])
    with atomic_path(path) as tmp:
        tmp.write_text(sheet.getvalue(), encoding="utf-8")
    if kept is None:
        return None
    carried = sum(row["id"] in filled for row in request["rows"])
    return (f"{path} had labels written in for other rows; kept as {kept}, "
            f"{carried} of them carried over to the rows asked again")


def _sheet_rows(path: Path) -> list[dict] | None:
    """A sheet's rows, or None when it is no longer a readable sheet (then it is kept, never overwritten)."""
    try:
        with local(path).open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    return rows if all("id" in r and "label" in r for r in rows) else None


def read_record(run_dir: str, request: Mapping) -> dict | None:
    """The answers to ``request``, if they were applied."""
    path = answers_path(run_dir, request)
    return read_json(path) if exists(path) else None


def all_requests(run_dir: str) -> list[dict]:
    """Every request under ``RUN_DIR/ask``, answered or not, newest first."""
    found = names(location(run_dir) / ASK_DIR) or []
    requests = [read_json(location(run_dir) / ASK_DIR / n) for n in found
                if n.endswith(".json") and not n.endswith("-answers.json")]
    return sorted(requests, key=lambda r: r["asked_at"], reverse=True)


def open_requests(run_dir: str) -> list[dict]:
    """The requests under ``RUN_DIR/ask`` that have no answers yet, newest first."""
    return [r for r in all_requests(run_dir) if read_record(run_dir, r) is None]


def read_sheet(path: str | Path, run_dir: str) -> tuple[dict, dict[str, str], dict | None]:
    """A filled-in sheet: the request it answers, its labels by row id (``skip`` for an empty cell), and the
    record of these same answers if they were recorded already (``check_recorded``).
    Raises DataError naming the file and row for a file that cannot be read, a sheet with nothing filled
    in (an unedited sheet recorded by mistake), an id answered twice or not asked, a label that is not one
    of the run's, a question answered already with other labels (``check_recorded``), or one the run no longer
    asks (``check_current``)."""
    table = read_source(Source(path=str(path), id_column="id"))
    if "label" not in table.column_names:
        raise DataError(f"{path}: no 'label' column (the sheet's last column; fill it in)")
    ids, labels = table["id"].to_pylist(), table["label"].to_pylist()
    repeated = [i for i, n in Counter(ids).items() if n > 1]
    if repeated:  # two answers for one row: which one the person meant is not ours to guess
        raise DataError(f"{path}: duplicate id(s) {repeated}; answer each asked row once")
    if not any((label or "").strip() for label in labels):  # recorded, it would close the question unanswered
        raise DataError(f"{path}: no label filled in (write one, or {SKIP}, in the 'label' column of the rows)")
    requests = all_requests(run_dir)
    if not requests:
        raise DataError(f"{run_dir}: no question was asked there (no {ASK_DIR}/<stage>-<key>.json): "
                        "is it the run directory of a run with ask: that stopped to ask?")

    request = _question_of(ids, requests)  # an id it did not ask is named below
    if not {row["id"] for row in request["rows"]} & set(ids):
        asked = ", ".join(f"{r['stage']} ({len(r['rows'])} rows)" for r in open_requests(run_dir)) or "none"
        raise DataError(f"{path}: its row ids match no question of {run_dir} (open: {asked})")
    written = {i: (label or "").strip() or SKIP for i, label in zip(ids, labels)}
    found = aliases(written.values(), request["labels"])  # a sheet's 1.0 for the label 1, as a data file's
    answers = {i: found.get(label, label) for i, label in written.items()}
    check_answers(request, answers, str(path))
    recorded = check_recorded(request, answers, run_dir, str(path))
    if recorded is None:
        check_current(request, requests, run_dir, str(path))
    return request, answers, recorded


def check_current(request: Mapping, requests: Sequence[Mapping], run_dir: str, source: str) -> None:
    """The question a sheet answers must be the one in ``ask/<stage>.csv``, which the run stopped with last and
    a rerun asks again: a sheet kept as ``<stage>-earlier-<hash>.csv`` answers an older one, whose answers would
    be recorded and never used. DataError naming the sheet to answer instead."""
    current = sheet_path(run_dir, request["stage"])
    rows = _sheet_rows(current) if exists(current) else None
    asked = _question_of([r["id"] for r in rows], requests) if rows else request
    if asked["key"] != request["key"]:
        raise DataError(f"{source}: answers the question asked after {request['stage']} at {request['asked_at']}, "
                        f"not the one the run stopped with last (asked at {asked['asked_at']}), so the next run "
                        f"would not use these answers; answer {current} instead")


def _question_of(ids: Sequence[str], requests: Sequence[Mapping]) -> Mapping:
    """The request a sheet of row ``ids`` answers: most rows shared, then fewest of its rows left out, then the
    newest (``requests`` come newest first)."""
    def fit(request: Mapping) -> tuple[int, int]:
        asked = {row["id"] for row in request["rows"]}
        return len(asked & set(ids)), -len(asked - set(ids))

    return max(requests, key=fit)


def check_answers(request: Mapping, answers: Mapping[str, str], source: str) -> None:
    """Every answered id was asked and every label is the run's or ``skip``; else DataError naming the row."""
    asked = [row["id"] for row in request["rows"]]
    for i, (row_id, label) in enumerate(answers.items(), start=1):
        if row_id not in asked:
            raise DataError(f"{source}: row {i}: id {row_id!r} was not asked after {request['stage']}")
        if label != SKIP and label not in request["labels"]:
            meant = nearest(label, [*request["labels"], SKIP])
            raise DataError(f"{source}: row {i} (id {row_id!r}): label {label!r} is not one of "
                            f"{[*request['labels'], SKIP]}" + (f"; did you mean {meant!r}?" if meant else ""))


def check_recorded(request: Mapping, answers: Mapping[str, str], run_dir: str, source: str) -> dict | None:
    """Answers to a question answered already must be the ones recorded (then recording them again
    changes nothing: their record is returned); a row answered otherwise is DataError naming it: the recorded
    answers stand (the store and the runs after the question have them), so the new one would be lost."""
    record = read_record(run_dir, request)
    if record is None:
        return None
    recorded = {row["id"]: row["label"] for row in record["rows"]}
    changed = [(i, row_id, label) for i, (row_id, label) in enumerate(answers.items(), start=1)
               if recorded.get(row_id, SKIP) != label]
    if changed:
        i, row_id, label = changed[0]
        raise DataError(f"{source}: row {i} (id {row_id!r}): label {label!r}, but {recorded.get(row_id, SKIP)!r} was "
                        f"recorded for it ({len(changed)} row(s) differ); the question after {request['stage']} was "
                        f"answered already ({answers_path(run_dir, request, 'csv')}) and its answers stand")
    return record


def apply_answers(request: dict, answers: Mapping[str, str], run_dir: str, answered_by: str | None = None,
                  answered_at: str | None = None) -> dict:
    """Record a person's answers: checked, written as ``-answers.csv``, added to the request's dataset
    store as a labeled version (the same validation and dedup as ``ipet ingest --labeled``), and the
    record written last. Returns the record."""
    check_answers(request, answers, f"answers to {request['stage']}")
    rows = [{"id": row["id"], **{f: row[f] for f in request["fields"]}, "label": answers[row["id"]]}
            for row in request["rows"] if answers.get(row["id"], SKIP) != SKIP]
    sheet = answers_path(run_dir, request, "csv")
    with atomic_path(sheet) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["id", *request["fields"], "label"])
        writer.writeheader()
        writer.writerows(rows)
    record = {"stage": request["stage"], "key": request["key"], "answered_by": answered_by,
              "answered_at": answered_at or datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "asked": len(request["rows"]), "rows": rows,
              "skipped": len(request["rows"]) - len(rows), "versions": request["versions"],
              "store": _ingest(request, local(sheet)) if rows and request.get("store") else None}
    write_json(record, answers_path(run_dir, request))
    return record


def _ingest(request: Mapping, sheet: Path) -> dict:
    store = request["store"]
    target = DatasetStore(store["store"], store["dataset"])
    schema = None if target.current() is not None else Schema(tuple(request["fields"]), tuple(request["labels"]))
    done = ingest_file(sheet, store["dataset"], store["store"], labeled=True, schema=schema, read={"id_column": "id"})
    return {**store, **{k: done[k] for k in ("version", "committed", "added", "duplicates")}}


def gold_with_answers(labeled: str, record: Mapping, run_dir: str) -> dict:
    """The gold set plus the answered rows whose text it does not have yet, written beside the
    prepared sets (named by its content); its path and row count."""
    gold = pq.read_table(local(labeled))
    fields = [c for c in gold.column_names if c not in ("id", "label")]
    answered = pa.Table.from_pylist(record["rows"], schema=pa.schema([(c, pa.string()) for c in gold.column_names]))
    fresh = pc.invert(pc.is_in(text_keys(answered, fields), value_set=text_keys(gold, fields).combine_chunks()))
    table = pa.concat_tables([gold, answered.filter(fresh).cast(gold.schema)])
    return {"path": str(write_set(table, location(run_dir) / SETS_DIR, "labeled")), "rows": table.num_rows}


def pinned(data: DataConfig, run_dir: str) -> DataConfig:
    """``data`` with each store source pinned to the version it had when the run asked, while the
    dataset's current version is still the one the answers made. A rerun after the answers so reads
    the same gold set and pool as the run that asked (everything before the question is reused) and
    adds the answers itself; once newer data arrives, runs read it, answers included, as usual."""
    records = [read_json(location(run_dir) / ASK_DIR / n) for n in names(location(run_dir) / ASK_DIR) or []
               if n.endswith("-answers.json")]
    update = {}
    for record in records:
        made = record["store"]
        if not (made and made["committed"]):
            continue
        answered = DatasetStore(made["store"], made["dataset"])
        if answered.current() != made["version"]:
            continue  # newer data arrived since the answers: read it as usual
        for slot, source in data.slots().items():
            before = record["versions"].get(slot)
            if before and source.store and source.version is None \
                    and dataset_store(source, data.root).directory == answered.directory:
                update[slot] = source.model_copy(update={"version": before["version"]})
    return data.model_copy(update=update) if update else data
