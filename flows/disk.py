"""What a run directory takes on disk, stated in its summary: the models (whole checkpoints, or
adapters with ``train.peft``) are most of it."""

from __future__ import annotations

import os

from data.location import location

MIB = 1024 * 1024


def disk_usage(run_dir: str | os.PathLike) -> dict[str, int]:
    """Bytes of every file under ``run_dir`` (a folder or a URL), and of those under its ``models/``."""
    root = location(run_dir)
    sizes = {"run_dir_bytes": 0, "models_bytes": 0}
    for path in root.rglob("*"):
        if path.is_file():
            size = path.stat().st_size
            sizes["run_dir_bytes"] += size
            if path.relative_to(root).parts[0] == "models":
                sizes["models_bytes"] += size
    return sizes


def disk_line(sizes: dict[str, int]) -> str:
    """The summary's sentence on ``disk_usage``'s sizes."""
    return (f"Run directory: {sizes['run_dir_bytes'] / MIB:.1f} MiB on disk, "
            f"of which models {sizes['models_bytes'] / MIB:.1f} MiB.")
