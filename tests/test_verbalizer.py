"""Verbalizers: label order, one vocabulary token per word, and the averaging matrix."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from prompt_core import Verbalizer, VerbalizerError


def test_labels_are_strings_in_the_given_order() -> None:
    verbalizer = Verbalizer({2: "bad", 1: ["great", " good "], "0": ("fine",)})
    assert verbalizer.labels == ("2", "1", "0")
    assert verbalizer.words == {"2": ("bad",), "1": ("great", "good"), "0": ("fine",)}


@pytest.mark.parametrize(
    "words",
    [
        pytest.param({}, id="empty"),
        pytest.param({"pos": []}, id="no-words"),
        pytest.param({"pos": ""}, id="empty-word"),
        pytest.param({"pos": "great", "neg": ["bad", "  "]}, id="blank-word"),
    ],
)
def test_empty_verbalizer_or_label_without_words_raises(words: dict[str, Any]) -> None:
    with pytest.raises(VerbalizerError):
        Verbalizer(words)


@pytest.mark.parametrize(
    ("kind", "word", "pieces"),
    [("bert", "greatly", ["great", "##ly"]), ("roberta", "greatly", ["Ġgreat", "ly"]), ("roberta", "zebra", None)],
)
def test_word_of_several_tokens_raises_naming_word_and_tokens(
    tiny_tokenizers: dict[str, Any], kind: str, word: str, pieces: list[str] | None
) -> None:
    tokenizer = tiny_tokenizers[kind]
    pieces = pieces or tokenizer.tokenize(" " + word)
    assert len(pieces) > 1
    with pytest.raises(VerbalizerError) as err:
        Verbalizer({"pos": "great", "neg": word}).token_ids(tokenizer)
    message = str(err.value)
    assert repr(word) in message and str(pieces) in message


@pytest.mark.parametrize("kind", ["bert", "distilbert", "albert"])
def test_out_of_vocabulary_word_raises(tiny_tokenizers: dict[str, Any], kind: str) -> None:
    with pytest.raises(VerbalizerError, match=r"'zebra'.*not in the vocabulary"):
        Verbalizer({"pos": "great", "neg": "zebra"}).token_ids(tiny_tokenizers[kind])


@pytest.mark.parametrize(("kind", "tokens"), [("bert", ["great", "bad"]), ("roberta", ["Ġgreat", "Ġbad"])])
def test_words_map_to_their_in_text_token(tiny_tokenizers: dict[str, Any], kind: str, tokens: list[str]) -> None:
    """RoBERTa's mask stands for a word after a space, so ``great`` must become ``Ġgreat``."""
    tokenizer = tiny_tokenizers[kind]
    ids = Verbalizer({"pos": "great", "neg": "bad"}).token_ids(tokenizer)
    assert ids == [[tokenizer.convert_tokens_to_ids(tokens[0])], [tokenizer.convert_tokens_to_ids(tokens[1])]]
    assert tokenizer.unk_token_id not in (ids[0][0], ids[1][0])


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_averaging_matrix_averages_each_labels_words(tiny_tokenizers: dict[str, Any], kind: str) -> None:
    tokenizer = tiny_tokenizers[kind]
    verbalizer = Verbalizer({"neg": "bad", "pos": ["great", "good"], "meh": ["fine", "boring", "not", "maybe"]})
    flat, matrix = verbalizer.averaging_matrix(tokenizer)
    per_label = verbalizer.token_ids(tokenizer)
    assert flat.tolist() == [i for ids in per_label for i in ids]
    expected = torch.tensor([
        [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [0.0, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.25, 0.25, 0.25, 0.25],
    ])
    assert torch.equal(matrix, expected)


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        pytest.param("bert", {"pos": "Good", "neg": "good"}, id="bert-lowercases-to-one-token"),
        pytest.param("roberta", {"pos": ["great", "good"], "neg": ["bad", "good"]}, id="roberta-word-in-two-labels"),
    ],
)
def test_a_token_standing_for_two_labels_raises(tiny_tokenizers: dict[str, Any], kind: str,
                                                words: dict[str, Any]) -> None:
    """A token under two labels gives both the same score there: with one word each the two classes tie on
    every row (argmax always takes the first), shared among several it blurs them. Refused, naming both."""
    with pytest.raises(VerbalizerError, match=r"(?s)'pos'.*'neg'"):
        Verbalizer(words).token_ids(tiny_tokenizers[kind])
