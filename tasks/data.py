"""The data step as a Prefect task."""

from __future__ import annotations

from typing import Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE

from data.prepare import DataConfig, prepare


@task(task_run_name="prepare data", cache_policy=NO_CACHE)
def prepare_data(config: DataConfig, fields: Sequence[str], labels: Sequence[str], run_dir: str) -> dict:
    """Labeled set, pool and test set as parquet under the run directory (reused when unchanged)."""
    return prepare(config, fields, labels, run_dir)
