"""Tasks hand freed memory back when they return (``tasks/memory.py``; the effect is measured in
bench/RESULTS.md, not here)."""

from __future__ import annotations

import gc
import inspect
import platform
import weakref

import pytest

from tasks import memory
from tasks.adapt import adapt_backbone
from tasks.models import label_set, train_model


def test_memory_is_released_after_the_task_returns_or_raises(monkeypatch) -> None:
    events = []
    monkeypatch.setattr(memory, "release_memory", lambda: events.append("released"))

    @memory.returns_memory
    def work(fail: bool) -> str:
        events.append("ran")
        if fail:
            raise ValueError("bad input")
        return "out"

    assert work(False) == "out" and events == ["ran", "released"]
    with pytest.raises(ValueError, match="bad input"):
        work(True)
    assert events == ["ran", "released", "ran", "released"]


def test_the_training_labeling_and_adaptation_tasks_release_it_and_keep_their_parameters() -> None:
    """Prefect names task runs from the parameters (``train {name}``): the wrapper must not hide them."""
    for task, first in ((train_model, "name"), (label_set, "models"), (adapt_backbone, "backbone")):
        assert getattr(task.fn, "__wrapped__", None) is not None, f"{task.name} does not release memory"
        assert next(iter(inspect.signature(task.fn).parameters)) == first


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_glibc_trim_is_found_and_runs() -> None:
    assert memory._TRIM is not None
    memory.release_memory()


class _Cycle:
    """An object that refers to itself: only the cycle collector frees it."""

    def __init__(self) -> None:
        self.me = self


def test_a_run_s_collections_free_its_cycles_and_what_was_alive_before_it_is_freed_after_it() -> None:
    before = _Cycle()
    dropped_in_run = weakref.ref(before)
    with memory.collections_of_this_run():
        assert gc.get_freeze_count() > 0, "what was alive at the start is out of the walks"
        made = weakref.ref(_Cycle())
        memory.release_memory()
        assert made() is None, "a cycle the run made is collected by a task's release"
        del before
        memory.release_memory()
        assert dropped_in_run() is not None, "frozen for the run: not walked"
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert dropped_in_run() is None, "unfrozen after the run: nothing stays out of reach"


def test_overlapping_runs_stay_frozen_until_the_last_one_ends() -> None:
    """Two flows in one process: the one that ends first must not unfreeze the other's heap."""
    with memory.collections_of_this_run():
        with memory.collections_of_this_run():
            pass
        assert gc.get_freeze_count() > 0, "the first run is still going: its frozen objects stay frozen"
        dropped = weakref.ref(_Cycle())
        memory.release_memory()
        assert dropped() is None, "the running block still collects what it made"
    assert gc.get_freeze_count() == 0, "the last run to end unfreezes"
