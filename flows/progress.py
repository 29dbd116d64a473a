"""How far a run is: models trained out of the run's total, with an ETA from the models trained so
far. One line per finished model in the flow's log (the terminal, a deployment's flow-run log), and
a Prefect progress artifact, so the UI shows how far a run is."""

from __future__ import annotations

import time
from typing import Hashable, TypeVar

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import PrefectFuture, as_completed

K = TypeVar("K", bound=Hashable)


class Progress:
    """Counts the run's training tasks as they finish.

    Args:
        total: training tasks the run has (every member of every generation, and a distilled model).
        key: the progress artifact's key (lowercase letters, digits, dashes).
    """

    def __init__(self, total: int, key: str):
        self.total, self.done, self.trained, self.busy, self.key = total, 0, 0, 0.0, key
        self.artifact = None  # created when the first stage trains: a flow that trains nothing shows none

    def wait(self, stage: str, futures: dict[K, PrefectFuture]) -> dict[K, dict]:
        """The training tasks' results, by key in the order of ``futures`` (not of finishing), each
        reported as it finishes."""
        if self.artifact is None:
            self.artifact = create_progress_artifact(0.0, key=self.key, description=f"{self.total} models to train")
        keys = {id(f): k for k, f in futures.items()}
        results, started = {}, time.monotonic()
        for future in as_completed(list(futures.values())):
            result = results[keys[id(future)]] = future.result()
            self.done += 1
            self.trained += not result.get("reused")
            elapsed = time.monotonic() - started
            print(f"[{stage}] {len(results)}/{len(futures)} models · run {self.done}/{self.total} · "
                  f"{_duration(elapsed)}{self._eta(elapsed)}")
        self.busy += time.monotonic() - started
        update_progress_artifact(self.artifact, 100.0 * self.done / self.total,
                                 description=f"{self.done} of {self.total} models trained or reused")
        return {k: results[k] for k in futures}  # in submission order: ensembles and keys depend on it

    def _eta(self, elapsed: float) -> str:
        """Time left at the pace of the models trained so far (reused ones cost nothing)."""
        left = self.total - self.done
        if not self.trained or not left:
            return ""
        return f" · ETA {_duration(left * (self.busy + elapsed) / self.trained)}"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
