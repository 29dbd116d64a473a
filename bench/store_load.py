"""How a run's data preparation grows with a dataset store's versions and rows.

Builds dataset stores with ``ipet ingest`` (the CLI, one process per file, as a user does): ``many``, a
40-row gold set and then ``--versions`` pool files of ``--rows`` rows each (one version each), and ``big``,
the same gold set and one pool file of ``--big`` rows. Each is also copied as an ``earlier`` store: the same
files with the segments' ``reader`` left out of every manifest, as an ipet before ``READER`` 2 wrote them, so
the check for rows its typing reader may have changed (``Version.typed_fields``) has every segment to look at.

Then, per store and in a fresh process each, with no typed record yet (``typed/``, removed first): ``load_sets``
(what ``ipet validate`` and ``ipet run``'s checks read) ``--loads`` times: the first load's seconds and parquet
reads, the median seconds (wall and CPU, all threads) and the most reads of the later ones; and ``ipet validate``
end to end (a tiny BERT, so the model check costs only torch's import). A text of synthetic words: no field is
numbers only, so no warning is printed.

    python bench/store_load.py [--out /tmp/store-load] [--versions 50] [--rows 2000] [--big 200000]
                               [--loads 6] [--stores NAME ...] [--no-validate] [--code DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

IPET = [sys.executable, "-c", "from flows.cli import main; main()"]
WORDS = [f"w{i}" for i in range(3000)]
GOLD_PER_LABEL = 20


def texts(rng: random.Random, start: int, n: int) -> list[list[str]]:
    """``n`` unique rows (the row number is a word of each), 20 words each, labels neg/pos."""
    return [[f"n{start + i} " + " ".join(rng.choices(WORDS, k=20)), "pos" if (start + i) % 2 else "neg"]
            for i in range(n)]


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([["text", "label"], *rows])
    return path


def ingest(out: Path, file: Path, dataset: str, *extra: str) -> None:
    subprocess.run([*IPET, "ingest", str(file), "--dataset", dataset, "--store", str(out / "stores"), *extra],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL, env=ENV)


def build(out: Path, versions: int, rows: int, big: int) -> None:
    """The config (tiny BERT, the test set) and both stores, each with its ``earlier`` copy."""
    from tiny import save_tiny

    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    test = write_csv(out / "test.csv", texts(rng, 10**9, 1600))
    gold = write_csv(out / "gold.csv", texts(rng, 10**8, 2 * GOLD_PER_LABEL))
    model = str(save_tiny("bert", out / "tiny-bert"))
    for dataset in ("many", "big"):
        config = out / f"{dataset}.yaml"
        config.write_text(json.dumps({
            "model": model, "max_length": 32, "verbalizer": {"neg": "bad", "pos": "great"},
            "pvps": [{"pattern": "{text} it was {mask} ."}, {"pattern": "{mask} : {text}"}],
            "data": {"root": str(out), "labeled": {"store": "stores", "dataset": dataset},
                     "unlabeled": {"store": "stores", "dataset": dataset}, "test": {"path": test.name},
                     "pool_size": 400},
            "tracking": {"mlflow_uri": f"sqlite:///{out / 'mlflow.db'}"}}))
        ingest(out, gold, dataset, "--labeled", "--config", str(config))
    for v in range(versions):
        ingest(out, write_csv(out / "pool.csv", texts(rng, v * rows, rows)), "many")
    ingest(out, write_csv(out / "pool.csv", texts(rng, 0, big)), "big")
    for dataset in ("many", "big"):
        earlier = out / "stores" / f"{dataset}-earlier"
        shutil.copytree(out / "stores" / dataset, earlier)
        for manifest in (earlier / "versions").glob("*.json"):
            record = json.loads(manifest.read_text())
            for segment in (s for kind in record["segments"].values() for s in kind):
                del segment["reader"]
            manifest.write_text(json.dumps(record))
        config = json.loads((out / f"{dataset}.yaml").read_text())
        for slot in ("labeled", "unlabeled"):
            config["data"][slot]["dataset"] = earlier.name
        (out / f"{earlier.name}.yaml").write_text(json.dumps(config))


LOAD = """
import statistics, sys, time
import pyarrow.parquet as pq
from flows.config import load_config
from data.prepare import load_sets
config = load_config(sys.argv[1], [])
reads, read_table = [], pq.read_table
pq.read_table = lambda *args, **kwargs: reads.append(args[0]) or read_table(*args, **kwargs)
seconds, cpu, counts = [], [], []
for _ in range(int(sys.argv[2])):
    reads.clear()
    start, start_cpu = time.perf_counter(), time.process_time()
    load_sets(config.data, config.fields, config.labels)
    seconds.append(time.perf_counter() - start)
    cpu.append(time.process_time() - start_cpu)
    counts.append(len(reads))
print(f"{seconds[0]:.2f} {counts[0]} {statistics.median(seconds[1:]):.2f} {statistics.median(cpu[1:]):.2f} "
      f"{max(counts[1:])}")
"""


def measure(out: Path, code: Path, loads: int, stores: list[str], validate: bool) -> dict:
    """Per store, with the code under ``code`` and no typed record yet, ``loads`` loads in one process: the first
    one's seconds and parquet reads, the median wall and CPU seconds of the others and their most reads; then
    ``ipet validate``'s wall seconds."""
    env = {**ENV, "PYTHONPATH": str(code)}
    for records in (out / "stores").glob("*/typed"):
        shutil.rmtree(records)
    found = {}
    for name in stores:
        config = str(out / f"{name}.yaml")
        first_s, first_reads, later_s, later_cpu_s, later_reads = subprocess.run(
            [sys.executable, "-c", LOAD, config, str(loads)], cwd=code, env=env, check=True, capture_output=True,
            text=True).stdout.split()
        start = time.perf_counter()
        if validate:
            subprocess.run([*IPET, "validate", config], cwd=code, env=env, check=True, stdout=subprocess.DEVNULL)
        found[name] = {"first_s": float(first_s), "first_reads": int(first_reads), "later_s": float(later_s),
                       "later_cpu_s": float(later_cpu_s), "later_reads": int(later_reads),
                       "validate_s": round(time.perf_counter() - start, 2) if validate else None}
        print(name, found[name], flush=True)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/store-load"))
    parser.add_argument("--versions", type=int, default=50)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--big", type=int, default=200_000)
    parser.add_argument("--loads", type=int, default=6, help="loads per store in one process")
    parser.add_argument("--stores", nargs="+", default=["many", "many-earlier", "big", "big-earlier"])
    parser.add_argument("--no-validate", dest="validate", action="store_false", help="time the loads only")
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout whose code is measured (another "
                        "worktree: the code before a change)")
    args = parser.parse_args()
    if not (args.out / "stores").exists():
        start = time.perf_counter()
        build(args.out, args.versions, args.rows, args.big)
        print(f"built in {time.perf_counter() - start:.0f} s", flush=True)
    measure(args.out, args.code.resolve(), args.loads, args.stores, args.validate)


if __name__ == "__main__":
    main()
