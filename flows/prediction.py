"""Predicting with a final model: a CSV/TSV/JSONL/parquet file in, a parquet file of labels out.

The model is the registry's champion (or any ``models:/NAME@alias`` / ``models:/NAME/V`` /
``models:/NAME/latest`` / ``models:/m-ID``, read as MLflow 3 reads them: tasks/model_uri.py), a run directory (its
``results.json`` names the final model) or a model directory. The input is streamed in batches, so
memory stays flat however long it is (but for 8 bytes per id, to refuse an id given twice:
data/seen.py); the output is written to a temporary file and renamed at the end, so a failed
prediction leaves no output behind (one killed with ``kill -9`` leaves its temporary, which running
the same command again removes).

Output columns: ``id`` (the input's ``id``, else the 1-based row number), ``label``,
``prob_<label>`` per class, ``model_version`` (``NAME/vN`` or the model directory) and ``error``.
A row with no text in any field the model reads is kept, with a null label and probabilities
and the reason in ``error``; the summary lists those rows.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from data.location import exists, is_url, local, location
from data.errors import DataError, nearest
from data.lock import LOCK_FILE
from data.outputs import atomic_path, check_output_file, read_json, remove_dead_temps
from data.seen import Seen
from data.stream import read_batches
from prompt_core.errors import BackboneError, PredictorError
from prompt_core.settings import Precision
from tasks.store_uri import CHAMPION, RegistryError, in_store, missing_store, resolve_uri

SHOWN = 20  # error rows listed in the summary
# user mistakes: exit 2, a message, no output (BackboneError: a model whose backbone is not there)
PREDICT_ERRORS = (DataError, PredictorError, RegistryError, BackboneError)


def predict_file(model: str, input: str, output: str, registered_model: str | None = None,
                 tracking_uri: str | None = None, batch_size: int = 1024, device: str = "auto",
                 precision: Precision = "auto") -> dict:
    """Predict every row of ``input`` into ``output``; returns a summary (rows, errors, version).
    torch is imported here, not with the module (``flows/predict.py``'s flow imports it)."""
    from prompt_core.device import select_device
    from prompt_core.predictor import PROB_PREFIX, Predictor

    try:  # no such device, or CUDA where there is none: refused before the model loads, not a traceback at its
        select_device(device)  # first batch (a deployment's parameter; ipet predict names a mistyped one sooner)
    except ValueError as err:
        raise DataError(str(err)) from None
    check_output_file(output, input)
    remove_dead_temps(output)  # what a killed run of this command left beside the output
    with _resolved(model, registered_model, tracking_uri) as (model_dir, version, fetch):
        predictor = Predictor.load(model_dir, fetch)
    labels = list(predictor.labels)
    schema = pa.schema([("id", pa.string()), ("label", pa.string()),
                        *((PROB_PREFIX + label, pa.float64()) for label in labels),
                        ("model_version", pa.string()), ("error", pa.string())],
                       metadata={"ipet.labels": json.dumps(labels), "ipet.model_version": version})
    rows, errors, shown, seen = 0, 0, [], Seen()
    with atomic_path(output) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for batch in read_batches(input, predictor.fields, optional=("id",), batch_size=batch_size):
            records = batch.to_pylist()
            numbers = range(rows + 1, rows + len(records) + 1)
            ids = _row_ids(records, rows + 1)
            if "id" in batch.column_names:  # else every id is its row number: nothing to check, nothing kept
                _check_unique(input, ids, numbers, seen)
            result = predictor.predict(records, device=device, precision=precision)
            failed = [{"row": n, "id": i, "error": e} for n, i, e in zip(numbers, ids, result.errors) if e]
            errors, shown = errors + len(failed), (shown + failed)[:SHOWN]
            columns = {"id": ids, "label": result.labels,
                       **{PROB_PREFIX + label: _nulls_for_nan(result.probabilities[:, k])
                          for k, label in enumerate(labels)},
                       "model_version": [version] * len(records), "error": result.errors}
            writer.write_table(pa.table(columns, schema=schema))
            rows += len(records)
        if not rows:  # as a 0-byte file or a JSONL file without an object is refused: nothing to predict
            raise DataError(f"{input}: no rows to predict (column names only)")
    return {"output": str(output), "model_version": version, "labels": labels, "rows": rows,
            "predicted": rows - errors, "errors": errors, "error_rows": shown}


def _nulls_for_nan(column) -> pa.Array:
    """A probability column with null where the row had no text (the predictor's NaN), as the docstring
    above says: parquet readers other than pandas (Spark, DuckDB, a JSON export) read NaN as a number."""
    return pa.array(column, from_pandas=True)


def _row_ids(records: list[dict], first: int) -> list[str]:
    """Each row's output id: its ``id``, else (none, or empty) its 1-based row number; ``first`` is the
    first record's."""
    return [r.get("id") or str(n) for n, r in enumerate(records, start=first)]


def _check_unique(input: str, ids: list[str], numbers: range, seen: Seen) -> None:
    """DataError naming the first of ``ids`` (rows ``numbers``) that an earlier row has too: the
    output would hold two rows no id tells apart. ``seen`` keeps 8 bytes per id (data/seen.py); a
    candidate it reports is confirmed by reading the input's ids again up to it, which only an
    error (or a rare hash collision) costs."""
    for at in seen.add(ids):
        earlier = _first_row_with(input, ids[at], numbers[at])
        if earlier is not None:
            raise DataError(f"{input}: rows {earlier} and {numbers[at]} have the same id {ids[at]!r}; give each row "
                            "its own id (the output's id column could not tell their predictions apart)")


def _first_row_with(input: str, id_: str, before: int) -> int | None:
    """The first row before row ``before`` whose output id is ``id_``; None if none is (a hash collision)."""
    start = 1
    for batch in read_batches(input, (), optional=("id",)):
        for n, other in enumerate(_row_ids(batch.to_pylist(), start), start=start):
            if n >= before:
                return None
            if other == id_:
                return n
        start += batch.num_rows
    return None


@contextlib.contextmanager
def _resolved(model: str, registered_model: str | None,
              tracking_uri: str | None) -> Iterator[tuple[Path, str, Callable[[str], str]]]:
    """The model directory, its version string, and how to find a backbone it names (``Predictor.load``'s
    fetch); a downloaded one lives until the block ends."""
    if in_store(model):
        uri = resolve_uri(tracking_uri)
        if missing_store(uri):
            raise RegistryError(missing_store(uri))
        from tasks.model_uri import refuse_run_uri, registered_model_dir  # MLflow: only for a registered model

        if model.startswith("runs:/"):
            refuse_run_uri(uri, model)
        with tempfile.TemporaryDirectory(prefix="ipet-model-") as tmp:
            yield (*registered_model_dir(uri, model, registered_model, Path(tmp)), str)
        return
    path = location(model)
    if exists(path / "results.json") or exists(path / LOCK_FILE):  # a run directory: finished, or DataError
        results = run_results(path, fresh=True)
        final = final_model(path, results)
        if not exists(final):
            raise PredictorError(f"{model}: its final model {final.name} is not in its models/ folder "
                                 "(removed since the run; `ipet run` again trains it)")
        fetch = run_backbones(path, results.get("run_dir"))
        path = final
    elif exists(path):  # a model directory: in a run directory (models/<name>), or not
        fetch = run_backbones(path.parent.parent, _recorded_run_dir(path.parent.parent))
    else:
        raise PredictorError(f"{model}: no such model directory, run directory or registered model{_meant(model)}")
    if is_url(path):  # a run dir at a URL: its model, and an ensemble's members beside it, copied
        from prompt_core.predictor import ENSEMBLE_FILE, read_ensemble

        copy = local(path)
        for member in read_ensemble(copy)[0] if (copy / ENSEMBLE_FILE).is_file() else []:
            local(path.parent / member.name)
        yield copy, str(path), fetch
        return
    yield path, str(path.resolve()), fetch


def run_backbones(run_dir: Path, recorded: object) -> Callable[[str], str]:
    """How the models of ``run_dir`` (a model directory's run directory, if it is in one) find a backbone
    kept there (``tasks.backbones.fetcher``); one recorded by absolute path under ``recorded``, the run
    directory its ``results.json`` names (a run from before backbones were recorded relative to the
    model), read from this one, as ``final_model`` does: after a copy or a move, that path names the
    original's."""
    from tasks.backbones import fetcher

    in_this = fetcher(run_dir)
    return lambda backbone: in_this(_moved(backbone, recorded, run_dir))


def _recorded_run_dir(run_dir: Path) -> object:
    """The run directory ``run_dir``'s results.json names, if it has a readable one; else None."""
    if exists(run_dir / "results.json"):
        with contextlib.suppress(DataError):
            return run_results(run_dir).get("run_dir")
    return None


def _moved(path: str, recorded: object, run_dir: Path) -> str:
    """``path`` in ``run_dir`` where it is under ``recorded`` (the run directory as results.json names it,
    which a copy or move leaves naming the original); any other as is."""
    prefix = str(recorded).rstrip("/") + "/"
    return str(run_dir / path.removeprefix(prefix)) if isinstance(recorded, str) and path.startswith(prefix) else path


def final_model(run_dir: Path, results: dict) -> Path:
    """The final model of the run in ``run_dir`` (``results``: its results.json, ``run_results``), as this
    directory holds it. ``results.json`` records absolute paths, which still name the original after a
    copy (``cp -r``) or a move: a model under the recorded run directory is read from this one (a copy
    used the original's while that existed, and failed once it moved); one elsewhere (a hand-written
    results.json) as recorded, unless this run directory's models/ folder has one of its name
    (results.json from before run_dir was recorded)."""
    final, recorded = results["stages"][-1].get("model"), results.get("run_dir")
    if not isinstance(final, str):
        raise PredictorError(f"{run_dir}/results.json: the final model is not one directory (a run from before "
                             "ensembles were saved as one; run the flow again, it reuses every finished task)")
    moved = _moved(final, recorded, run_dir)
    if moved != final:
        return location(moved)
    own = run_dir / "models" / location(final).name
    return own if exists(own) or not exists(final) else location(final)


def run_stages(run_dir: str | Path, fresh: bool = False) -> list[dict]:
    """The stages in a run directory's ``results.json`` (the last one names the final model)."""
    return run_results(run_dir, fresh)["stages"]


def run_results(run_dir: str | Path, fresh: bool = False) -> dict:
    """A run directory's ``results.json``, with at least one stage; DataError where there is none (not a
    finished run) or it is not a run's (unreadable JSON, no stages): another tool's file of that name,
    or a run directory mixed up with some other folder."""
    path = location(run_dir) / "results.json"
    if not exists(path):
        raise DataError(f"{run_dir}: no results.json, so not a finished run directory")
    try:
        results = read_json(path, fresh)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot be read as JSON ({err}), so not the results of `ipet run`") from None
    stages = results.get("stages") if isinstance(results, dict) else None
    if not (isinstance(stages, list) and stages and all(isinstance(stage, dict) for stage in stages)):
        raise DataError(f"{path}: no stages in it, so not the results of `ipet run`")
    return results


def _meant(model: str) -> str:
    """A hint for a ``--model`` that names nothing: ``models:/`` or ``champion`` misspelled."""
    scheme, colon, rest = model.partition(":")
    if colon and nearest(scheme, ["models"]):
        return f"; did you mean models:/{rest.lstrip('/')}?"
    return f"; did you mean {CHAMPION}?" if nearest(model, [CHAMPION], cutoff=0.75) else ""


def summary_text(summary: dict) -> str:
    text = (f"{summary['rows']} rows -> {summary['output']} · model {summary['model_version']} · "
            f"{summary['predicted']} predicted, {summary['errors']} with no text")
    if summary["errors"]:
        shown = ", ".join(str(e["row"]) for e in summary["error_rows"])
        more = f" and {summary['errors'] - len(summary['error_rows'])} more" if summary["errors"] > SHOWN else ""
        text += f"\nrows with no text (label left empty): {shown}{more} — {summary['error_rows'][0]['error']}"
    return text

