"""Does labeling a big pool stay flat in memory? 10k, 100k and 1M synthetic texts, measured.

Writes a synthetic pool to parquet, then labels it with a tiny BERT on the CPU through the
pipeline's own code (``tasks.models.label_set``: parquet streamed in chunks, one task per shard of
``--shard-rows`` rows, one parquet per shard) and selects from the shards as iPET does
(``tasks.pseudo.build_train_set``: two streamed passes over pool and logits). Labeling and
selection each run in a fresh subprocess per size, and so does the final distillation (the pool
soft-labeled by ``combine``, a classifier trained on it); "RSS before" is the process after its imports,
the peak is its high-water mark (VmHWM).
The model is tiny on purpose (hidden 32, 2 layers, 16 tokens): what is measured is how time and
memory grow with the pool, not model quality.

``--generation`` measures instead what ``train.peft`` saves when a generation's 3 PVP models label
the pool: 3 whole MiniLM similarity learners, as 3 labeling tasks of the thread runner (each loads
its model, then waits for the device), against 3 LoRA adapters labeling in one task through one
shared MiniLM (``load_learners``). Each in a fresh subprocess; peak RSS as above.

    python bench/scale.py [--sizes 10000 100000 1000000] [--shard-rows 100000] [--batch-size 256]
    python bench/scale.py --generation [--sizes 2000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

WORDS_PER_TEXT = 8
MAX_LENGTH = 16
PATTERN, VERBALIZER = "{text} it was {mask} .", {"neg": "bad", "pos": "great"}
DISTILL_STEPS = 20
ENCODER = "sentence-transformers/all-MiniLM-L6-v2"  # the packaged MiniLM, as in examples/agnews.yaml
GENERATION_PVPS = ("{text}", "News: {text}", "{text} What is this about?")


def status_mib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process, in MiB. Not ``getrusage``'s ru_maxrss: that one
    keeps the high-water mark of the parent it was forked from across exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_rss_mib() -> float:
    return status_mib("VmHWM")


def cpu_seconds() -> float:
    """This process's user + system CPU time: what the work costs, whatever else the machine runs."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def write_pool(path: Path, rows: int, batch: int = 100_000) -> None:
    """Random sentences over the tiny model's words, ``batch`` rows per row group."""
    from tiny import WORDS

    rng = np.random.default_rng(0)
    words = np.array(WORDS)
    with pq.ParquetWriter(path, pa.schema([("id", pa.string()), ("text", pa.string())])) as writer:
        for start in range(0, rows, batch):
            n = min(batch, rows - start)
            picks = words[rng.integers(0, len(words), size=(n, WORDS_PER_TEXT))]
            writer.write_table(pa.table({"id": [f"u{i}" for i in range(start, start + n)],
                                         "text": [" ".join(p) for p in picks]}))


def setup(work: Path) -> Path:
    """A tiny BERT as an untrained cloze learner, and an 8-row gold set."""
    from tiny import save_tiny

    from prompt_core import PVP, LearnerSpec, Pattern, Verbalizer
    from tasks.models import untrained_model

    backbone = save_tiny("bert", work / "tiny-bert")
    spec = LearnerSpec.cloze(str(backbone), PVP(Pattern(PATTERN), Verbalizer(VERBALIZER)), max_length=MAX_LENGTH)
    pq.write_table(pa.table({"id": [f"g{i}" for i in range(8)], "text": ["the film was great"] * 4 + ["it was bad"] * 4,
                             "label": ["pos"] * 4 + ["neg"] * 4}), work / "labeled.parquet")
    return Path(untrained_model("tiny", spec, str(work / "run")))


def label(args: argparse.Namespace) -> dict:
    """One size: every shard labeled in turn, as one Ray or thread worker would label its own."""
    import torch
    from prefect.logging import disable_run_logger

    from data.parquet import num_rows, shard_count
    from prompt_core import LabelingConfig
    from tasks.models import label_set

    torch.set_num_threads(1)
    pool, shards = str(args.work / f"pool-{args.size}.parquet"), shard_count(args.size, args.shard_rows)
    before, cpu = status_mib("VmRSS"), cpu_seconds()
    started = time.perf_counter()
    with disable_run_logger():
        for shard in range(shards):
            out = label_set.fn({"tiny": str(args.model)}, f"pool{args.size}", pool, str(args.work / "run"),
                               LabelingConfig(batch_size=args.batch_size, shard_rows=args.shard_rows), shard)["tiny"]
    seconds = time.perf_counter() - started
    assert num_rows(pool) == args.size
    return {"shards": shards, "seconds": seconds, "cpu_seconds": cpu_seconds() - cpu, "rss_before": before, "peak_rss": peak_rss_mib(),
            "logits": out["path"]}


def select(args: argparse.Namespace) -> dict:
    """iPET's selection from the shards: two peers (the same logits twice), all of them combined."""
    from prefect.logging import disable_run_logger

    from prompt_core import IpetConfig
    from tasks.pseudo import build_train_set

    ipet = IpetConfig(peer_fraction=1.0, growth=500)  # 8·500 = 4000 rows drawn
    before = status_mib("VmRSS")
    started = time.perf_counter()
    with disable_run_logger():
        out = build_train_set.fn(f"select{args.size}", 1, str(args.work / "labeled.parquet"),
                                 str(args.work / f"pool-{args.size}.parquet"), [args.logits, args.logits], [1.0, 1.0],
                                 list(VERBALIZER), ipet, 0, str(args.work / "run"))
    return {"seconds": time.perf_counter() - started, "rss_before": before, "peak_rss": peak_rss_mib(),
            "selected": out["pseudo_size"]}


def distill(args: argparse.Namespace) -> dict:
    """The final distillation: the pool with soft labels (``combine``, streamed), then a sequence
    classifier trained on all of it (``train_model``) for ``DISTILL_STEPS`` steps."""
    import torch
    from mlflow.tracking import MlflowClient
    from prefect.logging import disable_run_logger

    from prompt_core import LearnerSpec, TrainConfig
    from tasks.models import train_model
    from tasks.ensembles import combine
    from tasks.tracking import TrackedRun

    torch.set_num_threads(1)
    run, uri = str(args.work / "run"), f"sqlite:///{args.work / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("scale") or client.get_experiment(client.create_experiment("scale"))
    parent = client.create_run(experiment.experiment_id).info.run_id
    spec = LearnerSpec.classifier(str(args.work / "tiny-bert"), "{text}", list(VERBALIZER), max_length=MAX_LENGTH)
    config = TrainConfig(max_steps=DISTILL_STEPS, batch_size=32, device="cpu")
    before = status_mib("VmRSS")
    started = time.perf_counter()
    with disable_run_logger():
        soft = combine.fn(f"soft{args.size}", [args.logits], None, str(args.work / f"pool-{args.size}.parquet"),
                          list(VERBALIZER), run)
        out = train_model.fn(f"distill{args.size}", spec, soft["path"], config, run, TrackedRun(uri, parent))
    assert out["train_size"] == args.size and not out["reused"]
    return {"seconds": time.perf_counter() - started, "rss_before": before, "peak_rss": peak_rss_mib()}


def setup_generation(work: Path) -> None:
    """A generation's 3 PVP models on MiniLM, saved whole (``full/``) and as LoRA adapters (``lora/``)."""
    from prompt_core import LearnerSpec, PeftSettings, build_learner

    for p, template in enumerate(GENERATION_PVPS):
        spec = LearnerSpec("similarity", ENCODER, template, tuple(VERBALIZER), {k: [v] for k, v in VERBALIZER.items()},
                           max_length=MAX_LENGTH, temperature=0.05)
        for kind in ("full", "lora"):
            learner = build_learner(spec)
            if kind == "lora":
                learner.add_adapter(PeftSettings(method="lora"))  # untrained: its B is 0, its size and cost the same
            learner.save(work / kind / f"p{p}")


def generation(args: argparse.Namespace) -> dict:
    """The pool labeled by the 3 models of ``args.kind``: whole models in 3 concurrent tasks sharing
    one CPU slot (as the thread runner runs them), or adapters in one task on one backbone."""
    from concurrent.futures import ThreadPoolExecutor

    import torch
    from prefect.logging import disable_run_logger

    from prompt_core import LabelingConfig
    from tasks import devices
    from tasks.models import label_set

    torch.set_num_threads(1)
    devices.configure("cpu", 1)
    models = {d.name: str(d) for d in sorted((args.work / args.kind).iterdir())}
    pool, labeling = str(args.work / f"pool-{args.size}.parquet"), LabelingConfig(batch_size=args.batch_size)
    run = str(args.work / f"run-{args.kind}")
    before = status_mib("VmRSS")
    started = time.perf_counter()
    with disable_run_logger():
        if args.kind == "full":
            with ThreadPoolExecutor(len(models)) as threads:
                list(threads.map(lambda name: label_set.fn({name: models[name]}, "pool", pool, run, labeling), models))
        else:
            label_set.fn(models, "pool", pool, run, labeling)
    return {"seconds": time.perf_counter() - started, "rss_before": before, "peak_rss": peak_rss_mib()}


def measure_generation(args: argparse.Namespace) -> None:
    """``--generation``: the table of whole models against adapters on one backbone, per pool size."""
    setup_generation(args.work)
    print(f"MiniLM-L6 similarity learners, 3 PVPs, max_length {MAX_LENGTH}, batch {args.batch_size}, "
          "1 torch thread, CPU\n")
    print("| texts | models | labeling tasks | s | RSS before MiB | peak RSS MiB |")
    print("|---:|---|---:|---:|---:|---:|")
    for size in args.sizes:
        args.size = size
        if not (args.work / f"pool-{size}.parquet").exists():
            write_pool(args.work / f"pool-{size}.parquet", size)
        for kind, what, tasks in (("full", "3 whole models", 3), ("lora", "3 LoRA adapters, 1 backbone", 1)):
            out = in_subprocess("generation", args, kind=kind)
            print(f"| {size:,} | {what} | {tasks} | {out['seconds']:.1f} | {out['rss_before']:.0f} | "
                  f"{out['peak_rss']:.0f} |", flush=True)


def in_subprocess(step: str, args: argparse.Namespace, **extra) -> dict:
    cmd = [sys.executable, __file__, "--step", step, "--work", str(args.work), "--size", str(args.size),
           "--shard-rows", str(args.shard_rows), "--batch-size", str(args.batch_size), "--model", str(args.model)]
    cmd += [x for k, v in extra.items() for x in (f"--{k}", str(v))]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", help="default: 10000 100000 1000000; with --generation 2000")
    parser.add_argument("--shard-rows", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--work", type=Path, help="keep data and outputs here (default: a temporary directory)")
    parser.add_argument("--generation", action="store_true", help="a generation's 3 PVP models as whole models "
                                                                   "against LoRA adapters on one backbone")
    parser.add_argument("--step", choices=["label", "select", "distill", "generation"], help=argparse.SUPPRESS)
    parser.add_argument("--kind", choices=["full", "lora"], help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--logits", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.sizes = args.sizes or ([2000] if args.generation else [10_000, 100_000, 1_000_000])
    if args.step:
        print(json.dumps({"label": label, "select": select, "distill": distill, "generation": generation}[args.step](args)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        args.work = args.work or Path(tmp)
        args.work.mkdir(parents=True, exist_ok=True)
        if args.generation:
            measure_generation(args)
            return
        args.model = setup(args.work)
        print(f"tiny BERT (hidden 32, 2 layers), max_length {MAX_LENGTH}, batch {args.batch_size}, "
              f"shards of {args.shard_rows} rows, 1 torch thread, CPU\n")
        print("| texts | shards | label s | label CPU s | rows/s | label RSS before MiB | label peak RSS MiB | select s | "
              f"select RSS before MiB | select peak RSS MiB | distill ({DISTILL_STEPS} steps) s | "
              "distill RSS before MiB | distill peak RSS MiB |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for size in args.sizes:
            args.size = size
            pool = args.work / f"pool-{size}.parquet"
            if not pool.exists():
                write_pool(pool, size)
            lab = in_subprocess("label", args)
            sel = in_subprocess("select", args, logits=lab["logits"])
            dis = in_subprocess("distill", args, logits=lab["logits"])
            print(f"| {size:,} | {lab['shards']} | {lab['seconds']:.1f} | {lab['cpu_seconds']:.1f} | {size / lab['seconds']:,.0f} | "
                  f"{lab['rss_before']:.0f} | {lab['peak_rss']:.0f} | {sel['seconds']:.1f} | {sel['rss_before']:.0f} | "
                  f"{sel['peak_rss']:.0f} | {dis['seconds']:.1f} | {dis['rss_before']:.0f} | {dis['peak_rss']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
