"""What a run directory takes on disk, stated in its summary: the models (whole checkpoints, or
adapters with ``train.peft``) are most of it."""

from __future__ import annotations

import os
from pathlib import Path

from data.location import location

MIB = 1024 * 1024


def disk_usage(run_dir: str | os.PathLike) -> dict[str, int]:
    """Bytes of every file under ``run_dir`` (a folder or a URL), and of those under its ``models/``."""
    root = location(run_dir)
    return {"run_dir_bytes": tree_bytes(root), "models_bytes": tree_bytes(root / "models")}


def tree_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (0 when it does not exist); links are not followed, so
    nothing is counted twice."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def disk_line(sizes: dict[str, int]) -> str:
    """The summary's sentence on ``disk_usage``'s sizes."""
    return (f"Run directory: {sizes['run_dir_bytes'] / MIB:.1f} MiB on disk, "
            f"of which models {sizes['models_bytes'] / MIB:.1f} MiB.")
