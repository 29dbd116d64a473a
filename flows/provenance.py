"""What a run's MLflow parent records about how it was made, so a run can be understood (and
repeated) from MLflow alone: the resolved config as flattened params and as ``config.yaml``, the
data manifest (source sha256s, store versions, rows per set) as ``data-manifest.json`` and params
(a store source's ``data.<slot>.version`` is the version read, also where the config left it to the
current one, as a deployment's YAML path does; ``data.sets.<set>`` the content hash of each set read,
so changed data shows in the compare view), and the project's version and git commit as tags. A
run's name and description say what it is in MLflow's list view. The stage metrics are logged by
``Reporter`` as each stage ends."""

from __future__ import annotations

import json
import re
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from mlflow.entities import Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

from data.prepare import SET_NAMES
from tasks.tracking import log_batch, param_value

from .config import RunConfig

PACKAGE = "ipet-pipeline"
SETTING = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def log_provenance(client: MlflowClient, run_id: str, config: RunConfig, data: dict) -> None:
    settings = config.model_dump(mode="json", by_alias=True)
    params = {**flatten(settings), **{f"data.rows.{k}": v for k, v in data.get("rows", {}).items()},
              **{f"data.{slot}.version": v["version"] for slot, v in data.get("versions", {}).items()},
              **{f"data.sets.{k}": PurePosixPath(data[k]).stem.rsplit("-", 1)[-1] for k in SET_NAMES if data.get(k)}}
    tags = {"ipet.version": _version(), MLFLOW_RUN_NOTE: description(config, data)}
    commit = _git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    log_batch(client, run_id, params=[Param(k, param_value(v)) for k, v in params.items()],
              tags=[RunTag(k, v) for k, v in tags.items()])
    client.log_text(run_id, yaml.safe_dump(settings, sort_keys=False), "config.yaml")
    client.log_text(run_id, json.dumps(data, indent=2), "data-manifest.json")


def run_name(config: RunConfig, run_dir: str) -> str:
    """The parent run's name in the list view: the config's name, its learner (and adapter), and the
    run directory where its name adds to the config's (``toy · cloze+lora · lr-1e-4``)."""
    learner = config.learner + (f"+{config.train.peft.method}" if config.train.peft else "")
    folder = PurePosixPath(str(run_dir).rstrip("/")).name
    return " · ".join([config.name, learner] + ([folder] if folder and folder != config.name else []))


def description(config: RunConfig, data: dict) -> str:
    """The run's MLflow description (markdown), until ``Reporter.finish`` adds the stage table."""
    rows = ", ".join(f"{n} {name}" for name, n in data.get("rows", {}).items())
    versions = ", ".join(f"{slot} v{v['version']}" for slot, v in data.get("versions", {}).items())
    return (f"iPET run `{config.name}`: {config.learner} learner on `{config.model}`; PVPs: {len(config.pvps)}, "
            f"seeds: {len(config.seeds)}, iPET generations: {config.ipet.generations}, final model: "
            f"{config.final.mode}. Rows: {rows}" + (f" ({versions})" if versions else "") + ".")


def log_backbone(client: MlflowClient, run_id: str, backbone: str, run_dir: str) -> None:
    """The backbone every learner starts from, as param ``backbone``: ``model``, or the adapted one
    (``backbones/adapted-<key>``, relative to the run directory so that runs of one adaptation match)."""
    client.log_param(run_id, "backbone", param_value(backbone.removeprefix(str(run_dir).rstrip("/") + "/")))


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as ``a.b.c`` keys; lists, and mappings keyed by data rather than by setting
    names (a verbalizer's labels, which may read ``../neg``), stay one value, as JSON."""
    if not isinstance(tree, dict) or not all(SETTING.fullmatch(str(k)) for k in tree):
        return {prefix: json.dumps(tree) if isinstance(tree, (list, dict)) else tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}{key}" if not prefix else f"{prefix}.{key}"))
    return flat


def _version() -> str:
    try:
        return version(PACKAGE)
    except PackageNotFoundError:
        return "unknown"


def _git_commit() -> str | None:
    """The checkout's commit, when the code runs from one (not from an installed wheel)."""
    try:
        done = subprocess.run(["git", "-C", str(Path(__file__).resolve().parents[1]), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None
