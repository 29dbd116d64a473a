"""``ipet adapt``: adapt the backbone to the pool's text, and show whether it helped.

Adaptation is judged the way PET uses a backbone: each PVP's zero-shot accuracy (its cloze or
similarity prior, no training) on the test set, or the labeled set when there is none, before and after.
"""

from __future__ import annotations

from prefect import flow, runtime
from prefect.task_runners import ThreadPoolTaskRunner

from data.lock import run_dir_lock
from data.store import remove_stale_temps
from tasks import devices, tracking
from tasks.adapt import adapt_backbone
from tasks.data import prepare_data

from .config import RunConfig, load_config
from .run import Run, fmt


@flow(name="adapt", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=4))
def adapt(config: RunConfig | str, run_dir: str = "runs/adapt") -> dict:
    """Adapt ``config.model`` on the pool; zero-shot accuracy of every PVP before and after."""
    config = (config if isinstance(config, RunConfig) else load_config(config)).for_adaptation()
    with run_dir_lock(run_dir) as locked:
        return _adapt(config, str(locked))


def _adapt(config: RunConfig, run_dir: str) -> dict:
    remove_stale_temps(run_dir)
    uri = tracking.store_uri(config.tracking.mlflow_uri, run_dir if config.tracking.fallback_local else None)
    tracking.experiment_id(uri, config.tracking.experiment)
    devices.configure(config.adapt.device, config.max_parallel)
    data = prepare_data(config.data, config.fields, config.labels, run_dir)
    tags = {"prefect.flow_run_id": str(runtime.flow_run.id), "run_dir": run_dir}
    with tracking.parent_run(uri, config.tracking.experiment, f"{config.name}-adapt", tags) as (client, parent_id):
        adapted = adapt_backbone(config.model, data["pool"], config.fields, config.adapt.model_dump(), run_dir,
                                 {"uri": uri, "parent_id": parent_id}, config.trust_remote_code)
        dataset = "test" if data.get("test") else "labeled"
        scored = data["rows"][dataset] > 0
        accuracy = {}
        for when, backbone in (("before", config.model), ("after", adapted["model_dir"])):
            run = Run(config.model_copy(update={"model": backbone}), run_dir, data, uri, parent_id)
            accuracy[when] = run.pvp_accuracies(run.untrained(), dataset) if scored else [None] * len(config.pvps)
            for p, value in enumerate(accuracy[when]):
                if value is not None:
                    client.log_metric(parent_id, f"zero_shot_{when}_p{p}", value)
    return {
        "model_dir": adapted["model_dir"], "reused": adapted["reused"], "losses": adapted["losses"],
        "dataset": dataset if scored else None, "mlflow_run_id": parent_id,
        "pvps": [{"pvp": p.pattern, "before": b, "after": a}
                 for p, b, a in zip(config.pvps, accuracy["before"], accuracy["after"])],
    }


def accuracy_table(report: dict) -> str:
    """The PVPs' zero-shot accuracies before and after adaptation, as a markdown table."""
    where = report["dataset"] or "nothing to score"
    lines = [f"| PVP | zero-shot before ({where}) | after |", "|---|---|---|"]
    lines += [f"| `{r['pvp']}` | {fmt(r['before'])} | {fmt(r['after'])} |" for r in report["pvps"]]
    return "\n".join(lines)
