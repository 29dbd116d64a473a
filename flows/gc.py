"""``ipet gc``: free a finished run directory's disk by removing model weights its final model
does not need. Every model directory is an output keyed by its inputs, so a later rerun trains
again exactly what was removed (and reuses everything else); nothing else is touched.

``--keep final`` keeps the final model (an ensemble's members with it); ``last-generation`` also
the last iPET generation's models the run used (what a rerun with more generations continues from;
by name alone where ``results.json``, an earlier ipet's, does not name their directories); ``all``
removes nothing and only reports sizes. Besides models, the first two remove the checkpoints killed
backbone adaptations left (``backbones/.adapted-<key>.checkpoint.pt``, up to gigabytes each).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from pathlib import Path

from data.location import names
from data.outputs import TMP_SUFFIX

from .disk import tree_bytes

KEEP = ("final", "last-generation", "all")
GENERATION = re.compile(r"ipet-(\d+)")  # a generation's stage


def removable(run_dir: Path, keep: str) -> list[Path]:
    """The model directories ``keep`` lets go, or DataError if ``run_dir`` holds no finished run."""
    from prompt_core.predictor import member_dirs

    from .prediction import run_stages

    stages = run_stages(run_dir)
    final = stages[-1].get("model")
    models = sorted(p for p in (run_dir / "models").glob("[!.]*") if p.is_dir())
    if keep == "all" or not isinstance(final, str):
        return []
    final = run_dir / "models" / Path(final).name  # the run directory may have moved since
    needed = {final.name, *(m.name for m in member_dirs(final))}
    if keep == "last-generation":  # the run's own, where it names them: not an earlier ipet's or other settings'
        generation = f"g{last_generation(stages)}-"
        needed |= {n for n in used_dirs(stages) or [p.name for p in models] if n.startswith(generation)}
    return [p for p in models if p.name not in needed]


def not_reused(run_dir: Path, stages: list[dict]) -> str | None:
    """Why a rerun trained models while finished ones sit beside them: the line naming how many trained
    models in ``run_dir`` its ``stages`` (``results.json``'s) did not use, keyed by other settings or by an
    earlier ipet; None where there are none, or the stages do not name the directories (an earlier ipet's)."""
    from tasks.models import METRICS  # only a trained model has it: not a zero-shot spec, not an ensemble

    used, models = used_dirs(stages), Path(run_dir) / "models"
    if used is None:
        return None
    others = [n for n in names(models) or [] if n[0] != "." and n not in used and (models / n / METRICS).is_file()]
    if not others:
        return None
    one = len(others) == 1
    return (f"{len(others)} finished model{'' if one else 's'} in {models} {'was' if one else 'were'} made with "
            f"other settings or an earlier ipet and {'is' if one else 'are'} not reused; `ipet gc {run_dir}` "
            f"removes {'it' if one else 'them'}")


def used_dirs(stages: list[dict]) -> set[str] | None:
    """The model directories (names in ``models/``) a finished run's stages used: each model's ``dir`` and the
    final model; None for the stages of an ipet before 2026-12-06, which named no directory."""
    used = {m["dir"] for s in stages for m in s.get("models") or [] if isinstance(m, dict) and "dir" in m}
    final = stages[-1].get("model")
    return used | ({Path(final).name} if isinstance(final, str) else set()) if used else None


def adaptation_checkpoints(run_dir: Path, keep: str) -> list[Path]:
    """The checkpoints in ``backbones/`` that ``keep`` lets go: every one unless ``keep`` is ``all``.

    An adaptation deletes its checkpoint once its backbone is saved, and holds the run directory's lock
    while it trains, as gc does; so a checkpoint gc finds is a killed adaptation's: of the backbone this
    finished run already has, or of settings the run no longer asks for (a user who killed an adaptation
    and changed them). Only an ``ipet adapt`` of those very settings would go on from it; without gc it
    would stay for ever."""
    from tasks.adapt import CHECKPOINT_SUFFIX

    if keep == "all":
        return []
    return sorted(p for p in (run_dir / "backbones").glob(f".*{CHECKPOINT_SUFFIX}") if p.is_file())


def last_generation(stages: list[dict]) -> int:
    """The finished run's last generation (0: PET), from its stages rather than the models on disk,
    which may hold later generations of an earlier run with more of them."""
    return max((int(m.group(1)) for s in stages if (m := GENERATION.fullmatch(s.get("stage", "")))), default=0)


def collect(run_dir: Path, keep: str) -> str:
    """Remove what ``keep`` lets go (the caller holds the run directory's lock); what was freed."""
    gone, checkpoints = removable(run_dir, keep), adaptation_checkpoints(run_dir, keep)
    freed = sum(tree_bytes(p) for p in gone) + sum(p.stat().st_size for p in checkpoints)
    for path in gone:
        discard(path)
    for checkpoint in checkpoints:  # one unlink: never left half-written under its name
        checkpoint.unlink()
    removed = f"{len(gone)} model director{'y' if len(gone) == 1 else 'ies'}"
    if checkpoints:
        removed += (" and 1 killed adaptation's checkpoint" if len(checkpoints) == 1
                    else f" and {len(checkpoints)} killed adaptations' checkpoints")
    return (f"{run_dir}: removed {removed}, freed {megabytes(freed)}; the run directory is now "
            f"{megabytes(tree_bytes(run_dir))}" + ("; a rerun trains them again" if gone or checkpoints else ""))


def discard(model: Path) -> None:
    """Rename ``model`` to a temporary name, then delete it. A model directory is reused when its name
    exists, so a kill mid-way must not leave it there without its weights; it leaves a temporary,
    which the next run removes (``remove_stale_temps``)."""
    doomed = model.parent / f".{model.name}.{secrets.token_hex(6)}{TMP_SUFFIX}"
    os.rename(model, doomed)
    shutil.rmtree(doomed)


def megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB"
