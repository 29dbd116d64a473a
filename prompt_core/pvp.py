"""A pattern-verbalizer pair: one way of asking the pretrained model the classification question."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .pattern import Pattern, Template
from .verbalizer import Verbalizer


@dataclass(frozen=True)
class PVP:
    """A pattern and its verbalizer. ``pattern`` is a cloze ``Pattern`` (one ``{mask}``) for a masked
    LM, a plain ``Template`` for a sentence encoder; the verbalizer's words are one-token label words
    (cloze) or label phrases of any length (similarity)."""

    pattern: Template
    verbalizer: Verbalizer

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> "PVP":
        """A PVP from its config form ``spec``: ``{pattern: ..., verbalizer: {label: words}}``."""
        return cls(Pattern(spec["pattern"]), Verbalizer(spec["verbalizer"]))

    def to_dict(self) -> dict[str, Any]:
        """The config form ``from_dict`` reads."""
        return {"pattern": self.pattern.template, "verbalizer": self.words()}

    def words(self) -> dict[str, list[str]]:
        """Label → its words (cloze) or phrases (similarity), as lists."""
        return {label: list(words) for label, words in self.verbalizer.words.items()}

    @property
    def labels(self) -> tuple[str, ...]:
        """The class names, in the verbalizer's order."""
        return self.verbalizer.labels
