"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

from tiny import FAMILIES, save_tiny

# --------------------------------------------------------------------------------------------
# Tiny models (prompt_core unit tests): randomly initialised masked LMs, saved once per session.
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def torch_on_one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread; more only contend for the cores (badly so under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One saved tiny masked LM (with its tokenizer) per family: ``{"bert": path, ...}``."""
    root = tmp_path_factory.mktemp("tiny_models")
    return {kind: save_tiny(kind, root / kind) for kind in FAMILIES}


@pytest.fixture(scope="session")
def tiny_tokenizers(tiny_models: dict[str, Path]) -> dict[str, Any]:
    """The tokenizer of each tiny model, loaded from disk the way prompt_core loads it."""
    from prompt_core.backbone import load_tokenizer

    return {kind: load_tokenizer(str(path)) for kind, path in tiny_models.items()}


# ------------------------------------------------------------------------ end of tiny models


# --------------------------------------------------------------------------------------------
# Prefect (flow tests): one real test server per session, as Prefect's docs recommend.
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory):
    """A real, temporary Prefect API (SQLite in a temp dir) for the flows under test. A task called
    outside any flow logs to the console only, without a warning that its logs have no flow run for the API."""
    import os

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_HOME", str(tmp_path_factory.mktemp("prefect-home")))
    from prefect.settings import (PREFECT_FLOWS_HEARTBEAT_FREQUENCY, PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW,
                                  temporary_settings)
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120), \
            temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None,
                                        PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW: "ignore"}):
        yield
