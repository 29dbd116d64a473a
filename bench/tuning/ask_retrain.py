"""Issue #17 on held-out TRAINING rows: asked rows used from PET on, not only by the stages after it.

In the flow, the rows a person answers after PET join the gold set of the generations after it; PET itself,
whose ensemble labels the pool for generation 1, keeps the models that never saw them. The 3-seed bench found
disagreement only 0.3 (AG News) and 0.6 (SST-2) points above random, its gain at ipet-1 fading by the final
model. This asks whether the answers count for more when PET is trained again with them, as an active-learning
loop retrains the model that chose its questions. For one labeled draw (``heldout_run.write_sets``: the draw's
labeled rows, held-out training rows as the test set, a pool of other training rows):

1. ``ipet run`` with ``ask.after=pet ask.rows=20 ask.strategy=S`` for S = disagreement, then random (the second
   in a copy of the first's run directory, so both ask the same PET models); each stops after PET, as a run
   without a server does, with its request in ``RUN_DIR/ask``;
2. an oracle answers every asked row with the pool row's hidden label;
3. per strategy, the whole flow from scratch on a grown gold set (the draw's rows and the 20 answered ones; the
   pool less those rows): PET trains on them, and everything after it as usual.

Prints each strategy's stage table. The test set is never read here: the held-out rows are training rows.
``--control`` then runs the flow as it is for comparison: in each strategy's stopped run directory, the oracle's
answers recorded as ``ipet answer`` records a sheet (``data.answers.apply_answers``) and the run again, so only the
generations after PET learn them. ``--arm NAME --ask k=v ...`` (after ``--control``) runs one more arm of it with
other ask settings: the disagreement run's zero-shot and PET models copied (the same PET asks), its own pick
answered by the oracle, the run again.

    python bench/tuning/ask_retrain.py --dataset agnews --draw 0 --dir /work/ho/ask-agnews-d0
    python bench/tuning/ask_retrain.py --dataset agnews --draw 0 --dir /work/ho/ask-agnews-d0 --control
    python bench/tuning/ask_retrain.py --dataset agnews --draw 0 --dir /work/ho/ask-agnews-d0 --arm margin \
        --ask ask.strategy=uncertainty
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench" / "tuning"))

from heldout_run import draw_arguments, stage_table, write_sets  # noqa: E402

from data.answers import apply_answers  # noqa: E402  (heldout_run puts the project on the path)

STRATEGIES = ("disagreement", "random")


def asking(strategy: str) -> tuple[str, ...]:
    """The overrides of a run that stops after PET to ask for 20 rows by ``strategy``."""
    return "ask.after=pet", "ask.rows=20", f"ask.strategy={strategy}"


def replaced(overrides: tuple[str, ...], by: list[str]) -> tuple[str, ...]:
    """``k=v`` ``overrides`` with those of ``by`` in place of any of the same key (``ipet run`` refuses a
    ``--set`` key given twice)."""
    settings = dict(o.split("=", 1) for o in [*overrides, *by])
    return tuple(f"{k}={v}" for k, v in settings.items())


def row_key(row: dict, fields: list[str]) -> tuple[str, ...]:
    """A pool row by its text fields: how the oracle finds a request's row among the hidden labels."""
    return tuple(row[f] for f in fields)


def start_flow(config: Path, run_dir: Path, *overrides: str) -> subprocess.Popen:
    """``ipet run`` in its own process, with its own Prefect home (two temporary servers must not share one)."""
    sets = [a for s in overrides for a in ("--set", s)]
    env = {**os.environ, "PREFECT_HOME": str(run_dir.with_name(run_dir.name + ".prefect"))}
    return subprocess.Popen([sys.executable, "-m", "flows.cli", "run", str(config), "--run-dir", str(run_dir), *sets],
                            cwd=ROOT, env=env)


def run_flows(*flows: subprocess.Popen) -> None:
    if any(f.wait() for f in flows):
        raise SystemExit("a flow run failed")


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def request_of(run_dir: Path) -> dict:
    """The one request a stopped run left in ``RUN_DIR/ask`` (its ``rows``: id, fields, guess, confidence)."""
    requests = [p for p in (run_dir / "ask").glob("*.json") if not p.name.endswith("-answers.json")]
    if len(requests) != 1:
        raise SystemExit(f"{run_dir}/ask: expected one request, found {len(requests)}")
    return json.loads(requests[0].read_text())


def grown_sets(base: Path, out: Path, asked: list[dict], fields: list[str], hidden: dict[tuple, str]) -> Path:
    """``out``: the base sets with the asked rows moved from the pool to the gold set, labeled by the oracle."""
    out.mkdir(parents=True, exist_ok=True)
    asked_keys = {row_key(r, fields) for r in asked}
    answered = [{**{f: r[f] for f in fields}, "label": hidden[row_key(r, fields)]} for r in asked]
    write_csv(out / "labeled.csv", read_csv(base / "labeled.csv") + answered, [*fields, "label"])
    pool = [r for r in read_csv(base / "pool.csv") if row_key(r, fields) not in asked_keys]
    write_csv(out / "pool.csv", pool, fields)
    shutil.copy(base / "heldout.csv", out / "heldout.csv")
    raw = yaml.safe_load((base / "run.yaml").read_text())
    raw["data"]["root"] = str(out.resolve())
    raw["tracking"]["mlflow_uri"] = f"sqlite:///{(out / 'mlflow.db').resolve()}"
    (out / "run.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    print(f"{out.name}: {len(answered)} asked rows, oracle labels {sorted(a['label'] for a in answered)}; "
          f"pool {len(pool)} rows; the PET ensemble's guess was wrong on "
          f"{sum(r['guess'] != hidden[row_key(r, fields)] for r in asked)}")
    return out / "run.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    draw_arguments(parser)
    parser.add_argument("--parallel", action="store_true", help="the strategies' runs at once, a process each")
    parser.add_argument("--control", action="store_true", help="only the flow as it is, answers after PET "
                                                               "(after a run without it)")
    parser.add_argument("--arm", help="one more arm of the control, named: the flow as it is with --ask's settings")
    parser.add_argument("--ask", nargs="+", default=[], metavar="K=V", help="the arm's ask settings, after the "
                                                                             "disagreement run's")
    args = parser.parse_args()
    base = args.dir / "base"
    config = write_sets(args.dataset, args.draw, args.pool, base, args.min_words, hidden_pool=True)
    fields = list(read_csv(base / "pool.csv")[0])  # the config's input fields: the pool's columns
    hidden = {row_key(r, fields): r["label"] for r in read_csv(base / "pool-hidden.csv")}
    if args.arm:
        return arm(args.dir, config, fields, hidden, args.arm, replaced(asking(STRATEGIES[0]), args.ask))
    if args.control:
        return control(args.dir, config, fields, hidden, args.parallel)
    asks = {}
    for i, strategy in enumerate(STRATEGIES):
        run_dir = args.dir / f"ask-{strategy}"
        if i and not run_dir.exists():
            copy_pet(args.dir, run_dir)
        run_flows(start_flow(config, run_dir, *asking(strategy)))
        asks[strategy] = grown_sets(base, args.dir / f"data-{strategy}", request_of(run_dir)["rows"], fields, hidden)
    run_all([(asks[s], args.dir / f"run-{s}", ()) for s in STRATEGIES], args.parallel)
    for s in STRATEGIES:
        print_stages(f"{s}: PET trained with the 20 answers", args.dir / f"run-{s}")


def copy_pet(out: Path, run_dir: Path) -> None:
    """The disagreement run's zero-shot and PET stages into ``run_dir``, so the same PET models ask there; not
    its request, nor the later stages (after ``--control`` they learned its answers)."""
    shutil.copytree(out / f"ask-{STRATEGIES[0]}", run_dir,
                    ignore=shutil.ignore_patterns("ask", "g[1-9]*", "final*", "results.json", "summary.md"))


def answer_as_oracle(run_dir: Path, fields: list[str], hidden: dict[tuple, str]) -> None:
    """The stopped run's request answered with the pool rows' hidden labels, as ``ipet answer`` records a sheet."""
    request = request_of(run_dir)
    apply_answers(request, {r["id"]: hidden[row_key(r, fields)] for r in request["rows"]}, str(run_dir),
                  "oracle: the pool's hidden labels")


def control(out: Path, config: Path, fields: list[str], hidden: dict[tuple, str], parallel: bool) -> None:
    """The flow as it is: each stopped run's request answered by the oracle and the run again."""
    for s in STRATEGIES:
        answer_as_oracle(out / f"ask-{s}", fields, hidden)
    run_all([(config, out / f"ask-{s}", asking(s)) for s in STRATEGIES], parallel)
    for s in STRATEGIES:
        print_stages(f"{s}: the flow as it is (answers from ipet-1 on)", out / f"ask-{s}")


def arm(out: Path, config: Path, fields: list[str], hidden: dict[tuple, str], name: str,
        overrides: tuple[str, ...]) -> None:
    """The flow as it is with ``overrides`` as its ask settings, asked by the disagreement run's PET models."""
    run_dir = out / f"ask-{name}"
    if not run_dir.exists():
        copy_pet(out, run_dir)
    run_flows(start_flow(config, run_dir, *overrides))
    answer_as_oracle(run_dir, fields, hidden)
    run_flows(start_flow(config, run_dir, *overrides))
    print_stages(f"{name} ({' '.join(overrides)}): the flow as it is (answers from ipet-1 on)", run_dir)


def run_all(runs: list[tuple[Path, Path, tuple[str, ...]]], parallel: bool) -> None:
    if parallel:
        run_flows(*(start_flow(c, d, *o) for c, d, o in runs))
    else:
        for c, d, o in runs:
            run_flows(start_flow(c, d, *o))


def print_stages(title: str, run_dir: Path) -> None:
    print(f"\n{title}\n{stage_table(run_dir)}")


if __name__ == "__main__":
    main()
