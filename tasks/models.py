"""Prefect tasks that train and label: thin wrappers that turn paths into ``prompt_core`` calls.

Each output lives at a name derived from everything it depends on; a task whose output exists
returns it at once (``reused``), which is how a killed run resumes without redoing work.
"""

from __future__ import annotations

import json
import resource
import time
from dataclasses import asdict
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import get_run_logger, runtime, task
from prefect.cache_policies import NO_CACHE

from data.location import exists, local, location
from data.outputs import atomic_path, content_key, read_json, write_json
from data.parquet import SHARD, TableRows, iter_rows, logits_column, num_rows, read_logits, ref, shard_count
from prompt_core.settings import AdaptConfig, LabelingConfig, TrainConfig

from . import devices, tracking
from .backbones import fetcher, recorded
from .cancel import cancelled_when_stopped
from .memory import returns_memory
from .tracking import TrackedRun

if TYPE_CHECKING:  # torch is imported by the tasks that compute, so importing the flow stays fast (a cancel does)
    from prompt_core import Learner, LearnerSpec

METRICS = "metrics.json"
COMPUTED = "ipet.computed"  # a logits file's metadata: the device type and precision that labeled it


def model_dir(run_dir: str, name: str, spec: LearnerSpec, key: Callable[[LearnerSpec], str]) -> Path:
    """``<run dir>/models/<name>-<key of the recorded spec>``; where only the directory keyed by ``spec`` itself
    exists (a run from before ``recorded``: its adapted backbone's absolute path in the key), that one, so
    a rerun in place reuses its models."""
    models, portable = location(run_dir) / "models", recorded(spec, run_dir)
    out = models / f"{name}-{key(portable)}"
    if portable == spec or exists(out):  # no backbone inside the run directory: one key, as ever
        return out
    earlier = models / f"{name}-{key(spec)}"
    return earlier if exists(earlier) else out


def untrained_model(name: str, spec: LearnerSpec, run_dir: str) -> str:
    """A model directory holding only the learner spec: the backbone as is (zero-shot)."""
    from prompt_core import save_spec

    out = model_dir(run_dir, name, spec, lambda s: content_key("untrained", asdict(s)))
    if not exists(out):
        with atomic_path(out, directory=True) as tmp:
            save_spec(recorded(spec, run_dir), tmp)
    return str(out)


@task(task_run_name="train {name}", cache_policy=NO_CACHE)
@cancelled_when_stopped
@returns_memory
def train_model(name: str, spec: LearnerSpec, train_set: str, cfg: TrainConfig, run_dir: str, tracked: TrackedRun,
                unlabeled: str | None = None, params: dict | None = None) -> dict[str, Any]:
    """Train one learner on a parquet training set (hard ``label`` or soft ``logits`` targets)."""
    from prompt_core import build_learner, computed_on, train

    logger = get_run_logger()
    uses_pool = cfg.uses_unlabeled and unlabeled is not None
    out = model_dir(run_dir, name, spec, lambda s: content_key("model", asdict(s), ref(train_set),
                                                               settings(cfg, "device", "compile"),
                                                               ref(unlabeled) if uses_pool else None))
    reused = exists(out)
    if reused:
        logger.info("reusing %s", out.name)
    else:
        table = pq.read_table(local(train_set))
        if "logits" in table.column_names:
            targets = read_logits(train_set)
        else:
            index = {label: i for i, label in enumerate(spec.labels)}
            targets = np.array([index[label] for label in table["label"].to_pylist()])
        rows = TableRows(table.drop_columns([c for c in ("logits",) if c in table.column_names]))
        extra = TableRows(pq.read_table(local(unlabeled))) if uses_pool else None
        started = time.perf_counter()
        with devices.device() as dev:
            learner = build_learner(spec, fetcher(run_dir)(spec.backbone))
            result = train(learner, rows, targets, cfg.model_copy(update={"device": dev}), unlabeled=extra,
                           progress=False)
        with atomic_path(out, directory=True) as tmp:
            learner.save(tmp, recorded(learner.spec, run_dir))
            write_json({"losses": result.losses, "train_size": len(rows), "steps": result.steps,
                        "seconds": time.perf_counter() - started, "computed": computed_on(dev, cfg.precision)},
                       tmp / METRICS)
        logger.info("trained %s on %d examples, final loss %.4f", name, len(rows), result.final_loss)
    metrics = read_json(out / METRICS)
    computed = [metrics["computed"]] if "computed" in metrics else []  # unknown for a model trained before
    run_id = tracking.log_child(
        tracked.uri, tracked.parent_id, name,
        params={**(params or {}), "kind": spec.kind, "backbone": spec.backbone, "template": spec.template,
                **settings(cfg, "device")},
        curve=metrics["losses"],
        metrics={"train_size": metrics["train_size"], "train_seconds": metrics["seconds"]},
        tags={"reused": str(reused).lower(), "model_dir": str(out), **tracking.used_tags(computed)},
    )
    return {"name": name, "model_dir": str(out), "reused": reused, "train_size": metrics["train_size"],
            "mlflow_run_id": run_id, "computed": computed}


# settings added after runs whose models must still be reused, with their values that leave the models' keys as
# they were
NEWER = {"peft": None, "prior_weight": None, "precision": "auto", "group_by_length": False}


def settings(cfg: TrainConfig | AdaptConfig, *leave_out: str) -> dict[str, Any]:
    """``cfg`` as a dict without ``leave_out``, and without the ``NEWER`` settings at their old behaviour: a
    run that does not use them keeps the model keys it had before they existed, so its models are reused.
    (``precision: auto`` is like ``device: auto``: what it computes in depends on the machine.)"""
    return cfg.model_dump(exclude={*leave_out, *(f for f, old in NEWER.items() if getattr(cfg, f, old) == old)})


def _label_run_name() -> str:
    p = runtime.task_run.parameters
    shards = shard_count(num_rows(p["dataset"]), p["labeling"].shard_rows)
    return (f"label {p['dataset_name']} with {', '.join(p['models'])}"
            + (f" ({p['shard'] + 1}/{shards})" if shards > 1 else ""))


@task(task_run_name=_label_run_name, cache_policy=NO_CACHE)
@cancelled_when_stopped
@returns_memory
def label_set(models: Mapping[str, str], dataset_name: str, dataset: str, run_dir: str, labeling: LabelingConfig,
              shard: int = 0) -> dict[str, dict[str, Any]]:
    """Class logits of every row of ``dataset`` by each of ``models`` (name → model directory),
    streamed to parquet (``id``, ``logits``), one file per model.

    A dataset of more than ``labeling.shard_rows`` rows is labeled by one task per shard: this one
    writes rows ``shard·shard_rows`` up to the next shard's into its own file of the set's shard
    directory. ``path`` in each model's result is the set's logits (file or directory) either way, and
    ``computed`` the device type and precision that labeled it (``computed_on``): here, or, for logits an
    earlier run wrote, as they record it (``labeled_on``; unknown for logits from before it was recorded).
    Adapter models of one backbone are loaded as one backbone with an adapter each
    (``load_learners``); the task logs its process's peak RSS.
    """
    from prompt_core import computed_on, load_learners

    rows = num_rows(dataset)
    shards = shard_count(rows, labeling.shard_rows)
    results, todo = {}, {}
    for name, model_dir in models.items():
        key = content_key("logits", ref(model_dir), ref(dataset), *([labeling.shard_rows] if shards > 1 else []),
                          *([labeling.precision] if labeling.precision != "auto" else []))
        target = location(run_dir) / "logits" / f"{name}--{dataset_name}-{key}"
        out = target.parent / f"{target.name}.parquet" if shards == 1 else target / SHARD.format(shard, shards)
        results[name] = {"path": str(out if shards == 1 else target), "reused": exists(out)}
        if not results[name]["reused"]:
            todo[name] = out
        elif computed := labeled_on(out):
            results[name]["computed"] = computed
    if not todo:
        return results
    span = (0, rows) if shards == 1 else (shard * labeling.shard_rows, min(rows, (shard + 1) * labeling.shard_rows))
    learners = load_learners([local(models[name]) for name in todo], fetcher(run_dir))
    with devices.device() as dev:
        for learner, (name, out) in zip(learners, todo.items()):
            results[name]["computed"] = computed_on(dev, labeling.precision)
            write_logits(learner, dataset, span, out, labeling, dev, results[name]["computed"])
    get_run_logger().info("labeled %s with %s; peak RSS %.0f MiB", dataset_name, ", ".join(todo), peak_rss_mib())
    return results


def write_logits(learner: Learner, dataset: str, span: tuple[int, int], out, labeling: LabelingConfig,
                 device: str, computed: Mapping[str, str]) -> None:
    """Rows ``span`` (start, stop) of ``dataset`` labeled by ``learner`` (``labeling``'s batch size and
    precision), written atomically to ``out``, which records ``computed`` in its metadata (``labeled_on``)."""
    from prompt_core import predict_logits

    start, stop = span
    ids = (row["id"] for row in iter_rows(dataset, ["id"], start=start, stop=stop))
    with atomic_path(out) as tmp:
        chunks = predict_logits(learner, iter_rows(dataset, learner.template.slots, start=start, stop=stop),
                                batch_size=labeling.batch_size, device=device, precision=labeling.precision)
        schema = pa.schema([("id", pa.string()), ("logits", pa.list_(pa.float32(), len(learner.labels)))],
                           metadata={COMPUTED: json.dumps(dict(computed))})
        with pq.ParquetWriter(tmp, schema) as writer:
            for chunk in chunks:
                writer.write_table(pa.table({"id": pa.array(list(islice(ids, len(chunk))), pa.string()),
                                             "logits": logits_column(chunk)}, schema=schema))


def labeled_on(logits: Path) -> dict[str, str] | None:
    """The device type and precision a logits file (one shard's) was computed on and in, as ``write_logits``
    recorded it; None for one written before it was. A rerun that reuses the logits reports them too, so its
    MLflow runs say what its numbers came from, as the first run's do."""
    recorded = pq.read_schema(local(logits)).metadata or {}
    return json.loads(recorded[COMPUTED.encode()]) if COMPUTED.encode() in recorded else None


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
