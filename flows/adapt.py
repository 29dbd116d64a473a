"""``ipet adapt``: adapt the backbone to the pool's text, and show whether it helped.

Adaptation is judged the way PET uses a backbone: each PVP's zero-shot accuracy (its cloze or
similarity prior, no training) on the test set, or the labeled set when there is none, before and after.
"""

from __future__ import annotations

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from tasks import devices
from tasks.adapt import adapt_backbone

from .checks import missing_prior, verbalizer_problems
from .config import RunConfig, load_config
from .executor import Executor
from .plan import Plan
from .session import owned_run_dir, tracked_session
from .stages import fmt


def for_adapt(config: RunConfig) -> RunConfig:
    """``config.for_adaptation()``; a classifier's PVPs read as cloze only where its label names are words
    of the model (``Sci/Tech`` is none): else no zero-shot to compare, and the backbone adapted all the same."""
    cloze = config.for_adaptation()
    if config.learner == "classifier" and verbalizer_problems(cloze):
        return config.for_adaptation(as_cloze=False)
    return cloze


@flow(name="adapt", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=4))
def adapt(config: RunConfig | str, run_dir: str = "runs/adapt") -> dict:
    """Adapt ``config.model`` on the pool; zero-shot accuracy of every PVP before and after."""
    config = for_adapt(config if isinstance(config, RunConfig) else load_config(config))
    with owned_run_dir(run_dir) as run_dir:
        devices.configure(config.adapt.device, config.max_parallel)
        with tracked_session(config, run_dir, f"{config.name}-adapt") as session:
            data = session.data
            adapted = adapt_backbone(config.model, data["pool"], config.fields, config.adapt, run_dir, session.tracked,
                                     config.trust_remote_code)
            dataset = "test" if data.get("test") else "labeled"
            scored = data["rows"][dataset] > 0
            accuracy = {}
            for when, backbone in (("before", config.model), ("after", adapted["model_dir"])):
                on = config.model_copy(update={"model": backbone})
                plan = Plan(on, data["rows"], missing_prior(on))  # before: a headless checkpoint has none
                run = Executor(plan, run_dir, data, session.tracked)
                accuracy[when] = (run.pvp_accuracies(run.untrained(), dataset) if scored and plan.has_prior
                                  else [None] * len(config.pvps))
                for p, value in enumerate(accuracy[when]):
                    if value is not None:
                        session.client.log_metric(session.tracked.parent_id, f"zero_shot_{when}_p{p}", value)
    return {
        "model_dir": adapted["model_dir"], "reused": adapted["reused"], "losses": adapted["losses"],
        "dataset": dataset if scored else None, "mlflow_run_id": session.tracked.parent_id,
        "pvps": [{"pvp": p.pattern, "before": b, "after": a}
                 for p, b, a in zip(config.pvps, accuracy["before"], accuracy["after"])],
    }


def accuracy_table(report: dict) -> str:
    """The PVPs' zero-shot accuracies before and after adaptation, as a markdown table."""
    where = report["dataset"] or "nothing to score"
    lines = [f"| PVP | zero-shot before ({where}) | after |", "|---|---|---|"]
    lines += [f"| `{r['pvp']}` | {fmt(r['before'])} | {fmt(r['after'])} |" for r in report["pvps"]]
    return "\n".join(lines)
