"""PET's stage on a GPU: the time and the accuracy of training and labeling in bf16 and float32.

Trains the 3 similarity PVPs of examples/agnews.yaml on its 40 labeled examples with the built-in
training defaults, labels the test set (1,600 rows) and the pool with each, and ensembles them as
PET does (weights: accuracy on the labeled set before training). Once per ``--runs`` entry
(``DEVICE:PRECISION``, ``:compile`` for ``train.compile``), through ``prompt_core`` alone: the GPU
machines lent to this project have torch and transformers but not Prefect or MLflow, so the flow
itself cannot run there. The same script on the CPU gives the reference it is compared with.

    python bench/gpu.py --prepare SETS                    # here: the sets and PVPs as parquet + JSON
    python bench/gpu.py --sets SETS --model DIR --runs cuda:bf16 cuda:fp32 --out gpu.json

bench/gpu-device.sh packs what the GPU machine lacks and runs this there, with tests/test_cuda.py.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

CONFIG = ROOT / "examples" / "agnews.yaml"


def prepare(out: Path, data_root: str) -> None:
    """Write labeled, pool and test parquet and the run's PVPs (``plan.json``), as a run would draw them."""
    import pyarrow as pa

    from data.prepare import load_sets
    from flows.config import load_config

    config = load_config(CONFIG, [f"data.root={data_root}"])
    sets, _ = load_sets(config.data, config.fields, config.labels)
    out.mkdir(parents=True, exist_ok=True)
    for name, table in sets.items():
        pq.write_table(table if isinstance(table, pa.Table) else pa.Table.from_pylist(table), out / f"{name}.parquet")
    plan = {"labels": list(config.labels), "max_length": config.max_length,
            "temperature": config.similarity_temperature,
            "pvps": [config.pvp(i).to_dict() for i in range(len(config.pvps))]}
    (out / "plan.json").write_text(json.dumps(plan, indent=1))


def timed(fn, device: str):
    """``fn()``'s result and its wall seconds, the GPU's queue drained at both ends."""
    import torch

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    started = time.perf_counter()
    result = fn()
    sync()
    return result, time.perf_counter() - started


def measure(sets: Path, model: str, run: str) -> dict:
    """One ``DEVICE:PRECISION[:compile]`` run: each PVP trained, the test set and the pool labeled."""
    import torch

    from prompt_core import (PVP, SimilarityLearner, Template, TrainConfig, Verbalizer, accuracy, build_learner, ensemble,
                             predict_all, train)
    from prompt_core.label import auto_batch_size

    device, precision, *flags = run.split(":")
    plan = json.loads((sets / "plan.json").read_text())
    index = {label: i for i, label in enumerate(plan["labels"])}
    rows = {name: pq.read_table(sets / f"{name}.parquet").to_pylist() for name in ("labeled", "pool", "test")}
    gold = [index[r["label"]] for r in rows["labeled"]]
    truth = [index[r["label"]] for r in rows["test"]]
    config = TrainConfig(device=device, precision=precision, compile="compile" in flags)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    models, weights, test_logits = [], [], []
    for i, pvp in enumerate(plan["pvps"]):
        pvp = PVP(Template(pvp["pattern"]), Verbalizer(pvp["verbalizer"]))  # any phrase: not cloze's from_dict
        spec = SimilarityLearner.spec_for(model, pvp, temperature=plan["temperature"],
                                          max_length=plan["max_length"])
        learner = build_learner(spec)
        label = dict(device=device, precision=precision, batch_size="auto")
        weights.append(accuracy(predict_all(learner, rows["labeled"], **label), gold))
        result, train_s = timed(lambda: train(learner, rows["labeled"], gold, config, progress=False), device)
        test, test_s = timed(lambda: predict_all(learner, rows["test"], **label), device)
        _, pool_s = timed(lambda: predict_all(learner, rows["pool"], **label), device)
        models.append({"pvp": i, "steps": result.steps, "final_loss": round(result.final_loss, 4),
                       "train_s": round(train_s, 2), "test_accuracy": round(accuracy(test, truth), 4),
                       "label_test_s": round(test_s, 2), "label_pool_s": round(pool_s, 2),
                       "pool_rows_per_s": round(len(rows["pool"]) / pool_s),
                       "batch_size": auto_batch_size(learner, torch.device(device))})
        test_logits.append(test)
        print(run, models[-1], flush=True)
    return {"run": run, "models": models, "weights": [round(w, 4) for w in weights],
            "pet_test_accuracy": round(accuracy(ensemble(test_logits, weights), truth), 4),
            "pool_rows": len(rows["pool"]), "test_rows": len(rows["test"]),
            "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20) if device.startswith("cuda") else None,
            "test_predictions": [t.argmax(1).tolist() for t in test_logits]}


def machine() -> dict:
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepare", type=Path, help="write the sets here and stop")
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--sets", type=Path)
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--runs", nargs="+", default=["cuda:bf16", "cuda:fp32"])
    parser.add_argument("--out", type=Path, default=Path("gpu.json"))
    args = parser.parse_args()
    if args.prepare:
        return prepare(args.prepare, args.data_root)
    if args.sets is None:
        parser.error("give --sets (written by --prepare) or --prepare")
    results = {"machine": machine(), "runs": []}
    for run in args.runs:
        results["runs"].append(measure(args.sets, args.model, run))
        args.out.write_text(json.dumps(results))  # what finished survives a run cut short
        print(run, "PET test accuracy", results["runs"][-1]["pet_test_accuracy"], flush=True)


if __name__ == "__main__":
    main()
