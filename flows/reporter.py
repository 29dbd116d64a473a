"""Reporting a run: each stage to MLflow, to a Prefect artifact and to the log; at the end
``results.json``, ``summary.md`` and the run's artifacts; then the model registry's decision."""

from __future__ import annotations

import contextlib
import functools
import re
import tempfile
import time
from pathlib import Path
from typing import Sequence

import pyarrow.parquet as pq
from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE
from prefect import runtime
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from data.location import is_url, local, location, names
from data.outputs import atomic_path, write_json
from tasks.registry import CONTENT_KEY, files_key, register_final_model
from tasks.tracking import TrackedRun, log_batch, used_tags

from .config import RunConfig
from .disk import disk_line, disk_usage
from .stages import Stage, ask_line, fall, floor, fmt, stage_table

FINAL_KEY = f"final_model.{CONTENT_KEY}"  # parent run tag: the content key of the final model it logged


def entry_flow_run_id() -> str:
    """The flow run a user sees in the UI (``ipet``, a deployment's run), not its stages subflow."""
    return str(runtime.flow_run.parent_flow_run_id or runtime.flow_run.id)


class Reporter:
    """Everything a run tells the world, in the order it happens.

    Args:
        config: the run's config (its name, registry name and labeling batch size).
        run_dir: where ``results.json`` and ``summary.md`` go.
        tracked: the MLflow store and the flow's parent run.
        client: a client of that store.
    """

    def __init__(self, config: RunConfig, run_dir: str, tracked: TrackedRun, client: MlflowClient):
        self.config, self.run_dir, self.tracked, self.client = config, run_dir, tracked, client
        self.parent = tracked.parent_id
        self.stages: list[Stage] = []

    @property
    def stage_number(self) -> int:
        """The index the next recorded stage gets (it names that stage's ensembled predictions)."""
        return len(self.stages)

    def record(self, stage: Stage) -> None:
        """A finished stage: its scores on the parent run twice, as one series per score (step = stage
        index: a curve over the run) and under the stage's own key (``test_accuracy.pet``,
        ``test_accuracy.final``), which lines up across runs whatever stages they had; on each trained model's
        run its test accuracy, its stage (tag ``stage``) and what labeled the test set (``labeling.*.used``:
        the accuracy depends on it as on the training's ``precision.used``); a table artifact and a log line."""
        step, now = len(self.stages), int(time.time() * 1000)
        self.stages.append(stage)
        scores = {k: getattr(stage, k) for k in ("test_accuracy", "train_size", "pseudo_label_accuracy")}
        log_batch(self.client, self.parent, [m for k, v in scores.items() if v is not None for m in
                                             (Metric(k, v, now, step), Metric(f"{k}.{stage.stage}", v, now, 0))])
        for run_id, (acc, tags) in stage.tracked.items():
            log_batch(self.client, run_id, [Metric("test_accuracy", acc, now, 0)],
                      tags=[RunTag(k, v) for k, v in {"stage": stage.stage, **tags}.items()])
        rows = [{"model": m["name"], **{k: fmt(v) for k, v in m.items() if k != "name"}} for m in stage.models]
        create_table_artifact(rows or [{"model": "-"}], key=artifact_key(self.config.name, stage.stage),
                              description=f"{stage.stage}: test accuracy {fmt(stage.test_accuracy)}, "
                                          f"train size {fmt(stage.train_size)}, "
                                          f"pseudo-label accuracy {fmt(stage.pseudo_label_accuracy)}")
        print(f"[{stage.stage}] " + (stage.note or f"test accuracy {fmt(stage.test_accuracy)} · train size "
                                     f"{fmt(stage.train_size)} · pseudo-label accuracy "
                                     f"{fmt(stage.pseudo_label_accuracy)}"))

    def finish(self, tasks: dict[str, int], data_versions: dict | None = None, adapted: dict | None = None,
               asked: dict | None = None, computed: Sequence[dict] = ()) -> dict:
        """``results.json`` and ``summary.md`` written and logged with the run's sets, predictions and
        final model; ``computed`` the device types and precisions the run's tasks used (``Executor.computed``),
        as the parent's tags ``precision.used`` and ``device.used``; ``tasks`` counts the models trained and
        reused, ``data_versions`` the dataset store
        versions the data was read at (the prepared data's ``versions``: which ingest a run trained on),
        ``adapted`` the adaptation's result, counted too (after ``ipet adapt`` a run says it reused its
        backbone), ``asked`` what a person's answers gave the run (``Asker.outcome``: how many rows
        the stages after the question trained on). Returns the results."""
        if adapted:
            tasks = {**tasks, "backbone_adapted": int(not adapted["reused"]), "backbone_reused": int(adapted["reused"])}
        results = {
            "name": self.config.name,
            "run_dir": self.run_dir,
            "backbone": self.config.model,
            "mlflow_run_id": self.parent,
            "prefect_flow_run_id": entry_flow_run_id(),
            "tasks": tasks,
            "stages": [s.record() for s in self.stages],
            "disk": disk_usage(self.run_dir),
            **({"data_versions": data_versions} if data_versions else {}),
        }
        summary = stage_table(results["stages"])
        if asked:
            results["ask"] = asked
            summary += f"\n\n{ask_line(asked)}."
        flagged = fall(self.stages)
        if flagged:
            results["final_below_earlier_stage"] = flagged
            summary += f"\n\n**Warning:** {flagged}."
            self.client.set_tag(self.parent, "final_below_earlier_stage", flagged)
        self._log_outcome(tasks, summary, [*computed, *(adapted or {}).get("computed", [])])
        summary += f"\n\n{disk_line(results['disk'])}"
        if not is_url(self.run_dir):
            summary += f" `ipet gc {self.run_dir}` frees the weights of every model but the final one."
        run_dir = location(self.run_dir)
        write_json(results, run_dir / "results.json")
        with atomic_path(run_dir / "summary.md") as tmp:
            tmp.write_text(summary + "\n")
        self.client.log_artifact(self.parent, str(local(run_dir / "results.json")))
        self.client.log_artifact(self.parent, str(local(run_dir / "summary.md")))
        for sub in ("sets", "predictions"):
            if names(run_dir / sub) is not None:
                self.client.log_artifacts(self.parent, str(local(run_dir / sub, fresh=True)), sub)
        if isinstance(self.stages[-1].model, str):
            self._log_final_model(self.stages[-1].model)
        create_markdown_artifact(f"# iPET run `{self.config.name}`\n\n{summary}\n\nMLflow run: `{self.parent}`",
                                 key=artifact_key(self.config.name, "summary"))
        return results

    def _log_outcome(self, tasks: dict[str, int], summary: str, computed: Sequence[dict]) -> None:
        """The models trained and reused as metrics ``tasks.<what>`` (a rerun that trained nothing stands
        out in the compare view), the stage table under the run's description, and the device types and
        precisions ``computed`` as tags."""
        now = int(time.time() * 1000)
        note = self.client.get_run(self.parent).data.tags.get(MLFLOW_RUN_NOTE, "")
        counts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in tasks.items())
        log_batch(self.client, self.parent, [Metric(f"tasks.{k}", v, now, 0) for k, v in tasks.items()],
                  tags=[RunTag(MLFLOW_RUN_NOTE, f"{note}\n\n{summary}\n\nModels: {counts}.".strip()),
                        *(RunTag(k, v) for k, v in used_tags(computed).items())])

    def _log_final_model(self, final: str) -> None:
        """Log the final model's directory once: a rerun that reused it, or a copy of its run directory
        (``cp -r``), links to the copy an earlier run of the experiment logged (tag ``final_model.uri``)
        instead of adding another."""
        key = files_key(local(final))
        uri = earlier_upload(self.client, self.client.get_run(self.parent).info.experiment_id, final, key)
        if uri is None:
            uri = f"runs:/{self.parent}/final-model"
            self.client.log_artifacts(self.parent, str(local(final)), "final-model")
        tags = {"final_model.dir": final, FINAL_KEY: key, "final_model.uri": uri}
        log_batch(self.client, self.parent, tags=[RunTag(k, v) for k, v in tags.items()])

    def register(self, results: dict, test_set: str | None) -> dict:
        """Champion/challenger (tasks/registry.py); results.json gains ``registry``. A failure is
        reported there and in MLflow, never raised: the run's results are already written."""
        final = self.stages[-1]
        try:
            least = floor(self.stages, _labels(test_set), self.config.tracking.champion_margin) if test_set else None
            registry = register_final_model(self.config.registered_model, final.model, test_set,
                                            final.test_accuracy, self.tracked, self.config.labeling.batch_size,
                                            least)
            print(f"[registry] {registry['registered_model']} v{registry['version']} {registry['decision']}: "
                  f"{registry['reason']}")
        except Exception as err:  # the store or registry failed; the run itself succeeded
            registry = {"registered_model": self.config.registered_model, "error": f"{type(err).__name__}: {err}"}
            print(f"[registry] the final model was not registered: {registry['error']}")
            with contextlib.suppress(Exception):
                self.client.set_tag(self.parent, "registry.error", registry["error"][:5000])
        results = {**results, "registry": registry}
        path = write_json(results, location(self.run_dir) / "results.json")
        with contextlib.suppress(Exception):
            self.client.log_artifact(self.parent, str(local(path)))
        return results


def earlier_upload(client: MlflowClient, exp_id: str, final: str, key: str) -> str | None:
    """Where the experiment's first run that logged these files logged them: found by their content key ``key``
    (``files_key``, the registry's), wherever its run directory was; a run tagged before there was one, by the
    directory ``final``, or by one of its name elsewhere (the run directory it was copied from: the name holds
    the key of the model's inputs) whose upload has the key, which that run is then tagged with."""
    search = functools.partial(client.search_runs, [exp_id], order_by=["attributes.start_time ASC"])
    logged = " and tags.`final_model.uri` LIKE 'runs:/%'"
    runs = search(f"tags.`{FINAL_KEY}` = '{key}'{logged}", max_results=1)
    name = Path(final).name
    if not runs and "'" not in name:  # such a name cannot be quoted in a filter (ipet's own never is)
        before = [r for r in search(f"tags.`final_model.dir` LIKE '%{name}'{logged}") if FINAL_KEY not in r.data.tags]
        runs = [r for r in before if r.data.tags["final_model.dir"] == final] or [
            r for r in before if Path(r.data.tags["final_model.dir"]).name == name
            and _uploaded_key(client, r.data.tags["final_model.uri"]) == key]
        if runs and runs[0].data.tags["final_model.dir"] != final:
            client.set_tag(runs[0].info.run_id, FINAL_KEY, key)
    return runs[0].data.tags["final_model.uri"] if runs else None


def _uploaded_key(client: MlflowClient, uri: str) -> str | None:
    """``files_key`` of the files a run uploaded at ``uri`` (``runs:/RUN_ID/PATH``); None where they cannot be read."""
    run_id, _, path = uri.removeprefix("runs:/").partition("/")
    with tempfile.TemporaryDirectory() as tmp, contextlib.suppress(Exception):  # gone, or unreadable: not these
        where = f"{client.get_run(run_id).info.artifact_uri}/{path}"  # read in place from a local store
        folder = Path(where.removeprefix("file://") if where.startswith("file://") else
                      client.download_artifacts(run_id, path, tmp))
        return files_key(folder) if folder.is_dir() else None
    return None


def _labels(test_set: str) -> list[str]:
    return pq.read_table(local(test_set), columns=["label"])["label"].to_pylist()


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower())
