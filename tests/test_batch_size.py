"""Labeling batch size "auto": rows per batch from free GPU memory (pure arithmetic, testable on a CPU)."""

from __future__ import annotations

import torch

from prompt_core.label import DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE, auto_batch_size, row_bytes, rows_that_fit

GIB = 2**30
MINILM = dict(hidden=384, intermediate=1536, heads=12, vocab=30522)  # all-MiniLM-L6-v2


def test_rows_that_fit_half_the_free_memory_as_a_power_of_two():
    assert rows_that_fit(8 * GIB, GIB // 100) == 256         # 400 rows fit in half: the power of two below
    assert rows_that_fit(8 * GIB, GIB // 128) == 512         # exactly 512 fit
    assert rows_that_fit(10 * 2**20, GIB) == 1               # not even one: still one row at a time
    assert rows_that_fit(1000 * GIB, 1) == MAX_BATCH_SIZE


def test_row_bytes_grow_with_width_and_with_the_square_of_length():
    base = row_bytes(**MINILM, length=128)
    assert row_bytes(**MINILM, length=256) > 2 * base        # attention scores are length²
    assert row_bytes(**{**MINILM, "hidden": 768}, length=128) > base
    # MiniLM at 256 tokens: about 10 MB a row, so 40 GiB free (half of it used) takes 2048 rows
    assert 9e6 < row_bytes(**MINILM, length=256) < 11e6
    assert rows_that_fit(40 * GIB, row_bytes(**MINILM, length=256)) == 2048


def test_auto_is_the_default_batch_on_a_cpu(tiny_models):
    from prompt_core import LearnerSpec, PVP, Pattern, Verbalizer, build_learner

    pvp = PVP(Pattern("{text} it was {mask} ."), Verbalizer({"neg": "bad", "pos": "great"}))
    learner = build_learner(LearnerSpec.cloze(str(tiny_models["bert"]), pvp, max_length=32))
    assert auto_batch_size(learner, torch.device("cpu")) == DEFAULT_BATCH_SIZE
