"""Carrying out a run's plan: submit its training, labeling, selection and combining tasks, and
collect their outputs (paths, which is all tasks pass to each other). Nothing is reported here:
``flows/reporter.py`` logs and writes what this returns."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pyarrow.parquet as pq

from data.location import exists, local, location
from data.outputs import atomic_path, content_key
import prompt_core  # its names load on first use: save_ensemble's torch not when the flow is imported
from data.parquet import read_logits, ref, shard_count
from tasks.models import label_set, train_model, untrained_model
from tasks.ensembles import combine
from tasks.pseudo import build_train_set, with_gold_labels
from tasks.tracking import TrackedRun, used_tags

from .plan import Member, Plan
from .progress import Progress
from .reporter import artifact_key
from .runners import one_device
from .stages import Evaluation


class Executor:
    """Runs a plan's tasks on the flow's task runner.

    Args:
        plan: who trains on what.
        run_dir: the run directory (absolute, or a URL).
        data: the prepared sets' manifest (``prepare_data``): each set's path and row count.
        tracked: the MLflow store and parent run the training tasks log to.
    """

    def __init__(self, plan: Plan, run_dir: str, data: dict, tracked: TrackedRun):
        self.plan, self.config, self.run_dir, self.data = plan, plan.config, run_dir, data
        self.tracked = tracked
        self.models_trained: list[dict] = []  # every training task's result, reused or not
        self.adapter_models: set[str] = set()  # trained as adapters: they label through one shared backbone
        self.computed: list[dict] = []  # each training's and labeling's device type and precision (where known)
        self.labeled: dict[str, list[dict]] = {}  # each set's logits: what labeled them (a sharded set's: each shard)
        generations = plan.config.ipet.generations + (1 if plan.gold_size else 0)
        self.progress = Progress(len(plan.members) * generations + (plan.config.final.mode == "distill"),
                                 artifact_key(plan.config.name, "progress"))

    def use_gold(self, labeled: str) -> None:
        """Later stages train on ``labeled``: the gold set grown by a person's answers (``ask:``)."""
        self.data = {**self.data, "labeled": labeled}

    def untrained(self) -> dict[Member, str]:
        """Every PVP on the backbone as is (zero-shot)."""
        return {(p, None): untrained_model(self.plan.untrained_name(p), self.plan.spec(p), self.run_dir)
                for p in self.plan.pvps}

    def train_all(self, generation: int, train_sets: dict[Member, str]) -> dict[Member, str]:
        """One model per member on its training set; their directories."""
        with one_device(self.config):
            futures = {
                m: train_model.submit(self.plan.name(generation, m), self.plan.spec(m[0]), path,
                                      self.plan.train_config(m, generation), self.run_dir, self.tracked,
                                      unlabeled=self.data["pool"],
                                      params={"generation": generation, "pvp": m[0], "seed": m[1]})
                for m, path in train_sets.items()
            }
        results = self.progress.wait("pet" if generation == 0 else f"ipet-{generation}", futures)
        self.models_trained.extend(results.values())
        self.computed += [c for r in results.values() for c in r["computed"]]
        self.adapter_models |= {r["model_dir"] for m, r in results.items()
                                if self.plan.train_config(m, generation).peft}
        return {m: r["model_dir"] for m, r in results.items()}

    def distill(self, soft_pool: str) -> str:
        """The final classifier trained on the ensemble's soft labels of the pool, and on a person's
        answer where the pool row was asked (``ask:``); its directory."""
        targets = with_gold_labels.submit(soft_pool, self.data["labeled"], self.config.labels, self.run_dir).result()
        with one_device(self.config):
            future = train_model.submit(self.plan.name("final", "distilled"), self.plan.distill_spec(), targets,
                                        self.config.distill_train, self.run_dir, self.tracked)
        final = self.progress.wait("final", {"final": future})["final"]
        self.models_trained.append(final)
        self.computed += final["computed"]
        return final["model_dir"]

    def label_all(self, models: dict[Member, str], dataset: str) -> dict[Member, str]:
        """Every model labels ``dataset``, one task per model and shard; their logits' paths. Trained
        adapter models (``train.peft``, ``pet.train.peft``) share their backbone: one task per shard labels
        with all of them."""
        labeling = self.config.labeling
        shards = shard_count(self.data["rows"][dataset], labeling.shard_rows)
        adapters = all(models[m] in self.adapter_models for m in models)
        groups = [list(models)] if adapters else [[m] for m in models]
        with one_device(self.config):
            futures = [(group, label_set.submit({model_name(models[m]): models[m] for m in group}, dataset,
                                                self.data[dataset], self.run_dir, labeling, shard))
                       for group in groups for shard in range(shards)]
        results = [(group, future.result()) for group, future in futures]
        for r in (r for _, result in results for r in result.values() if "computed" in r):
            self.labeled.setdefault(r["path"], []).append(r["computed"])
            self.computed.append(r["computed"])
        return {m: result[model_name(models[m])]["path"] for group, result in results for m in group}

    def pseudo_labeled_sets(self, generation: int, models: dict[Member, str], weights: list[float]) -> dict:
        """iPET's step: ``models`` label the pool, and each member's peers pick its next training set."""
        pool_logits = self.label_all(models, "pool")
        futures = {
            member: build_train_set.submit(
                self.plan.name(generation, member), generation, self.data["labeled"], self.data["pool"],
                [pool_logits[m] for m in self.plan.peers(member, models)],
                [weights[m[0]] for m in self.plan.peers(member, models)],
                self.config.labels, self.config.ipet, member[1], self.run_dir)
            for member in self.plan.members
        }
        return {member: future.result() for member, future in futures.items()}

    def pvp_weights(self, prior: dict[Member, str]) -> list[float]:
        """Each PVP's weight in PET's ensembles: its untrained accuracy on the gold set, or all equal."""
        return self.pvp_accuracies(prior, "labeled") if self.plan.weighs_pvps else self.plan.equal_weights()

    def pvp_accuracies(self, prior: dict[Member, str], dataset: str) -> list[float]:
        """Each untrained PVP's accuracy on ``dataset``, in PVP order."""
        logits = self.label_all(prior, dataset)
        return [accuracy(logits[(p, None)], self.data[dataset], self.config.labels) for p in self.plan.pvps]

    def combine(self, name: str, logits: dict[Member, str], models: dict[Member, str], weights: list[float] | None,
                dataset: str) -> dict:
        return combine(name, [logits[m] for m in models], self.plan.member_weights(models, weights),
                       self.data[dataset], self.config.labels, self.run_dir)

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
        w = self.plan.member_weights(models, weights)
        key = content_key("ensemble", [ref(d) for d in models.values()], w)
        out = location(self.run_dir) / "models" / f"final-ensemble-{key}"
        if not exists(out):  # members are named relative to it: copies beside its own (a URL's mirror)
            with atomic_path(out, directory=True) as tmp:
                prompt_core.save_ensemble(tmp, [local(d) for d in models.values()], w)
        return str(out)

    def evaluate(self, models: dict[Member, str], weights: list[float] | None, stage: int) -> Evaluation:
        """Each model's and the ensemble's accuracy on the test set (none without one), with the model's directory
        in ``models/`` (what the run used: ``flows/gc.py``); ``stage`` numbers the ensemble's predictions file."""
        if not self.data.get("test"):
            return Evaluation(None, [{"name": model_name(d), "dir": Path(d).name} for d in models.values()])
        logits = self.label_all(models, "test")
        rows, tracked = [], {}
        for m, d in models.items():
            acc = accuracy(logits[m], self.data["test"], self.config.labels)
            trained = next((t for t in self.models_trained if t["model_dir"] == d), None)
            if trained:  # with what labeled the test set: its accuracy depends on it as on the training
                labeled = used_tags(self.labeled.get(logits[m], []))
                tracked[trained["mlflow_run_id"]] = acc, {f"labeling.{k}": v for k, v in labeled.items()}
            rows.append({"name": model_name(d), "dir": Path(d).name, "test_accuracy": acc,
                         "reused": trained["reused"] if trained else None})
        ensembled = self.combine(f"stage{stage}", logits, models, weights, "test")["accuracy"]
        return Evaluation(ensembled, rows, tracked)

    @property
    def task_counts(self) -> dict[str, int]:
        """How many models were trained in this run and how many were reused from an earlier one."""
        trained = sum(not t["reused"] for t in self.models_trained)
        return {"trained": trained, "reused": len(self.models_trained) - trained}


def accuracy(logits_path: str, dataset: str, labels: Sequence[str]) -> float:
    """The accuracy of the logits at ``logits_path`` on the labeled parquet set ``dataset``."""
    index = {label: i for i, label in enumerate(labels)}
    truth = [index[t] for t in pq.read_table(local(dataset), columns=["label"])["label"].to_pylist()]
    return prompt_core.accuracy(read_logits(logits_path), truth)


def model_name(model_dir: str) -> str:
    """``models/g1-p0-s42-<key>`` → ``g1-p0-s42``."""
    return Path(model_dir).name.rsplit("-", 1)[0]
