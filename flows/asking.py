"""Asking a person mid-run (``ask:``): after one stage, the rows its models are least sure of.

In the stages (``Asker.after``) the question is picked, and answered already or not. Answered: the
answers join the gold set of the stages after it, and are logged to MLflow. Past ``ask.timeout``
unanswered: the run goes on without them and says so. Otherwise the stages stop and return the
request. Then ``ipet`` (the deployment's flow run) suspends until the form in the Prefect UI is
submitted, and runs the stages again; a run outside a deployment cannot be suspended, so it ends
there with the sheet ``RUN_DIR/ask/<stage>.csv`` for ``ipet answer`` and a rerun.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from prefect import get_run_logger, runtime

from data.answers import (answers_path, apply_answers, gold_with_answers, pinned, read_record, sheet_path,
                          write_sheet)
from tasks.ask import announce, log_answers, pick_questions, wait_for_answers

from .config import RunConfig
from .executor import Executor, Member
from .session import Session


class Asker:
    """The ``ask:`` step of one run's stages.

    Args:
        config: the run's config (its ``ask`` section, labels, fields, data root).
        run: the run's executor; its gold set grows by the answers.
        session: the run's prepared data (with the store versions it read) and MLflow run.
        run_dir: the run directory, where requests and answers are kept.
    """

    def __init__(self, config: RunConfig, run: Executor, session: Session, run_dir: str):
        self.config, self.run, self.session, self.run_dir = config, run, session, run_dir
        self.outcome: dict | None = None  # what the question gave the stages after it, for results.json

    def after(self, stage: str, models: dict[Member, str], weights: list[float] | None) -> dict | None:
        """After ``stage``: the request when the run must stop to ask, else None (go on)."""
        ask = self.config.ask
        if ask is None or stage != ask.after:
            return None
        data, plan = self.run.data, self.run.plan
        pool_logits = self.run.label_all(models, "pool")  # the same labeling the next generation reuses
        request = pick_questions(stage, data["pool"], [pool_logits[m] for m in models],
                                 plan.member_weights(models, weights), self.config.labels, self.config.fields, ask,
                                 self.config.data.seed, self._context(), self.run_dir)
        record = read_record(self.run_dir, request)
        if record is not None:
            gold = gold_with_answers(data["labeled"], record, self.run_dir)
            self.run.use_gold(gold["path"])
            log_answers(self.session.tracked, record)
            print(f"ask: {len(record['rows'])} answered row(s) after {stage} join the gold set ({gold['rows']} rows)")
            self.outcome = {"after": stage, "asked": record["asked"], "answered": len(record["rows"]),
                            "skipped": record["skipped"], "gold_rows": gold["rows"],
                            "answers": str(answers_path(self.run_dir, request, "csv"))}
            return None
        due = deadline(request, ask.timeout)
        if due is not None and due <= _now():
            get_run_logger().warning("ask: no answers to the %d rows asked after %s by %s (ask.timeout: %s s); "
                                     "going on without them", len(request["rows"]), stage, due.isoformat(), ask.timeout)
            self.session.client.set_tag(self.session.tracked.parent_id, "ask.outcome", "timed out, no answers")
            self.outcome = {"after": stage, "asked": len(request["rows"]), "answered": 0, "timed_out": True}
            return None
        if kept := write_sheet(request, self.run_dir):
            get_run_logger().warning("ask: %s", kept)
        # the run ends FINISHED without a final stage: the list view says why
        self.session.client.set_tag(self.session.tracked.parent_id, "ask.outcome",
                                    f"stopped after {stage} to ask a person about {len(request['rows'])} rows")
        return request

    def _context(self) -> dict:
        """What a new request records: the store the answers go to and the data versions the run read."""
        store = self.config.ask.store
        where = None
        if store is not None:
            path = Path(store.store) if Path(store.store).is_absolute() else Path(self.config.data.root) / store.store
            where = {"store": str(path.resolve()), "dataset": store.dataset}
        return {"store": where, "versions": self.session.data.get("versions", {})}


def deadline(request: dict, timeout: int | None) -> datetime | None:
    return None if timeout is None else datetime.fromisoformat(request["asked_at"]) + timedelta(seconds=timeout)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def pinned_config(config: RunConfig, run_dir: str) -> RunConfig:
    """The config with its stores read at the versions the run asked with (``data.answers.pinned``)."""
    return config.model_copy(update={"data": pinned(config.data, run_dir)}) if config.ask else config


def ask_person(request: dict, config: RunConfig, run_dir: str) -> bool:
    """In a deployment's run: suspend until the form is submitted (at most until the deadline),
    record the answers and return True. Elsewhere Prefect cannot resume the run: the artifact
    explains the question, and False says the run ends here (``stopped``)."""
    if runtime.deployment.id is None:
        announce(request)
        return False
    due = deadline(request, config.ask.timeout)
    timeout = None if due is None else max(1, int((due - _now()).total_seconds()))
    answers, who, when = wait_for_answers(request, timeout)
    apply_answers(request, answers, run_dir, who, when)
    return True


def stopped(request: dict, run_dir: str) -> str:
    """What a run that stopped to ask tells its user."""
    sheet = sheet_path(run_dir, request["stage"])
    return (f"stopped after {request['stage']} to ask a person: {len(request['rows'])} rows in {sheet}. Fill in "
            f"its label column (a label, or empty to skip), then run `ipet answer {run_dir} {sheet}` and run again")
