"""What each stage of a run scored, as ``results.json`` records it, and the least its final model
must score. Plain data and arithmetic: no Prefect, no MLflow, nothing read from disk."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

STAGE_SLACK = 0.01  # how far below an earlier stage of its run a final model may score and still be champion


@dataclass
class Evaluation:
    """One stage's scores: the ensemble's test accuracy, one row per model (``results.json``), and
    ``tracked``: each trained model's MLflow run id with its test accuracy and the tags of the labeling
    that gave it (``labeling.precision.used``, ``labeling.device.used``), logged there."""

    test_accuracy: float | None
    models: list[dict] = field(default_factory=list)
    tracked: dict[str, tuple[float, dict[str, str]]] = field(default_factory=dict)


@dataclass
class Stage:
    """One row of the stage table: zero-shot, pet, ipet-N or final."""

    stage: str
    test_accuracy: float | None
    train_size: int | None
    pseudo_label_accuracy: float | None = None
    models: list[dict] = field(default_factory=list)
    model: Any = None
    note: str | None = None  # why a stage has no scores
    tracked: dict[str, tuple[float, dict[str, str]]] = field(default_factory=dict, repr=False)

    @classmethod
    def not_applicable(cls, stage: str, reason: str) -> "Stage":
        return cls(stage, None, None, note=f"not applicable: {reason}")

    @classmethod
    def of(cls, stage: str, evaluation: Evaluation, train_size: int | None = None, sets: dict | None = None,
           pseudo_label_accuracy: float | None = None, model: Any = None) -> "Stage":
        """A stage from its evaluation; ``sets`` (a generation's training sets, as ``build_train_set``
        returns them) give its train size, its pseudo-label accuracy and each model's own."""
        if sets:
            train_size = max(s["size"] for s in sets.values())
            known = [s["pseudo_label_accuracy"] for s in sets.values() if s["pseudo_label_accuracy"] is not None]
            pseudo_label_accuracy = statistics.fmean(known) if known else None
            by_name = {s["name"]: s for s in sets.values()}
            for m in evaluation.models:
                m.update(train_size=by_name.get(m["name"], {}).get("size"),
                         pseudo_label_accuracy=by_name.get(m["name"], {}).get("pseudo_label_accuracy"))
        return cls(stage, evaluation.test_accuracy, train_size, pseudo_label_accuracy, evaluation.models, model,
                   tracked=evaluation.tracked)

    @property
    def evaluation(self) -> Evaluation:
        """Its scores, to report again as another stage (an ensemble final model is the last generation)."""
        return Evaluation(self.test_accuracy, self.models)

    def record(self) -> dict:
        """The stage as ``results.json`` lists it."""
        return {k: v for k, v in asdict(self).items() if k != "tracked"}


def floor(stages: Sequence[Stage], test_labels: Sequence[str], margin: float = 0.02) -> tuple[str, float]:
    """What the final model (the last stage) must score on the test set, and why: ``margin`` above
    always guessing the commonest test label (a model that says one class for every row scores
    exactly that, and has learned nothing), and each earlier stage less ``STAGE_SLACK`` (a distilled
    model may land a little below the ensemble it learned from; a fall is a failure)."""
    labels = list(test_labels)
    majority = max(map(labels.count, set(labels))) / len(labels)
    candidates = [(f"always guessing the commonest class ({majority:.4f}) plus the margin {margin:g}",
                   majority + margin)]
    candidates += [(f"its own {s.stage} stage ({s.test_accuracy:.4f}) less {STAGE_SLACK:g}",
                    s.test_accuracy - STAGE_SLACK) for s in stages[:-1] if s.test_accuracy is not None]
    return max(candidates, key=lambda c: c[1])


def fall(stages: Sequence[Stage]) -> str | None:
    """Why the final stage scored below the best earlier one (flagged in summary.md and MLflow), or None."""
    final, earlier = stages[-1], [s for s in stages[:-1] if s.test_accuracy is not None]
    if final.test_accuracy is None or not earlier:
        return None
    best = max(earlier, key=lambda s: s.test_accuracy)
    if final.test_accuracy >= best.test_accuracy:
        return None
    return (f"the final stage ({final.test_accuracy:.4f}) is below the best earlier stage, {best.stage} "
            f"({best.test_accuracy:.4f})")


def stage_table(stages: list[dict]) -> str:
    """``results.json``'s stages as a markdown table."""
    lines = ["| stage | test accuracy | train size | pseudo-label accuracy |", "|---|---|---|---|"]
    lines += [f"| {s['stage']} | {s['note']} | | |" if s.get("note") else
              f"| {s['stage']} | {fmt(s['test_accuracy'])} | {fmt(s['train_size'])} | "
              f"{fmt(s['pseudo_label_accuracy'])} |" for s in stages]
    return "\n".join(lines)


def ask_line(asked: dict) -> str:
    """What a person's answers (``results.json``'s ``ask``) gave the stages after the question, in words."""
    if asked.get("timed_out"):
        return f"Asked a person after {asked['after']}: no answers by ask.timeout; the run went on without them"
    return (f"Asked a person after {asked['after']}: {asked['answered']} of {asked['asked']} rows answered, "
            f"in the gold set ({asked['gold_rows']} rows) of the stages after it")


def fmt(value: Any) -> str:
    """A score for a table: four decimals, ``–`` when there is none."""
    if value is None:
        return "–"
    return f"{value:.4f}" if isinstance(value, float) else str(value)
