"""The iPET loop as a Prefect flow; it reads like the method.

Optionally the backbone first gets more masked-LM training on the pool's text (TAPT). PET then
trains one model per (PVP × seed) on the gold set. Each iPET generation lets every model's
peers label the unlabeled pool, keeps their most confident examples (balanced like the gold
labels), and trains fresh models on the gold set plus those. The last generation's ensemble
labels the pool once more and is distilled into one classifier, or is itself the final model.
The final model is registered in MLflow's model registry, and becomes the champion only if it
beats the current one on this run's test set.

``ipet`` is the entry point (CLI, deployments, Python): it builds the task runner the config's
``runner`` section asks for (threads here, or Ray) and runs the stages on it as a subflow.
"""

from __future__ import annotations

from prefect import flow

from data.lock import run_dir_lock
from data.store import remove_stale_temps
from tasks import devices, tracking
from tasks.adapt import adapt_backbone
from tasks.data import prepare_data
from tasks.models import train_model
from tasks.pseudo import build_train_set

from .config import RunConfig, RunnerConfig, load_config
from .run import Run, Stage, entry_flow_run_id
from .runners import one_device, task_runner


@flow(name="ipet", log_prints=True)
def ipet(config: RunConfig | str, run_dir: str = "runs/ipet", runner: RunnerConfig | None = None) -> dict:
    """``config`` is a validated config, or the path of its YAML file (as deployments pass it);
    ``runner``, when given, replaces its ``runner`` section (a deployment's choice of engine)."""
    config = config if isinstance(config, RunConfig) else load_config(config)
    config = config.model_copy(update={"runner": runner}) if runner else config
    with run_dir_lock(run_dir) as locked:
        remove_stale_temps(locked)  # a killed run's half-written files; safe, the run dir is ours
        slots = devices.configure(config.train.device, config.max_parallel)
        on = task_runner(config.runner, slots)
        return ipet_stages.with_options(task_runner=on)(config=config, run_dir=str(locked))


@flow(name="ipet-stages", log_prints=True)
def ipet_stages(config: RunConfig, run_dir: str) -> dict:
    """The method, on whichever task runner ``ipet`` chose; ``run_dir`` is absolute or a URL (Ray workers share it)."""
    uri = tracking.store_uri(config.tracking.mlflow_uri, run_dir if config.tracking.fallback_local else None)
    tracking.experiment_id(uri, config.tracking.experiment)  # a store that fails, fails before any compute
    data = prepare_data(config.data, config.fields, config.labels, run_dir)
    tags = {"prefect.flow_run_id": entry_flow_run_id(), "run_dir": run_dir}
    with tracking.parent_run(uri, config.tracking.experiment, config.name, tags) as (client, parent_id):
        # Adaptation (optional, TAPT): MLM training on the pool's text; every learner starts from it.
        if config.adapt:
            with one_device(config.runner, config.adapt.device):
                adapted = adapt_backbone.submit(config.model, data["pool"], config.fields, config.adapt.model_dump(),
                                                run_dir, {"uri": uri, "parent_id": parent_id},
                                                config.trust_remote_code).result()
            config = config.model_copy(update={"model": adapted["model_dir"]})
        run = Run(config, run_dir, data, uri, parent_id)

        # Zero-shot: every PVP on the backbone, untrained. Its accuracy on the gold set is the
        # weight PET gives each model ("accuracy on the training set before training"). A learner
        # without a prior (a classifier's random head) has no zero-shot stage, and equal weights.
        prior = run.untrained()
        weights = run.pvp_weights(prior)
        run.record(Stage.of("zero-shot", run.evaluate(prior, weights=None), train_size=0) if run.has_prior
                   else Stage.not_applicable("zero-shot", f"learner: {config.learner} has no prior"))

        # PET: one model per PVP and seed on the gold set (zero-shot iPET starts from the prior).
        models = prior
        if run.gold_size:
            models = run.train_all(0, {m: data["labeled"] for m in run.members})
            run.record(Stage.of("pet", run.evaluate(models, weights), train_size=run.gold_size))

        # iPET: peers label the pool, confident examples join the gold set, fresh models train.
        for generation in range(1, config.ipet.generations + 1):
            pool_logits = run.label_all(models, "pool")
            sets = {
                member: build_train_set.submit(
                    run.name(generation, member), generation, data["labeled"], data["pool"],
                    [pool_logits[m] for m in run.peers(member, models)],
                    [weights[m[0]] for m in run.peers(member, models)],
                    config.labels, config.ipet, member[1], run_dir)
                for member in run.members
            }
            sets = {member: future.result() for member, future in sets.items()}
            models = run.train_all(generation, {m: s["path"] for m, s in sets.items()})
            run.record(Stage.of(f"ipet-{generation}", run.evaluate(models, weights), sets=sets))

        # Final: the last ensemble's soft labels on the pool, distilled into one classifier.
        if config.final.mode == "distill":
            soft_pool = run.soft_pool(models, weights)
            with one_device(config.runner, config.train.device):
                final = train_model.submit(run.name("final", "distilled"), run.distill_spec(), soft_pool["path"],
                                           config.distill_train.model_dump(), run_dir, run.tracking_info).result()
            run.models_trained.append(final)
            evaluation = run.evaluate({("final", None): final["model_dir"]}, weights=None)
            run.record(Stage.of("final", evaluation, train_size=run.pool_size,
                                pseudo_label_accuracy=soft_pool["accuracy"], model=final["model_dir"]))
        else:  # or the last ensemble itself
            last = run.stages[-1]
            run.record(Stage.of("final", last.evaluation, train_size=last.train_size,
                                pseudo_label_accuracy=run.pool_accuracy(models, weights),
                                model=run.ensemble_model(models, weights)))
        results = run.finish(client)
        # Champion/challenger: register the final model; it becomes champion only if it wins.
        return run.register(client, results) if config.tracking.register_model else results
