"""Verbalizers: which words or phrases stand for which label."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

if TYPE_CHECKING:  # torch is imported where scores are made, so a config reads without it
    import torch


class VerbalizerError(ValueError):
    """A verbalizer that cannot be scored: no labels, no words, or a word that is not one token."""


def word_pieces(tokenizer, words: Sequence[str]) -> list[list[int]]:
    """The token ids of each word as it appears after a space (``" great"``), which gives ``great``
    for WordPiece, ``Ġgreat`` for byte-level BPE and ``▁great`` for SentencePiece: the form a mask
    token in running text stands for. A label word must be exactly one of them.

    Args:
        tokenizer: the model's tokenizer.
        words: the words, without surrounding spaces.
    """
    prefix = tokenizer("x", add_special_tokens=False)["input_ids"]
    out = []
    for full in tokenizer(["x " + word for word in words], add_special_tokens=False)["input_ids"] if words else []:
        out.append(full[len(prefix):] if full[: len(prefix)] == prefix else full)
    return out


def _check_distinct(words: Mapping[str, Sequence[str]], ids: Sequence[Sequence[int]], tokenizer) -> None:
    """VerbalizerError when one token stands for two labels (``Good`` and ``good`` under a lower-casing
    tokenizer, or one word listed under both): it scores the same for both there, so two labels of one
    word each tie on every row, and the first always wins. Within a label a repeated token is harmless."""
    owner: dict[int, tuple[str, str]] = {}
    for (label, label_words), label_ids in zip(words.items(), ids):
        for word, token in zip(label_words, label_ids):
            first = owner.setdefault(token, (label, word))
            if first[0] != label:
                raise VerbalizerError(
                    f"label words {first[1]!r} (label {first[0]!r}) and {word!r} (label {label!r}) are the same "
                    f"token {tokenizer.convert_ids_to_tokens(token)!r}, so it scores both labels alike; "
                    "give each label words of its own"
                )


@dataclass(frozen=True)
class Verbalizer:
    """Maps each label to one or more label words (``positive: [great, good]``) or, for the
    similarity learner, label phrases (``positive: ["It was great."]``).

    Labels are kept as strings, in the order given; that order is the class index order of
    every logit array the project writes.
    """

    words: Mapping[str, tuple[str, ...]]

    def __init__(self, words: Mapping[object, str | Sequence[str]]):
        if not words:
            raise VerbalizerError("verbalizer is empty: map every label to at least one word")
        normalized: dict[str, tuple[str, ...]] = {}
        for label, value in words.items():
            ws = (value,) if isinstance(value, str) else tuple(value)
            ws = tuple(w.strip() for w in ws)
            if not ws or not all(ws):
                raise VerbalizerError(f"verbalizer label {str(label)!r} has no (non-empty) words")
            normalized[str(label)] = ws
        object.__setattr__(self, "words", normalized)

    @property
    def labels(self) -> tuple[str, ...]:
        """The class names, in the order the verbalizer lists them (every logit column's)."""
        return tuple(self.words)

    def token_ids(self, tokenizer) -> list[list[int]]:
        """One id in ``tokenizer``'s vocabulary per word, per label (each word as ``word_pieces``
        reads it); VerbalizerError for a word that is not one known token."""
        ids = []
        for label, words in self.words.items():
            label_ids = []
            for word, word_ids in zip(words, word_pieces(tokenizer, words)):
                if len(word_ids) != 1:
                    pieces = tokenizer.convert_ids_to_tokens(word_ids)
                    raise VerbalizerError(
                        f"label word {word!r} (label {label!r}) is {len(word_ids)} tokens {pieces}, "
                        "not one; pick a word that is a single token in this model's vocabulary"
                    )
                if word_ids[0] == tokenizer.unk_token_id:
                    raise VerbalizerError(
                        f"label word {word!r} (label {label!r}) is not in the vocabulary "
                        f"(it becomes {tokenizer.unk_token!r})"
                    )
                label_ids.append(word_ids[0])
            ids.append(label_ids)
        _check_distinct(self.words, ids, tokenizer)
        return ids

    def averaging_matrix(self, tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat word ids (``token_ids`` with ``tokenizer``) and a (labels × words) matrix that averages
        each label's word scores.

        Averaging the logits of a label's words is PET's verbalizer ensembling.
        """
        import torch

        per_label = self.token_ids(tokenizer)
        return torch.tensor([i for ids in per_label for i in ids], dtype=torch.long), \
            self.averaging([len(ids) for ids in per_label])

    @staticmethod
    def averaging(counts: Sequence[int]) -> torch.Tensor:
        """A (labels × items) matrix whose row ``l`` averages label ``l``'s ``counts[l]`` consecutive items."""
        import torch

        matrix = torch.zeros(len(counts), sum(counts))
        col = 0
        for row, count in enumerate(counts):
            matrix[row, col : col + count] = 1.0 / count
            col += count
        return matrix
