"""Backbone adaptation (TAPT) as a Prefect task: the pool's text in, a backbone directory out.

The output is keyed by the backbone, the pool's bytes, the fields read and the settings, so a
second run (or ``ipet run`` after ``ipet adapt`` with the same run dir) finds it and trains nothing.
An adaptation can take hours, so it is also checkpointed every ``CHECKPOINT_SECONDS`` beside its
output (``backbones/.adapted-<key>.checkpoint.pt``, a file: never taken for a backbone directory),
and a rerun after a kill goes on from the last checkpoint, which is deleted once the backbone is saved.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from data.location import exists, local, location, remove
from data.outputs import atomic_path, content_key, file_digest, read_json, write_json
from data.parquet import read_rows
from prompt_core.settings import AdaptConfig

from . import devices, tracking
from .cancel import cancelled_when_stopped
from .memory import returns_memory
from .models import settings
from .tracking import TrackedRun

METRICS = "adapt.json"
# a kill loses at most this much adaptation. Saving MiniLM's state (weights and AdamW's moments, 273 MB)
# took 0.4-0.8 s on our CI disk, so a BERT-large's (4 GB) some 10 s: a few percent of the time at most
CHECKPOINT_SECONDS = 300.0
CHECKPOINT_SUFFIX = ".checkpoint.pt"


@task(task_run_name="adapt {backbone}", cache_policy=NO_CACHE)
@cancelled_when_stopped
@returns_memory
def adapt_backbone(backbone: str, pool: str, fields: Sequence[str], cfg: AdaptConfig, run_dir: str,
                   tracked: TrackedRun | None = None, trust_remote_code: bool = False) -> dict[str, Any]:
    """Masked-LM training of ``backbone`` on the pool parquet's ``fields``, joined with spaces; logged
    as an ``adapt`` child of ``tracked``'s parent run when given."""
    logger = get_run_logger()
    keyed = settings(cfg, "device")  # as models' keys: precision at its default leaves older keys as they were
    key = content_key("adapted", backbone, file_digest(local(pool)), list(fields), keyed)
    out = location(run_dir) / "backbones" / f"adapted-{key}"
    reused = exists(out)
    if reused:
        logger.info("reusing %s", out.name)
    else:
        _adapt(backbone, pool, fields, cfg, out, trust_remote_code)
    remove(checkpoint_of(out))  # done with it (also one a kill left between the rename and this line)
    metrics = read_json(out / METRICS)
    computed = [metrics["computed"]] if "computed" in metrics else []  # unknown for a backbone adapted before
    run_id = None
    if tracked is not None:
        run_id = tracking.log_child(
            tracked.uri, tracked.parent_id, "adapt",
            params={"kind": "adapt", "backbone": backbone, "fields": list(fields), **keyed},
            curve=metrics["losses"], metrics={"texts": metrics["texts"], "adapt_seconds": metrics["seconds"]},
            tags={"reused": str(reused).lower(), "model_dir": str(out), **tracking.used_tags(computed)},
        )
    return {"model_dir": str(out), "reused": reused, "losses": metrics["losses"], "mlflow_run_id": run_id,
            "computed": computed}


def checkpoint_of(out: Path) -> Path:
    """Where the adaptation into ``out`` keeps its checkpoint: a hidden file beside it."""
    return out.parent / f".{out.name}{CHECKPOINT_SUFFIX}"


def _adapt(backbone: str, pool: str, fields: Sequence[str], cfg: AdaptConfig, out: Path,
           trust_remote_code: bool) -> None:
    """Adapt ``backbone`` into ``out`` (atomically), going on from the checkpoint a killed run left."""
    import torch  # here, not at the top: importing the flow (as Prefect's cancellation does) stays fast
    from prompt_core import Checkpoints, adapt, computed_on

    logger = get_run_logger()
    texts = [" ".join(str(r[f]) for f in fields if r[f] is not None) for r in read_rows(pool, fields)]
    checkpoint, started = checkpoint_of(out), time.perf_counter()

    def seconds() -> float:  # the adaptation's time, the killed runs' included
        return earlier + time.perf_counter() - started

    def save(state: dict[str, Any]) -> None:
        with atomic_path(checkpoint) as tmp:
            torch.save({**state, "seconds": seconds()}, tmp)

    # held by checkpoints alone, which lets go of it once restored: a big model's state is gigabytes
    checkpoints = Checkpoints(save, CHECKPOINT_SECONDS, resume=_saved(checkpoint))
    earlier = checkpoints.resume.pop("seconds") if checkpoints.resume else 0.0
    if checkpoints.step:
        logger.info("resuming the adaptation at step %d/%d from %s", checkpoints.step, cfg.steps, checkpoint.name)

    def every_tenth(step: int, loss: float) -> None:  # minutes on a CPU: say how far it got
        if step % max(1, cfg.steps // 10) == 0:
            logger.info("adapt step %d/%d: MLM loss %.4f", step, cfg.steps, loss)

    with devices.device() as dev, atomic_path(out, directory=True) as tmp:
        result = adapt(str(local(backbone)), texts, cfg.model_copy(update={"device": dev}), tmp,
                       trust_remote_code=trust_remote_code, on_log=every_tenth, progress=False,
                       checkpoints=checkpoints)
        write_json({"losses": result.losses, "steps": result.steps, "texts": len(texts), "seconds": seconds(),
                    "computed": computed_on(dev, cfg.precision)}, tmp / METRICS)
    logger.info("adapted %s on %d texts: MLM loss %.4f -> %.4f", backbone, len(texts), result.losses[0],
                result.final_loss)


def _saved(checkpoint: Path) -> dict[str, Any] | None:
    """The state a killed adaptation saved last, if any."""
    import torch

    return torch.load(local(checkpoint, fresh=True), map_location="cpu", weights_only=True) \
        if exists(checkpoint) else None
