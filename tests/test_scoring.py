"""Cloze scoring (mask-only gather == the full MLM forward), backbone loading, and labeling."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForMaskedLM, ElectraConfig, ElectraForMaskedLM

from prompt_core import (PVP, BackboneError, ClozeLearner, LearnerSpec, build_learner, learner_class, load_masked_lm,
                         predict_all, predict_logits)
from prompt_core.backbone import has_mlm_head
from tiny import FAMILIES, save_tiny

PVP_SPEC = {"pattern": "{text} It was {mask} .", "verbalizer": {"pos": ["great", "good"], "neg": "bad", "meh": "fine"}}
ROWS = [  # lengths deliberately out of order, so batches are padded and length-sorting reorders them
    {"text": "the movie was really very good and the actors were not bad"},
    {"text": "boring"},
    {"text": "a great film"},
    {"text": "the story is awful , the plot is terrible and the actors are boring"},
    {"text": "not great , not bad"},
    {"text": "it is a film"},
    {"text": "wonderful"},
]


def cloze_learner(backbone: Path) -> ClozeLearner:
    learner = build_learner(LearnerSpec.cloze(str(backbone), PVP.from_dict(PVP_SPEC)))
    assert isinstance(learner, ClozeLearner)
    return learner.eval()


@pytest.fixture(scope="module")
def bert_learner(tiny_models: dict[str, Path]) -> ClozeLearner:
    return cloze_learner(tiny_models["bert"])


def spread_weights(model: torch.nn.Module, std: float = 0.3, seed: int = 0) -> None:
    """Redraw every parameter wider than the init (weights N(0, 0.02), biases 0), so activations
    leave the near-linear range around 0, where gelu and its tanh approximation agree to 1e-7,
    and a dropped bias shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * std)


def naive_logits(learner: ClozeLearner, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The PET reference way: full vocabulary logits everywhere, keep the mask row, average label words."""
    vocab_logits = learner.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    rows, cols = (batch["input_ids"] == learner.tokenizer.mask_token_id).nonzero(as_tuple=True)
    assert rows.tolist() == list(range(len(batch["input_ids"])))  # one mask per row
    at_mask = vocab_logits[rows, cols]
    per_label = learner.pvp.verbalizer.token_ids(learner.tokenizer)
    return torch.stack([at_mask[:, ids].mean(dim=-1) for ids in per_label], dim=-1)


@pytest.mark.parametrize("kind", FAMILIES)
def test_mask_only_scoring_equals_full_mlm_forward(tiny_models: dict[str, Path], kind: str) -> None:
    learner = cloze_learner(tiny_models[kind])
    spread_weights(learner.model)
    batch = learner.collate(learner.featurize(ROWS))
    assert (batch["attention_mask"] == 0).any()  # padding is part of what is checked
    with torch.no_grad():
        fast, naive = learner(batch), naive_logits(learner, batch)
    assert fast.shape == (len(ROWS), 3)
    assert naive.std() > 0  # the comparison is not between constants
    torch.testing.assert_close(fast, naive, atol=1e-5, rtol=0)


def test_headless_checkpoint_gets_a_tied_head_and_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = save_tiny("bert", tmp_path / "headless", headless=True)
    with caplog.at_level(logging.INFO):
        model = load_masked_lm(str(directory))
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "no MLM head" in warnings[0].getMessage()
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    saved = load_file(directory / "model.safetensors")
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, saved["embeddings.word_embeddings.weight"])


@pytest.mark.parametrize("kind", FAMILIES)
def test_a_pretrained_mlm_head_is_found_in_the_checkpoint_without_loading_it(tiny_models: dict[str, Path],
                                                                            tmp_path: Path, kind: str) -> None:
    assert has_mlm_head(str(tiny_models[kind]))
    assert not has_mlm_head(str(save_tiny("bert", tmp_path / "headless", headless=True)))  # a sentence encoder's
    assert learner_class("cloze").missing_prior(str(tiny_models[kind])) is None
    assert learner_class("classifier").missing_prior(str(tiny_models[kind])) == "its head starts random"


def test_a_checkpoint_is_read_for_its_mlm_head_once_until_its_files_change(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``ipet run``'s checks and its flow both ask (``missing_prior``): the meta model is built once; a
    checkpoint saved again in place (a head now) is read again."""
    built = []
    from_config = AutoModelForMaskedLM.from_config
    monkeypatch.setattr(AutoModelForMaskedLM, "from_config", lambda *a, **kw: built.append(a) or from_config(*a, **kw))
    directory = save_tiny("bert", tmp_path / "model", headless=True)
    assert [has_mlm_head(str(directory)) for _ in range(3)] == [False] * 3 and len(built) == 1
    time.sleep(0.01)  # a later modification time, even on a coarse clock
    save_tiny("bert", directory)
    assert has_mlm_head(str(directory)) and len(built) == 2


@pytest.mark.parametrize("kind", ["cloze", "classifier"])
def test_fresh_heads_are_the_same_in_every_load(tmp_path: Path, kind: str) -> None:
    """An untrained learner on a headless checkpoint must score identically wherever it is built."""
    directory = save_tiny("bert", tmp_path / "headless", headless=True)
    spec = (LearnerSpec.cloze(str(directory), PVP.from_dict(PVP_SPEC)) if kind == "cloze"
            else LearnerSpec.classifier(str(directory), "{text}", ["pos", "neg", "meh"]))
    first = predict_all(build_learner(spec), ROWS)
    torch.manual_seed(12345)  # the global RNG state must not matter
    np.testing.assert_array_equal(predict_all(build_learner(spec), ROWS), first)


def test_checkpoint_with_head_loads_silently(tiny_models: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        model = load_masked_lm(str(tiny_models["bert"]))
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    saved = load_file(tiny_models["bert"] / "model.safetensors")
    assert torch.equal(model.cls.predictions.transform.dense.weight, saved["cls.predictions.transform.dense.weight"])


def test_unsupported_model_type_raises(tmp_path: Path) -> None:
    config = ElectraConfig(vocab_size=50, embedding_size=16, hidden_size=32, num_hidden_layers=1,
                           num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    ElectraForMaskedLM(config).save_pretrained(tmp_path)  # a masked LM, but not a family we can gather from
    with pytest.raises(BackboneError, match="'electra' is not supported"):
        load_masked_lm(str(tmp_path))


def test_directory_without_a_model_raises(tmp_path: Path) -> None:
    with pytest.raises(BackboneError, match="cannot load a masked LM"):
        load_masked_lm(str(tmp_path))


# --------------------------------------------------------------------------------- labeling


@pytest.mark.parametrize(("batch_size", "chunk_size"), [(2, 3), (64, 2), (3, 100)])
def test_predict_logits_keeps_input_order(bert_learner: ClozeLearner, batch_size: int, chunk_size: int) -> None:
    # float32: bf16 rounds a row's logits differently in batches of other lengths, which would hide the order
    chunks = list(predict_logits(bert_learner, iter(ROWS), batch_size=batch_size, device="cpu",
                                 chunk_size=chunk_size, precision="fp32"))
    sizes = [len(ROWS[i : i + chunk_size]) for i in range(0, len(ROWS), chunk_size)]
    assert [c.shape for c in chunks] == [(n, 3) for n in sizes]
    assert all(c.dtype == np.float32 for c in chunks)
    with torch.no_grad():
        one_by_one = np.concatenate(
            [bert_learner(bert_learner.collate(bert_learner.featurize([row]))).numpy() for row in ROWS]
        )
    assert len({tuple(row) for row in one_by_one.round(5)}) == len(ROWS)  # so any reordering would show
    np.testing.assert_allclose(np.concatenate(chunks), one_by_one, atol=1e-5, rtol=0)
    np.testing.assert_allclose(predict_all(bert_learner, ROWS, device="cpu", precision="fp32"), one_by_one,
                               atol=1e-5, rtol=0)


def test_predict_logits_of_no_rows(bert_learner: ClozeLearner) -> None:
    assert list(predict_logits(bert_learner, [], device="cpu")) == []
    empty = predict_all(bert_learner, iter([]), device="cpu")
    assert empty.shape == (0, 3) and empty.dtype == np.float32
