"""Where the flow's training, labeling and adaptation tasks run, chosen from the config's ``runner`` section.

``local``: a thread pool in the flow's process; ``tasks/devices.py`` pins each task to one local
GPU (one task at a time on a CPU). ``ray``: prefect-ray's ``RayTaskRunner`` on the Ray cluster at
``runner.address`` (or a local one it starts); every training, labeling and adaptation task asks Ray for
``gpus_per_task`` GPUs and ``cpus_per_task`` CPUs, and Ray does the bin-packing: it sets the task
process's ``CUDA_VISIBLE_DEVICES``, which ``devices.device()`` honours. Tasks pass paths only, so
storage every Ray node reaches (a shared file system, or a bucket URL: ``data/location.py``) for the
run directory and the data is all the cluster needs.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Iterator

from prefect.context import FlowRunContext
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from .config import RunConfig, RunnerConfig

MIN_THREADS = 4  # CPU-side tasks (selection, combining) run beside those waiting for a device


def task_runner(runner: RunnerConfig, device_slots: int) -> TaskRunner:
    if runner.kind == "local":
        return ThreadPoolTaskRunner(max_workers=max(MIN_THREADS, device_slots))
    # a Ray started here lives as long as the flow run: no dashboard for it
    return _ray_runner()(address=runner.address, init_kwargs={} if runner.address else {"include_dashboard": False})


def _ray_runner() -> type[TaskRunner]:
    """prefect-ray's runner, keeping the process's SIGTERM handler (``ipet``'s: the run stops in one line, its
    MLflow runs ``KILLED``, exit 143) across ``ray.init``, which put ``sys.exit(15)`` in its place: the flow
    crashed as on a system exit, the parent MLflow run was marked ``FAILED``, Ray's C++ handler printed
    stack addresses, and the process aborted (exit 134)."""
    from prefect_ray import RayTaskRunner

    class KeepingSignals(RayTaskRunner):
        def __enter__(self):
            kept = signal.getsignal(signal.SIGTERM)
            try:
                return super().__enter__()
            finally:
                if threading.current_thread() is threading.main_thread():
                    signal.signal(signal.SIGTERM, kept)

    return KeepingSignals


@contextlib.contextmanager
def one_device(config: RunConfig) -> Iterator[None]:
    """Around ``task.submit``: what each device-bound task asks Ray for (``ray_request``); nothing with
    the local runner."""
    if not _on_ray():
        yield
        return
    import ray
    from prefect_ray.context import remote_options

    with remote_options(**ray_request(config, ray.cluster_resources().get("GPU", 0))):
        yield


def ray_request(config: RunConfig, cluster_gpus: float) -> dict[str, float]:
    """The resources a training, labeling or adaptation task of ``ipet run`` asks Ray for.

    ``train.device`` decides for every one of them, the adaptation's too, as it does on the local runner
    (whose device pool the flow builds from it; ``adapt.device`` is ``ipet adapt``'s). A cluster without
    GPUs, or ``train.device: cpu``, gets CPU-only requests, so the same config runs on either; which
    GPU is Ray's choice, not the device's.
    """
    gpus = config.runner.gpus_per_task if config.train.device != "cpu" and cluster_gpus > 0 else 0
    return {"num_gpus": gpus, "num_cpus": config.runner.cpus_per_task}


def _on_ray() -> bool:
    """Whether the running flow submits to Ray (flows other than iPET's keep their thread pools)."""
    context = FlowRunContext.get()
    prefect_ray = sys.modules.get("prefect_ray")
    return bool(context and prefect_ray and isinstance(context.task_runner, prefect_ray.RayTaskRunner))
