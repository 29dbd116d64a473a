"""The whole iPET run on held-out TRAINING rows, with the labeled draws of bench/tuning/pet_prior.py.

pet_prior.py measures the PET stage alone. Whether a change there carries through iPET's generations and
the distillation needs the whole flow, on rows that are never the test set. This writes, for one labeled
draw ``data.seed`` of ``examples/{dataset}.yaml``:

- ``labeled.csv``: that draw's 10 rows per class, the same rows as the example's and pet_prior.py's;
- ``heldout.csv``: pet_prior.py's held-out rows less the draw's (SST-2: 1,000 rows of ``train.tsv`` drawn
  with seed 1234; AG News: rows 5,001-6,000), the run's test set; with ``--min-words N``, 1,000 training rows
  of at least N words drawn with the same seed instead (why: ``suggest_quality.held_out_ids``);
- ``pool.csv``: ``--pool`` other training rows (2,000 by default, for time; the examples' pools are 10,000 and
  5,960), never held out, never labeled; with ``--pool-min-words N``, only rows of at least N words;
- ``run.yaml``: the example's config reading them, its MLflow store in the directory, no registry;

then runs ``ipet run run.yaml`` there with the given ``--set`` overrides, and prints its stage table.

    python bench/tuning/heldout_run.py --dataset sst2 --draw 2 --dir bench/tuning/runs/flow/sst2-2-pet \\
        --set pet.train.peft.method=prefix
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from suggest_quality import config_of, held_out_ids, words  # noqa: E402


def write_sets(dataset: str, draw: int, pool_rows: int, out: Path, min_words: int = 0, pool_min_words: int = 0,
               example: str | None = None, hidden_pool: bool = False) -> Path:
    """The draw's labeled, held-out and pool rows as CSV files in ``out``, and a config reading them;
    ``min_words`` > 0 holds out rows of at least that many words (suggest_quality.held_out_ids), and
    ``pool_min_words`` > 0 keeps the pool to such rows. The run's config is ``examples/{example}.yaml``
    (default: the dataset's similarity example; e.g. ``agnews-cloze``) reading those files. ``hidden_pool``
    also writes ``pool-hidden.csv``: the pool with its hidden labels, for an oracle (``ask_retrain.py``)."""
    from data.prepare import load_sets
    from data.sources import read_source

    config = config_of(dataset, draw)
    rows = {r["id"]: r for r in read_source(config.data.train, config.data.root).to_pylist()}
    labeled = load_sets(config.data, config.fields, config.labels)[0]["labeled"].to_pylist()
    labeled_ids = {r["id"] for r in labeled}
    held = held_out_ids(dataset, config, labeled_ids, min_words)
    outside = set(held) | labeled_ids
    pool = [i for i in np.random.default_rng(0).permutation(sorted(rows))
            if i not in outside and words(rows[i], config.fields) >= pool_min_words][:pool_rows]
    columns = [*config.fields, "label"]
    out.mkdir(parents=True, exist_ok=True)
    for name, ids in (("labeled", [r["id"] for r in labeled]), ("heldout", held), ("pool", pool)):
        table = pa.table({c: [str(rows[i][c]) for i in ids] for c in columns})
        pacsv.write_csv(table if name != "pool" else table.drop(["label"]), out / f"{name}.csv")
        if name == "pool" and hidden_pool:
            pacsv.write_csv(table, out / "pool-hidden.csv")
    raw = yaml.safe_load((ROOT / "examples" / f"{example or dataset}.yaml").read_text())
    raw["name"] = f"{dataset}-heldout-{draw}"
    raw["data"] = {"root": str(out.resolve()), "labeled": {"path": "labeled.csv"},
                   "unlabeled": {"path": "pool.csv"}, "test": {"path": "heldout.csv"}}
    raw["tracking"] = {"mlflow_uri": f"sqlite:///{(out / 'mlflow.db').resolve()}", "experiment": "tuning",
                       "register": False}
    (out / "run.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return out / "run.yaml"


def draw_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments that say which held-out sets to write (``write_sets``) and where."""
    parser.add_argument("--dataset", choices=("sst2", "agnews"), required=True)
    parser.add_argument("--draw", type=int, required=True)
    parser.add_argument("--pool", type=int, default=2000)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--min-words", type=int, default=0, help="hold out rows of at least this many words")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    draw_arguments(parser)
    parser.add_argument("--pool-min-words", type=int, default=0, help="pool rows of at least this many words")
    parser.add_argument("--example", default=None, help="the run's config: examples/EXAMPLE.yaml (default: DATASET)")
    parser.add_argument("--set", action="append", default=[], dest="sets")
    args = parser.parse_args()
    config = write_sets(args.dataset, args.draw, args.pool, args.dir, args.min_words, args.pool_min_words,
                        args.example)
    overrides = [a for s in args.sets for a in ("--set", s)]
    subprocess.run([sys.executable, "-m", "flows.cli", "run", str(config), "--run-dir", str(args.dir / "run"),
                    *overrides], check=True, cwd=ROOT)
    print(stage_table(args.dir / "run"))


def stage_table(run_dir: Path) -> str:
    """The stage table of a finished run's ``summary.md``."""
    summary = (run_dir / "summary.md").read_text()
    return summary[summary.index("| stage |"):].split("\n\n")[0]


if __name__ == "__main__":
    main()
