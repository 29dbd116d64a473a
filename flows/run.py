"""Bookkeeping for one iPET flow run: who trains on what, what each stage scored, what is logged.

Kept out of ``flows/ipet.py`` so the flow itself reads like the method.
"""

from __future__ import annotations

import contextlib
import re
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from mlflow.tracking import MlflowClient
from prefect import runtime
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from data.location import exists, local, location, names
from data.store import atomic_path, content_key, write_json
from prompt_core import PVP, Template, accuracy, learner_class, save_ensemble
from tasks.io import read_logits, ref, shard_count
from tasks.models import label_set, train_model, untrained_model
from tasks.pseudo import combine
from tasks.registry import register_final_model

from .config import RunConfig
from .runners import one_device

Member = tuple[Any, Any]  # (PVP index, seed); seed None for an untrained PVP
STAGE_SLACK = 0.01  # how far below an earlier stage of its run a final model may score and still be champion


def entry_flow_run_id() -> str:
    """The ``ipet`` flow run a user sees in the UI (a deployment's run), not its stages subflow."""
    return str(runtime.flow_run.parent_flow_run_id or runtime.flow_run.id)


@dataclass
class Evaluation:
    test_accuracy: float | None
    models: list[dict] = field(default_factory=list)


@dataclass
class Stage:
    stage: str
    test_accuracy: float | None
    train_size: int | None
    pseudo_label_accuracy: float | None = None
    models: list[dict] = field(default_factory=list)
    model: Any = None
    note: str | None = None  # why a stage has no scores

    @classmethod
    def not_applicable(cls, stage: str, reason: str) -> "Stage":
        return cls(stage, None, None, note=f"not applicable: {reason}")

    @classmethod
    def of(cls, stage: str, evaluation: Evaluation, train_size: int | None = None, sets: dict | None = None,
           pseudo_label_accuracy: float | None = None, model: Any = None) -> "Stage":
        if sets:
            train_size = max(s["size"] for s in sets.values())
            known = [s["pseudo_label_accuracy"] for s in sets.values() if s["pseudo_label_accuracy"] is not None]
            pseudo_label_accuracy = statistics.fmean(known) if known else None
            by_name = {s["name"]: s for s in sets.values()}
            for m in evaluation.models:
                m.update(train_size=by_name.get(m["name"], {}).get("size"),
                         pseudo_label_accuracy=by_name.get(m["name"], {}).get("pseudo_label_accuracy"))
        return cls(stage, evaluation.test_accuracy, train_size, pseudo_label_accuracy, evaluation.models, model)

    @property
    def evaluation(self) -> Evaluation:
        return Evaluation(self.test_accuracy, self.models)


class Run:
    def __init__(self, config: RunConfig, run_dir: str, data: dict, uri: str, parent_id: str):
        self.config, self.run_dir, self.data = config, run_dir, data
        self.tracking_info = {"uri": uri, "parent_id": parent_id}
        self.pvp_indices = list(range(len(config.pvps)))
        self.members: list[Member] = [(p, s) for p in self.pvp_indices for s in config.seeds]
        self.gold_size = data["rows"]["labeled"]
        self.pool_size = data["rows"]["pool"]
        self.stages: list[Stage] = []
        self.models_trained: list[dict] = []

    # --- who is who -------------------------------------------------------------------------
    def name(self, generation: int | str, member: Member | str) -> str:
        tail = member if isinstance(member, str) else f"p{member[0]}-s{member[1]}"
        prefix = f"g{generation}" if isinstance(generation, int) else generation
        return f"{prefix}-{tail}"

    def spec(self, p: int) -> dict:
        c = self.config
        return asdict(learner_class(c.learner).spec_for(c.model, c.pvp(p), **self.spec_options))

    @property
    def spec_options(self) -> dict:
        c = self.config
        return {"max_length": c.max_length, "trust_remote_code": c.trust_remote_code,
                "temperature": c.similarity_temperature}

    def distill_spec(self) -> dict:
        """The final model: a similarity learner keeps its prior's form (the text fields matched to the
        first PVP's phrases); otherwise a sequence classifier on the text fields."""
        c = self.config
        template = " ".join(f"{{{f}}}" for f in c.fields)
        kind = "similarity" if c.learner == "similarity" else "classifier"
        pvp = PVP(Template(template), c.pvp(0).verbalizer)
        return asdict(learner_class(kind).spec_for(c.model, pvp, **self.spec_options))

    def peers(self, member: Member, models: dict[Member, str]) -> list[Member]:
        """The previous generation's models other than ``member``'s own predecessor."""
        return [m for m in models if m != member and m != (member[0], None)]

    # --- work ----------------------------------------------------------------------------------
    def train_all(self, generation: int, train_sets: dict[Member, str]) -> dict[Member, str]:
        with one_device(self.config.runner, self.config.train.device):
            futures = {
                m: train_model.submit(self.name(generation, m), self.spec(m[0]), path,
                                      self.config.train.model_copy(update={"seed": m[1]}).model_dump(), self.run_dir,
                                      self.tracking_info, unlabeled=self.data["pool"],
                                      params={"generation": generation, "pvp": m[0], "seed": m[1]})
                for m, path in train_sets.items()
            }
        results = {m: f.result() for m, f in futures.items()}
        self.models_trained.extend(results.values())
        return {m: r["model_dir"] for m, r in results.items()}

    def label_all(self, models: dict[Member, str], dataset: str) -> dict[Member, str]:
        """Every model labels ``dataset``, one task per model and shard; their logits' paths."""
        labeling = self.config.labeling
        shards = shard_count(self.data["rows"][dataset], labeling.shard_rows)
        with one_device(self.config.runner, self.config.train.device):
            futures = {m: [label_set.submit(model_name(d), d, dataset, self.data[dataset], self.run_dir,
                                            labeling.batch_size, labeling.shard_rows, shard) for shard in range(shards)]
                       for m, d in models.items()}
        return {m: [f.result() for f in shard_futures][0]["path"] for m, shard_futures in futures.items()}

    def untrained(self) -> dict[Member, str]:
        """Every PVP on the backbone as is (zero-shot)."""
        return {(p, None): untrained_model(f"zero-shot-p{p}", self.spec(p), self.run_dir) for p in self.pvp_indices}

    @property
    def has_prior(self) -> bool:
        """Whether an untrained learner of this run already scores (not a random head)."""
        return learner_class(self.config.learner).has_prior

    def pvp_weights(self, prior: dict[Member, str]) -> list[float]:
        if not self.gold_size or not self.has_prior:
            return [1.0] * len(self.pvp_indices)
        return self.pvp_accuracies(prior, "labeled")

    def pvp_accuracies(self, prior: dict[Member, str], dataset: str) -> list[float]:
        """Each untrained PVP's accuracy on ``dataset``, in PVP order."""
        logits = self.label_all(prior, dataset)
        return [self._accuracy(logits[(p, None)], dataset) for p in self.pvp_indices]

    def member_weights(self, models: dict[Member, str], weights: list[float] | None) -> list[float] | None:
        """Each model's weight in an ensemble: its PVP's weight under ``wmean``, else equal (None)."""
        w = [weights[m[0]] for m in models] if weights and self.config.ipet.reduction == "wmean" else None
        return None if w is not None and sum(w) <= 0 else w

    def combine(self, name: str, logits: dict[Member, str], models: dict[Member, str], weights: list[float] | None,
                dataset: str) -> dict:
        return combine(name, [logits[m] for m in models], self.member_weights(models, weights), self.data[dataset],
                       self.config.labels, self.run_dir)

    def soft_pool(self, models: dict[Member, str], weights: list[float] | None) -> dict:
        """The pool labeled by the ensemble: its soft labels (``path``) and pseudo-label ``accuracy``."""
        return self.combine("final-pool", self.label_all(models, "pool"), models, weights, "pool")

    def pool_accuracy(self, models: dict[Member, str], weights: list[float] | None) -> float | None:
        """The ensemble's accuracy on the pool's hidden labels. A real unlabeled pool has none: then
        it is None, and the pool is not labeled again just to find that out."""
        if "hidden_label" not in pq.read_schema(local(self.data["pool"])).names:
            return None
        return self.soft_pool(models, weights)["accuracy"]

    def ensemble_model(self, models: dict[Member, str], weights: list[float] | None) -> str:
        """The ensemble as one model directory (``ensemble.json``: members and weights, combined
        as ``combine`` does), so it can be registered and predicted with like a single model."""
        w = self.member_weights(models, weights)
        key = content_key("ensemble", [ref(d) for d in models.values()], w)
        out = location(self.run_dir) / "models" / f"final-ensemble-{key}"
        if not exists(out):  # members are named relative to it: copies beside its own (a URL's mirror)
            with atomic_path(out, directory=True) as tmp:
                save_ensemble(tmp, [local(d) for d in models.values()], w)
        return str(out)

    def evaluate(self, models: dict[Member, str], weights: list[float] | None) -> Evaluation:
        if not self.data.get("test"):
            return Evaluation(None, [{"name": model_name(d)} for d in models.values()])
        logits = self.label_all(models, "test")
        client = MlflowClient(self.tracking_info["uri"])
        rows = []
        for m, d in models.items():
            acc = self._accuracy(logits[m], "test")
            trained = next((t for t in self.models_trained if t["model_dir"] == d), None)
            if trained:
                client.log_metric(trained["mlflow_run_id"], "test_accuracy", acc)
            rows.append({"name": model_name(d), "test_accuracy": acc,
                         "reused": trained["reused"] if trained else None})
        stage_name = f"stage{len(self.stages)}"
        return Evaluation(self.combine(stage_name, logits, models, weights, "test")["accuracy"], rows)

    def _accuracy(self, logits_path: str, dataset: str) -> float:
        index = {label: i for i, label in enumerate(self.config.labels)}
        truth = [index[t] for t in pq.read_table(local(self.data[dataset]), columns=["label"])["label"].to_pylist()]
        return accuracy(read_logits(logits_path), truth)

    # --- reporting -----------------------------------------------------------------------------
    def record(self, stage: Stage) -> None:
        self.stages.append(stage)
        step = len(self.stages) - 1
        client = MlflowClient(self.tracking_info["uri"])
        for key in ("test_accuracy", "train_size", "pseudo_label_accuracy"):
            value = getattr(stage, key)
            if value is not None:
                client.log_metric(self.tracking_info["parent_id"], key, value, step=step)
        rows = [{"model": m["name"], **{k: fmt(v) for k, v in m.items() if k != "name"}} for m in stage.models]
        create_table_artifact(rows or [{"model": "-"}], key=artifact_key(self.config.name, stage.stage),
                              description=f"{stage.stage}: test accuracy {fmt(stage.test_accuracy)}, "
                                          f"train size {fmt(stage.train_size)}, "
                                          f"pseudo-label accuracy {fmt(stage.pseudo_label_accuracy)}")
        print(f"[{stage.stage}] " + (stage.note or f"test accuracy {fmt(stage.test_accuracy)} · train size "
                                     f"{fmt(stage.train_size)} · pseudo-label accuracy {fmt(stage.pseudo_label_accuracy)}"))

    def finish(self, client: MlflowClient) -> dict:
        parent = self.tracking_info["parent_id"]
        trained = [t for t in self.models_trained if not t["reused"]]
        results = {
            "name": self.config.name,
            "run_dir": self.run_dir,
            "backbone": self.config.model,
            "mlflow_run_id": parent,
            "prefect_flow_run_id": entry_flow_run_id(),
            "tasks": {"trained": len(trained), "reused": len(self.models_trained) - len(trained)},
            "stages": [asdict(s) for s in self.stages],
        }
        summary = stage_table(results["stages"])
        run_dir = location(self.run_dir)
        write_json(results, run_dir / "results.json")
        with atomic_path(run_dir / "summary.md") as tmp:
            tmp.write_text(summary + "\n")
        client.log_artifact(parent, str(local(run_dir / "results.json")))
        client.log_artifact(parent, str(local(run_dir / "summary.md")))
        for sub in ("sets", "predictions"):
            if names(run_dir / sub) is not None:
                client.log_artifacts(parent, str(local(run_dir / sub, fresh=True)), sub)
        final = self.stages[-1].model
        if isinstance(final, str):
            client.log_artifacts(parent, str(local(final)), "final-model")
        create_markdown_artifact(f"# iPET run `{self.config.name}`\n\n{summary}\n\nMLflow run: `{parent}`",
                                 key=artifact_key(self.config.name, "summary"))
        return results

    def floor(self) -> tuple[str, float] | None:
        """What the final model must score on the test set: always guessing the commonest test label,
        and this run's earlier stages less ``STAGE_SLACK`` (a distilled model may land a little below the
        ensemble it learned from; a fall is a failure)."""
        if not self.data.get("test"):
            return None
        labels = pq.read_table(local(self.data["test"]), columns=["label"])["label"].to_pylist()
        candidates = [("always guessing the commonest class", max(map(labels.count, set(labels))) / len(labels))]
        candidates += [(f"its own {s.stage} stage ({s.test_accuracy:.4f}) less {STAGE_SLACK:g}",
                        s.test_accuracy - STAGE_SLACK) for s in self.stages[:-1] if s.test_accuracy is not None]
        return max(candidates, key=lambda c: c[1])

    def register(self, client: MlflowClient, results: dict) -> dict:
        """Champion/challenger (tasks/registry.py); results.json gains ``registry``. A failure is
        reported there and in MLflow, never raised: the run's results are already written."""
        parent, final = self.tracking_info["parent_id"], self.stages[-1]
        try:
            registry = register_final_model(self.config.registered_model, final.model, self.data.get("test"),
                                            final.test_accuracy, self.tracking_info, self.config.labeling.batch_size,
                                            self.floor())
            print(f"[registry] {registry['registered_model']} v{registry['version']} {registry['decision']}: "
                  f"{registry['reason']}")
        except Exception as err:  # the store or registry failed; the run itself succeeded
            registry = {"registered_model": self.config.registered_model, "error": f"{type(err).__name__}: {err}"}
            print(f"[registry] the final model was not registered: {registry['error']}")
            with contextlib.suppress(Exception):
                client.set_tag(parent, "registry.error", registry["error"][:5000])
        results = {**results, "registry": registry}
        path = write_json(results, location(self.run_dir) / "results.json")
        with contextlib.suppress(Exception):
            client.log_artifact(parent, str(local(path)))
        return results


def model_name(model_dir: str) -> str:
    """``models/g1-p0-s42-<key>`` → ``g1-p0-s42``."""
    return Path(model_dir).name.rsplit("-", 1)[0]


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower())


def stage_table(stages: list[dict]) -> str:
    lines = ["| stage | test accuracy | train size | pseudo-label accuracy |", "|---|---|---|---|"]
    lines += [f"| {s['stage']} | {s['note']} | | |" if s.get("note") else
              f"| {s['stage']} | {fmt(s['test_accuracy'])} | {fmt(s['train_size'])} | "
              f"{fmt(s['pseudo_label_accuracy'])} |" for s in stages]
    return "\n".join(lines)


def fmt(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:.4f}" if isinstance(value, float) else str(value)
