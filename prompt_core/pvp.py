"""A pattern-verbalizer pair: one way of asking the masked LM the classification question."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .pattern import Pattern
from .verbalizer import Verbalizer


@dataclass(frozen=True)
class PVP:
    pattern: Pattern
    verbalizer: Verbalizer

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> "PVP":
        return cls(Pattern(spec["pattern"]), Verbalizer(spec["verbalizer"]))

    def to_dict(self) -> dict[str, Any]:
        return {"pattern": self.pattern.template, "verbalizer": {k: list(v) for k, v in self.verbalizer.words.items()}}

    @property
    def labels(self) -> tuple[str, ...]:
        return self.verbalizer.labels
