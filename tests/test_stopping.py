"""A run's stop request (prompt_core/stopping.py): a training in flight in another thread stops at its
next optimizer step, a labeling at its next batch, and a request belongs to its run alone. The flow's
side (a SIGTERM mid-training, as a deployment's cancel sends it) is in tests/test_reliability.py."""

from __future__ import annotations

import contextvars
import threading
from pathlib import Path

import pytest

from prompt_core import TrainConfig, predict_logits, train
from prompt_core.stopping import Stopped, stop_all, stoppable
from test_training import FAST, TRAIN_LABELS, TRAIN_ROWS, fresh

STEPS = 2000  # minutes of training, were it not stopped (about 3 ms a step on a loaded CPU core)


def _in_a_thread(fn) -> tuple[threading.Thread, dict]:
    """``fn`` in a thread started from this one's context, as Prefect's thread pool starts a task; what it
    returned or raised."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = fn()
        except BaseException as err:  # Stopped is one
            outcome["error"] = err

    thread = threading.Thread(target=contextvars.copy_context().run, args=(run,))
    thread.start()
    return thread, outcome


def test_a_training_in_flight_stops_at_the_next_step_once_its_run_is_asked_to(tiny_models: dict[str, Path]) -> None:
    """The request comes from another thread (the flow's, unwinding from a signal) while the training's
    thread is stepping; the training raises ``Stopped`` before the step after the one it was in."""
    learner = fresh("cloze", tiny_models["bert"])
    steps: list[int] = []
    ten_done = threading.Event()

    def on_log(step: int, loss: float) -> None:
        steps.append(step)
        if step == 10:
            ten_done.set()

    with stoppable() as request:
        thread, outcome = _in_a_thread(lambda: train(learner, TRAIN_ROWS, TRAIN_LABELS,
                                                     TrainConfig(min_steps=STEPS, max_steps=STEPS, **FAST), on_log=on_log,
                                                     progress=False))
        assert ten_done.wait(60), "the training did not get going"
        asked_at = len(steps)
        request.set()
        thread.join(60)
    assert not thread.is_alive(), "still training a minute after the request"
    error = outcome.get("error")
    assert isinstance(error, Stopped), outcome
    assert len(steps) <= asked_at + 1 < STEPS // 10, (asked_at, len(steps))  # the step it was in, then no more
    assert str(error) == f"train: stopped after {len(steps)} of {STEPS} steps, as its run was asked to stop"


def test_a_labeling_in_flight_stops_at_the_next_batch(tiny_models: dict[str, Path]) -> None:
    learner = fresh("cloze", tiny_models["bert"])
    rows = TRAIN_ROWS * 4
    with stoppable() as request:
        chunks = predict_logits(learner, rows, batch_size=4, device="cpu", chunk_size=8)
        assert len(next(chunks)) == 8
        request.set()
        with pytest.raises(Stopped, match=r"^labeling: stopped after 8 rows, as its run was asked to stop$"):
            next(chunks)


def test_a_stop_belongs_to_its_run(tiny_models: dict[str, Path]) -> None:
    """A stopped run leaves no request behind: a later run in the same process (tests run many), and a
    training called outside any run, train to their end; ``stop_all`` (a signal handler's call) stops
    the runs open now, not those to come."""
    config = TrainConfig(max_steps=3, **FAST)
    with stoppable() as request:
        request.set()
        with pytest.raises(Stopped, match="after 0 of 3 steps"):
            train(fresh("cloze", tiny_models["bert"]), TRAIN_ROWS, TRAIN_LABELS, config, progress=False)
    stop_all()
    assert len(train(fresh("cloze", tiny_models["bert"]), TRAIN_ROWS, TRAIN_LABELS, config,
                     progress=False).losses) == 3
    with stoppable():
        assert len(train(fresh("cloze", tiny_models["bert"]), TRAIN_ROWS, TRAIN_LABELS, config,
                         progress=False).losses) == 3
        stop_all()
        with pytest.raises(Stopped):
            train(fresh("cloze", tiny_models["bert"]), TRAIN_ROWS, TRAIN_LABELS, config, progress=False)
