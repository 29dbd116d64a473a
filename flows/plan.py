"""Who trains on what in one iPET run: its members, their names, their learner specs, their weights.

Pure: nothing here submits a task, logs to MLflow or reads a file, so the plan of a run is
unit-tested without any server (``tests/test_plan.py``). ``flows/executor.py`` carries it out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

from prompt_core import PVP, Template, TrainConfig

if TYPE_CHECKING:  # learners import torch: only when a plan makes a spec, so importing the flow stays fast
    from prompt_core import LearnerSpec

from .config import RunConfig

Member = tuple[int, int | None]  # (PVP index, seed); seed None for an untrained PVP


@dataclass(frozen=True)
class Plan:
    """A run's members: one model per PVP and seed (one per PVP while untrained).

    Args:
        config: the run's validated config.
        rows: each prepared set's row count (``labeled``, ``pool``, maybe ``test``).
        no_prior: why the untrained learners would score at random on this backbone
            (``Learner.missing_prior``, read from the checkpoint by the caller); None: they have a prior.
    """

    config: RunConfig
    rows: Mapping[str, int]
    no_prior: str | None = None

    @property
    def pvps(self) -> list[int]:
        return list(range(len(self.config.pvps)))

    @property
    def members(self) -> list[Member]:
        """Every (PVP, seed) pair, PVP-major: the models of a PET or iPET generation."""
        return [(p, s) for p in self.pvps for s in self.config.seeds]

    @property
    def gold_size(self) -> int:
        return self.rows["labeled"]

    @property
    def pool_size(self) -> int:
        return self.rows["pool"]

    @property
    def has_prior(self) -> bool:
        """Whether an untrained learner of this run already scores (not a random head)."""
        from prompt_core import learner_class

        return self.no_prior is None and learner_class(self.config.learner).has_prior

    def name(self, generation: int | str, member: Member | str) -> str:
        """A model's name: ``g1-p0-s42`` for generation 1's PVP 0, seed 42; ``final-distilled``."""
        tail = member if isinstance(member, str) else f"p{member[0]}-s{member[1]}"
        prefix = f"g{generation}" if isinstance(generation, int) else generation
        return f"{prefix}-{tail}"

    def untrained_name(self, p: int) -> str:
        return f"zero-shot-p{p}"

    def spec(self, p: int) -> LearnerSpec:
        """The learner spec of PVP ``p``."""
        from prompt_core import learner_class

        c = self.config
        return learner_class(c.learner).spec_for(c.model, c.pvp(p), **self._spec_options)

    def distill_spec(self) -> LearnerSpec:
        """The final model: a similarity learner keeps its prior's form (the text fields matched to the
        first PVP's phrases); otherwise a sequence classifier on the text fields."""
        from prompt_core import learner_class

        c = self.config
        template = " ".join(f"{{{f}}}" for f in c.fields)
        pvp = PVP(Template(template), c.pvp(0).verbalizer)
        return learner_class(learner_class(c.learner).distill_kind).spec_for(c.model, pvp, **self._spec_options)

    @property
    def _spec_options(self) -> dict:
        c = self.config
        return {"max_length": c.max_length, "trust_remote_code": c.trust_remote_code,
                "temperature": c.similarity_temperature}

    def train_config(self, member: Member, generation: int = 0) -> TrainConfig:
        """The member's settings with its seed: ``pet_train`` for the PET stage (generation 0), else ``train``."""
        settings = self.config.pet_train if generation == 0 else self.config.train
        return settings.model_copy(update={"seed": member[1]})

    def pet_sets(self, labeled: str) -> dict[Member, str]:
        """PET: every member trains on the gold set."""
        return {m: labeled for m in self.members}

    def peers(self, member: Member, models: Mapping[Member, str]) -> list[Member]:
        """The previous generation's models other than ``member``'s own predecessor: who labels its pool."""
        return [m for m in models if m != member and m != (member[0], None)]

    @property
    def weighs_pvps(self) -> bool:
        """Whether PET weighs each PVP by its untrained accuracy on the gold set (else all weigh 1):
        only with gold labels, and a prior to score them."""
        return bool(self.gold_size) and self.has_prior

    def equal_weights(self) -> list[float]:
        return [1.0] * len(self.pvps)

    def member_weights(self, models: Mapping[Member, str], weights: list[float] | None) -> list[float] | None:
        """Each model's weight in an ensemble: its PVP's weight under ``wmean``, else equal (None)."""
        w = [weights[m[0]] for m in models] if weights and self.config.ipet.reduction == "wmean" else None
        return None if w is not None and sum(w) <= 0 else w
