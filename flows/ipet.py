"""The iPET loop as a Prefect flow; it reads like the method.

Optionally the backbone first gets more masked-LM training on the pool's text (TAPT). PET then
trains one model per (PVP × seed) on the gold set. Each iPET generation lets every model's
peers label the unlabeled pool, draws confident examples per class (in proportion to the pool's
estimated class distribution), and trains fresh models on the gold set plus those. The last
generation's ensemble labels the pool once more and is distilled into one model, or is itself the
final model. The final model is registered in MLflow's model registry, and becomes the champion
only if it beats the current one on this run's test set and is no worse than its own run's stages.
Optionally (``ask:``) a person labels the pool rows one stage's models disagree on, and the stages
after it train with those labels too (flows/asking.py).

``ipet`` is the entry point (CLI, deployments, Python): it builds the task runner the config's
``runner`` section asks for (threads here, or Ray) and runs the stages on it as a subflow. Who
trains on what is ``Plan`` (flows/plan.py), the tasks are submitted by ``Executor``
(flows/executor.py), and what a stage scored is logged and written by ``Reporter`` (flows/reporter.py).
"""

from __future__ import annotations

from prefect import flow

from data.lock import RunDirBusy, RunDirUnusable
from tasks import devices
from tasks.adapt import adapt_backbone

from .asking import Asker, ask_person, pinned_config
from .checks import missing_prior, unused_adapt_device
from .cluster import ray_problem
from .config import ConfigError, RunConfig, RunnerConfig, flow_config
from .console import refused
from .executor import Executor
from .plan import Plan
from .provenance import log_backbone, run_name
from .reporter import Reporter
from .runners import one_device, task_runner
from .session import owned_run_dir, tracked_session
from .stages import Stage


@flow(name="ipet", log_prints=True, validate_parameters=False)
def ipet(config: RunConfig | str, run_dir: str = "runs/ipet", runner: RunnerConfig | None = None) -> dict:
    """``config`` is a validated config, or the path of its YAML file (as deployments pass it), or its
    settings (a deployment run's form in the UI); ``runner``, when given, replaces its ``runner`` section
    (a deployment's choice of engine). They are validated here (``flow_config``), not by Prefect, so that
    a mistake typed into the form, or a run directory that cannot be used, fails the run with one line
    naming it and no traceback; a caller gets the error raised."""
    try:
        config = flow_config(config, runner)
        if ray := ray_problem(config.runner):  # a deployment's too (`ipet run` checked it): not a traceback later
            raise ConfigError(ray)
        if unused := unused_adapt_device(config):  # a deployment's too; `ipet run` printed it already
            print(f"warning: {unused}")
        with owned_run_dir(run_dir) as locked:
            return _stages_on(config, locked)
    except (ConfigError, RunDirBusy, RunDirUnusable) as err:
        return refused(err)


def _stages_on(config: RunConfig, locked: str) -> dict:
    """The stages on the task runner the config asks for, again after a person's answers."""
    slots = devices.configure(config.train.device, config.max_parallel)
    stages = ipet_stages.with_options(task_runner=task_runner(config.runner, slots))
    results = stages(config=pinned_config(config, locked), run_dir=locked)
    if "asked" in results and ask_person(results["asked"], config, locked):  # answered: go on with them
        results = stages(config=pinned_config(config, locked), run_dir=locked)
    return results


@flow(name="ipet-stages", log_prints=True)
def ipet_stages(config: RunConfig, run_dir: str) -> dict:
    """The method, on whichever task runner ``ipet`` chose; ``run_dir`` is absolute or a URL (Ray workers share it)."""
    with tracked_session(config, run_dir, run_name(config, run_dir)) as session:
        data = session.data
        # Adaptation (optional, TAPT): MLM training on the pool's text; every learner starts from it.
        adapted = None
        if config.adapt:
            with one_device(config):
                adapted = adapt_backbone.submit(config.model, data["pool"], config.fields, config.adapt, run_dir,
                                                session.tracked, config.trust_remote_code).result()
            config = config.model_copy(update={"model": adapted["model_dir"]})
        log_backbone(session.client, session.tracked.parent_id, config.model, run_dir)
        plan = Plan(config, data["rows"], missing_prior(config))
        run = Executor(plan, run_dir, data, session.tracked)
        report = Reporter(config, run_dir, session.tracked, session.client)
        ask = Asker(config, run, session, run_dir)

        # Zero-shot: every PVP on the backbone, untrained. Its accuracy on the gold set is the
        # weight PET gives each model ("accuracy on the training set before training"). A learner
        # without a prior (a random head: a classifier's, or cloze's on a checkpoint without an MLM
        # head) has no zero-shot stage, and equal weights.
        prior = run.untrained()
        weights = run.pvp_weights(prior)
        report.record(Stage.of("zero-shot", run.evaluate(prior, None, report.stage_number), train_size=0)
                      if plan.has_prior
                      else Stage.not_applicable("zero-shot", f"learner: {config.learner}: {plan.no_prior}"))

        # PET: one model per PVP and seed on the gold set (zero-shot iPET starts from the prior).
        models = prior
        if plan.gold_size:
            models = run.train_all(0, plan.pet_sets(data["labeled"]))
            report.record(Stage.of("pet", run.evaluate(models, weights, report.stage_number),
                                   train_size=plan.gold_size))
            if asked := ask.after("pet", models, weights):  # a person labels what the models disagree on
                return {"asked": asked}

        # iPET: peers label the pool, confident examples join the gold set, fresh models train.
        for generation in range(1, config.ipet.generations + 1):
            sets = run.pseudo_labeled_sets(generation, models, weights)
            models = run.train_all(generation, {m: s["path"] for m, s in sets.items()})
            report.record(Stage.of(f"ipet-{generation}", run.evaluate(models, weights, report.stage_number),
                                   sets=sets))
            if asked := ask.after(f"ipet-{generation}", models, weights):
                return {"asked": asked}

        # Final: the last ensemble's soft labels on the pool, distilled into one classifier...
        if config.final.mode == "distill":
            soft_pool = run.soft_pool(models, weights)
            final = run.distill(soft_pool["path"])
            report.record(Stage.of("final", run.evaluate({("final", None): final}, None, report.stage_number),
                                   train_size=plan.pool_size, pseudo_label_accuracy=soft_pool["accuracy"],
                                   model=final))
        else:  # ...or the last ensemble itself
            last = report.stages[-1]
            report.record(Stage.of("final", last.evaluation, train_size=last.train_size,
                                   pseudo_label_accuracy=run.pool_accuracy(models, weights),
                                   model=run.ensemble_model(models, weights)))
        results = report.finish(run.task_counts, data.get("versions"), adapted, ask.outcome, run.computed)
        # Champion/challenger: register the final model; it becomes champion only if it wins.
        return report.register(results, data.get("test")) if config.tracking.register_model else results
