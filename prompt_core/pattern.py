"""Templates and patterns: text such as ``"{text} It was {mask}."`` with named input slots.

A pattern is a template with exactly one ``{mask}`` slot, so a task's prompt is data (YAML),
not code. It is rendered with the tokenizer's own mask token, so the same pattern works for
BERT (``[MASK]``), RoBERTa (``<mask>``) and friends. A plain template (mask optional) is the
input format of sequence-classifier learners.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Mapping, Sequence

MASK = "mask"


class PatternError(ValueError):
    """A pattern that cannot be used: wrong mask count, bad slot, or an input that does not fit."""


def empty_text(fields: Sequence[str]) -> str:
    """Why a row with no text in any of the patterns' input ``fields`` is refused: one wording for the
    data check (training rows are rejected) and for prediction (such a row gets no label)."""
    return f"empty text in every input field {list(fields)}"


def slot_text(value: object) -> str:
    """A row's value for a slot as text: a missing one (a JSONL ``null`` or absent key, a parquet null)
    is no text, as an empty field is; ``str`` would make it the word "None" in the prompt."""
    return "" if value is None else str(value)


@dataclass(frozen=True)
class Template:
    """An input template such as ``"{title} {text}"``: its slots are the input fields it reads, and
    ``encode`` renders rows as token ids, shortening the slots' text (never its own words) to fit."""

    template: str

    def __post_init__(self) -> None:
        try:
            parsed = list(string.Formatter().parse(self.template))
        except ValueError as err:
            raise PatternError(f"pattern {self.template!r} is not a valid template: {err}") from None
        fields = [name for _, name, spec, conv in parsed if name is not None]
        for _, name, spec, conv in parsed:
            if name is not None and (not name.isidentifier() or spec or conv):
                raise PatternError(
                    f"pattern {self.template!r}: slot {{{name}}} must be a plain name such as {{text}}"
                )
        if fields.count(MASK) > 1 or (self.needs_mask and MASK not in fields):
            raise PatternError(
                f"pattern {self.template!r} must contain exactly one {{mask}}, found {fields.count(MASK)}"
            )

    needs_mask = False

    @property
    def has_mask(self) -> bool:
        """Whether the template has a ``{mask}`` slot."""
        return any(name == MASK for _, name, _, _ in string.Formatter().parse(self.template))

    @property
    def slots(self) -> tuple[str, ...]:
        """The input fields the pattern reads, in order of first appearance (``mask`` excluded)."""
        names = [n for _, n, _, _ in string.Formatter().parse(self.template) if n and n != MASK]
        return tuple(dict.fromkeys(names))

    def check_fields(self, available: Sequence[str]) -> None:
        """PatternError unless every slot is one of ``available`` (the data's columns)."""
        missing = [s for s in self.slots if s not in available]
        if missing:
            raise PatternError(
                f"pattern {self.template!r} uses slot(s) {missing} that the data does not have "
                f"(columns: {list(available)})"
            )

    def render(self, row: Mapping[str, str], mask_token: str) -> str:
        """The template filled with ``row``'s slot values, and ``mask_token`` at ``{mask}``."""
        return self.template.format(**{s: slot_text(row[s]) for s in self.slots}, **{MASK: mask_token})

    def encode(self, tokenizer, rows: Sequence[Mapping[str, str]], max_length: int) -> list[list[int]]:
        """Token ids (with special tokens, from ``tokenizer``) of each of ``rows`` rendered, at most
        ``max_length`` long.

        Only the input slots are shortened, longest first, so the pattern's own words and
        the mask always survive. A slot value is cut at a token boundary of the original
        string (offset mapping), so nothing is re-spelled by decoding.
        """
        mask_token = tokenizer.mask_token
        values = [{s: _scrub(slot_text(row[s]), mask_token) for s in self.slots} for row in rows]
        encoded = self._tokenize(tokenizer, values, mask_token)
        for i, ids in enumerate(encoded):
            excess = len(ids) - max_length
            while excess > 0:
                values[i] = self._shorten(tokenizer, values[i], excess)
                ids = encoded[i] = self._tokenize(tokenizer, [values[i]], mask_token)[0]
                excess = len(ids) - max_length
        return encoded

    def _tokenize(self, tokenizer, values: list[dict[str, str]], mask_token: str) -> list[list[int]]:
        texts = [self.template.format(**v, **{MASK: mask_token}) for v in values]
        return tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]

    def _shorten(self, tokenizer, values: dict[str, str], excess: int) -> dict[str, str]:
        """Drop ``excess`` tokens from the longest slots, one token at a time from the longest."""
        if not self.slots:
            raise PatternError(f"pattern {self.template!r} alone is longer than the maximum length")
        offsets = {
            s: tokenizer(values[s], add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            for s in self.slots
        }
        keep = {s: len(o) for s, o in offsets.items()}
        for _ in range(excess):
            longest = max(self.slots, key=lambda s: keep[s])
            if keep[longest] == 0:
                raise PatternError(
                    f"pattern {self.template!r} alone is longer than the maximum length"
                )
            keep[longest] -= 1
        return {s: values[s][: _cut(offsets[s], keep[s])] for s in self.slots}


def _cut(offsets: Sequence[tuple[int, int]], keep: int) -> int:
    """Where to cut a string to keep its first ``keep`` tokens, never past a dropped token's start.

    Byte-level BPE splits a multi-byte character into tokens that share one character span;
    cutting at the last kept token's end would then keep the whole character, nothing would
    get shorter, and ``encode`` would loop forever. Such a character is dropped whole instead.
    """
    if keep == 0:
        return 0
    end = offsets[keep - 1][1]
    return min(end, offsets[keep][0]) if keep < len(offsets) else end


def _scrub(value: str, mask_token: str | None) -> str:
    """An input that contains the mask token itself would add a second mask; drop it.

    A classifier's tokenizer may have no mask token at all (``None``): nothing to drop.
    """
    return value.replace(mask_token, " ") if mask_token and mask_token in value else value


@dataclass(frozen=True)
class Pattern(Template):
    """A cloze template: exactly one ``{mask}``, whose filler the verbalizer scores."""

    needs_mask = True
