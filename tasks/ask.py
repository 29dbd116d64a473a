"""Asking a person, in Prefect: pick the rows (a task), show them in a form beside a markdown
explanation, suspend the flow run until the form is submitted, and log the answers to MLflow.

The form is a ``RunInput`` with one dropdown per row (the run's labels and ``skip``); Prefect's UI
renders it on the suspended run and validates what is submitted against it. A suspended run holds
no worker: when resumed, the worker starts it again from the top, the content-addressed tasks before
the question are reused, and ``suspend_flow_run`` (its key already fired) returns the answers.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal, Mapping, Sequence

import pyarrow.parquet as pq
from mlflow.entities import Param, RunTag
from mlflow.tracking import MlflowClient
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.flow_runs import suspend_flow_run
from prefect.input import RunInput
from prefect.input.actions import filter_flow_run_input
from pydantic import Field, create_model

from data.answers import SKIP, request_path, write_request
from data.location import exists, local
from data.outputs import content_key, read_json
from data.parquet import read_logits, ref
from prompt_core.asking import PickConfig, guesses, pick_rows

from .tracking import TrackedRun, log_batch

SHOWN_CHARS = 300  # of a row's text in the form and the explanation


@task(task_run_name="pick rows to ask after {stage}", cache_policy=NO_CACHE)
def pick_questions(stage: str, pool: str, pool_logits: Sequence[str], weights: Sequence[float] | None,
                   labels: Sequence[str], fields: Sequence[str], pick: PickConfig, seed: int, context: Mapping,
                   run_dir: str) -> dict:
    """The request: the pool rows the stage's models are least sure of, with the ensemble's guess
    and confidence. Keyed by the pool, the models' logits and ``pick``, so a rerun finds the same
    request (asked at the same time) and its answers. ``context`` (the store the answers go to, the
    data versions the run read) is recorded with a new request."""
    key = content_key("ask", stage, ref(pool), [ref(p) for p in pool_logits], list(weights or []),
                      pick.key(), seed)
    path = request_path(run_dir, stage, key)
    if exists(path):
        return read_json(path)
    table = pq.read_table(local(pool), columns=["id", *fields])
    logits = [read_logits(p) for p in pool_logits]
    values = {f: table[f].to_pylist() for f in fields}
    texts = [" ".join(v or "" for v in row) for row in zip(*values.values())]
    chosen = pick_rows(logits, weights, texts, pick.rows, pick.strategy, pick.diversity, seed, pick.balance)
    guess, confidence = guesses(logits, weights)
    ids = table["id"].to_pylist()
    request = {
        "stage": stage, "key": key, "labels": list(labels), "fields": list(fields), "strategy": pick.strategy,
        "models": len(logits), "asked_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **context,
        "rows": [{"id": ids[i], **{f: values[f][i] for f in fields}, "guess": labels[guess[i]],
                  "confidence": round(float(confidence[i]), 4)} for i in chosen],
    }
    write_request(request, run_dir)
    return request


def field_name(index: int) -> str:
    return f"row_{index + 1:02d}"


def _text(request: Mapping, row: Mapping) -> str:
    text = " · ".join(str(row[f]) for f in request["fields"] if row[f])
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 1] + "…"


def explanation(request: Mapping) -> str:
    """Markdown: what is asked and why, then each row with the ensemble's guess and confidence."""
    models = f"the {request['models']} models of `{request['stage']}`"
    why = {"disagreement": f"that {models} disagree on most (vote entropy)",
           "uncertainty": f"that the weighted ensemble of {models} is least sure of (smallest margin)",
           "random": "drawn at random from the pool (a control)"}[request["strategy"]]
    store = request.get("store")
    lines = [f"### Label {len(request['rows'])} examples after stage `{request['stage']}`", "",
             f"These are the unlabeled examples {why}. "
             "A person's label is worth most where the models are unsure. Choose each row's label, or `skip`.",
             f"Your answers join the gold set, and the next stages train on them"
             + (f"; they are added to dataset `{store['dataset']}` as a new labeled version." if store else "."),
             "", "| row | text | ensemble's guess | confidence |", "|---|---|---|---|"]
    lines += [f"| {field_name(i)} | {_text(request, row).replace('|', '/')} | {row['guess']} | "
              f"{row['confidence']:.0%} |" for i, row in enumerate(request["rows"])]
    return "\n".join(lines)


def answer_form(request: Mapping) -> type[RunInput]:
    """One dropdown per row (the labels and ``skip``, default ``skip``), titled with its text and
    described by the ensemble's guess; the explanation beside the form."""
    choice = Literal[tuple([SKIP, *request["labels"]])]
    fields = {field_name(i): (choice, Field(SKIP, title=_text(request, row),
                                            description=f"guess: {row['guess']} ({row['confidence']:.0%})"))
              for i, row in enumerate(request["rows"])}
    form = create_model("Answers", __base__=RunInput, **fields)
    return form.with_initial_data(description=explanation(request))


def announce(request: Mapping) -> None:
    """A markdown artifact on the flow run: what is asked, and why."""
    create_markdown_artifact(explanation(request), key=f"ipet-ask-{request['stage']}",
                             description=f"rows asked after {request['stage']}")


def wait_for_answers(request: Mapping, timeout: int | None) -> tuple[dict[str, str], str | None, str | None]:
    """Suspend this flow run until the form is submitted (the artifact says why); returns the
    labels by row id, and who sent them and when, where Prefect records it."""
    announce(request)
    form = suspend_flow_run(wait_for_input=answer_form(request), timeout=timeout, key=f"ask-{request['key']}")
    answers = {row["id"]: getattr(form, field_name(i)) for i, row in enumerate(request["rows"])}
    sent = filter_flow_run_input(key_prefix=form.metadata.key, limit=1)
    when = sent[0].created.isoformat() if sent and sent[0].created else None
    return answers, form.metadata.sender or (sent[0].sender if sent else None), when


def log_answers(tracked: TrackedRun, record: Mapping) -> None:
    """The answers on the run that trains with them: the record as an artifact, counts as params,
    who and when as tags."""
    client = MlflowClient(tracked.uri)
    client.log_dict(tracked.parent_id, dict(record), f"ask/{record['stage']}-answers.json")
    store = record["store"] or {}
    params = {"ask.after": record["stage"], "ask.asked": record["asked"], "ask.answered": len(record["rows"]),
              "ask.skipped": record["skipped"], "ask.store_version": store.get("version")}
    tags = {"ask.answered_by": record["answered_by"], "ask.answered_at": record["answered_at"]}
    log_batch(client, tracked.parent_id, params=[Param(k, str(v)) for k, v in params.items()],
              tags=[RunTag(k, str(v)) for k, v in tags.items() if v])
