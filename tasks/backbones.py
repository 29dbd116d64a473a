"""Where a run's models find a backbone kept inside the run directory (an adapted one,
``backbones/adapted-…``): recorded relative to the model directory, so the run directory can be
copied or moved whole (to another disk, machine or person) and its models still read their own
backbone and keep their keys. Light (no Prefect), as ``ipet predict`` reads models with it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from data.location import local, location

if TYPE_CHECKING:  # not at run time: it would import torch into everything that imports this (the flow)
    from prompt_core.learners import LearnerSpec

UP = "../../"  # from a model directory (<run dir>/models/<name>) to its run directory


def recorded(spec: LearnerSpec, run_dir: str | Path) -> LearnerSpec:
    """``spec`` as a model of ``run_dir`` records it (``learner.json``, its key): a backbone inside the run
    directory relative to the model directory (read back by ``learners.beside``, or ``fetcher``), so a
    copy keeps the keys (a rerun there reuses every model) and reads its own backbone, not the
    original's; any other backbone (a hub name, a path elsewhere) as is."""
    root = str(location(run_dir)).rstrip("/") + "/"
    return replace(spec, backbone=UP + spec.backbone.removeprefix(root)) if spec.backbone.startswith(root) else spec


def fetcher(run_dir: str | Path) -> Callable[[str], str]:
    """``load_learners``' fetch for the models of ``run_dir``: a backbone they record inside it (``recorded``)
    as its local copy (downloaded into the mirror for a run dir at a URL); one at a URL (the plan's spec
    before training records it, or a run from before ``recorded``) as its local copy; any other as is."""
    def fetch(backbone: str) -> str:
        return str(local(location(run_dir) / backbone.removeprefix(UP) if backbone.startswith(UP) else backbone))
    return fetch
