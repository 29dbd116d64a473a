"""What a flow run costs beyond its models: the toy task of the tests, run and rerun.

The toy iPET run (tests/tiny.py: a tiny BERT, 2 PVPs, 2 generations, a distillation) trains in
seconds, so its wall time is the pipeline's own overhead: Prefect, MLflow, parquet, and the
collections of Python's cycles that the tasks run after they return (tasks/memory.py). The rerun
reuses every task, so it is overhead alone. Garbage-collection time is summed over every thread from
``gc.callbacks``, per generation.

One process, a real Prefect API (``prefect_test_harness``) and MLflow on SQLite, torch on one thread
as in the tests:

    python bench/flow_overhead.py [--reruns 2]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


class CollectionClock:
    """Seconds spent in garbage collections, per generation, from ``gc.callbacks``."""

    def __init__(self) -> None:
        self.seconds: Counter[int] = Counter()
        self.count: Counter[int] = Counter()
        self._started = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds[info["generation"]] += time.perf_counter() - self._started
            self.count[info["generation"]] += 1

    def take(self) -> str:
        line = ", ".join(f"gen {g}: {self.count[g]} in {self.seconds[g]:.2f} s" for g in sorted(self.count))
        self.seconds.clear()
        self.count.clear()
        return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reruns", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp())
    import torch
    from prefect.settings import (PREFECT_FLOWS_HEARTBEAT_FREQUENCY, PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW,
                                  temporary_settings)
    from prefect.testing.utilities import prefect_test_harness

    from flows.config import RunConfig
    from flows.ipet import ipet
    from tiny import toy_run_config

    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp())
    (root / "toy").mkdir()
    clock = CollectionClock()
    with prefect_test_harness(server_startup_timeout=120), \
            temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None,
                                        PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW: "ignore"}):
        config = RunConfig.model_validate(toy_run_config(root / "toy"))
        print(f"objects tracked after imports: {len(gc.get_objects()):,}")
        gc.callbacks.append(clock)
        for attempt in range(1 + args.reruns):
            started = time.perf_counter()
            results = ipet(config=config, run_dir=str(root / "run"))
            print(f"{'first run' if attempt == 0 else 'rerun'}: {time.perf_counter() - started:.1f} s, "
                  f"tasks {results['tasks']}; collections: {clock.take()}")


if __name__ == "__main__":
    main()
