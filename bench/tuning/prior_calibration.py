"""Would calibrating the untrained similarity prior on the pool lift the zero-shot stage? Training rows only.

Zero-shot iPET starts from the untrained prior's pseudo-labels, and ``balance: pool`` estimates the pool's class
shares from its predicted marginals. A prior that favours a class (label phrases that sit nearer every text) skews
both. "Calibrate before use" (Zhao et al., 2021) removes such a bias without labels: each PVP's logits less the log
of its mean class probability over the pool, so that the pool's mean prediction is uniform. This script measures,
on the held-out TRAINING rows of ``heldout_run.py`` (draw 0; SST-2 with ``--min-words 10``, the sentence-length
proxy; AG News rows 5,001-6,000) and a 5,000-row pool of other training rows, never the test sets:

- each PVP's and the ensemble's accuracy and predicted class shares, raw and calibrated;
- for AG News, the same with the held-out rows and the pool thinned to an imbalanced 55/25/12/8 % and to the
  reverse, since calibration assumes classes equally common in the pool;
- calibration followed by an EM re-estimate of the pool's class prior (Saerens et al., 2002).

    python bench/tuning/prior_calibration.py --dir /tmp/calibration
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench" / "tuning"))

from heldout_run import write_sets  # noqa: E402

SHARES = {"balanced": (0.25, 0.25, 0.25, 0.25), "55/25/12/8": (0.55, 0.25, 0.12, 0.08),
          "8/12/25/55": (0.08, 0.12, 0.25, 0.55)}


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def prior_logits(dataset: str, out: Path) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, np.ndarray]:
    """Each PVP's untrained logits on the held-out rows and on the pool, and both sets' labels."""
    from flows.config import load_config
    from prompt_core.label import predict_all
    from prompt_core.learners import LearnerSpec, SimilarityLearner, build_learner

    config = load_config(write_sets(dataset, 0, 5000, out, min_words=10 if dataset == "sst2" else 0, hidden_pool=True))
    labels = [str(label) for label in config.labels]
    strings = pacsv.ConvertOptions(column_types={f: "string" for f in [*config.fields, "label"]})
    held = pacsv.read_csv(out / "heldout.csv", convert_options=strings).to_pylist()
    pool = pacsv.read_csv(out / "pool-hidden.csv", convert_options=strings).to_pylist()
    encoder, held_logits, pool_logits = None, [], []
    for pvp in config.pvps:
        phrases = {str(k): [v] if isinstance(v, str) else list(v) for k, v in (pvp.verbalizer or config.verbalizer).items()}
        spec = LearnerSpec("similarity", config.model, pvp.pattern, tuple(labels), phrases,
                           max_length=config.max_length, temperature=config.similarity_temperature)
        learner = encoder = build_learner(spec) if encoder is None else SimilarityLearner(spec, encoder.model, encoder.tokenizer)
        held_logits.append(predict_all(learner, held, batch_size=64))
        pool_logits.append(predict_all(learner, pool, batch_size=64))
    truth = lambda rows: np.array([labels.index(r["label"]) for r in rows])  # noqa: E731
    return held_logits, pool_logits, truth(held), truth(pool)


def em_prior(probs: np.ndarray, iterations: int = 100) -> np.ndarray:
    """The pool's class prior that EM finds for a classifier whose own prior is uniform (Saerens et al.)."""
    prior = np.full(probs.shape[1], 1 / probs.shape[1])
    for _ in range(iterations):
        q = probs * prior
        prior = (q / q.sum(axis=1, keepdims=True)).mean(axis=0)
    return prior


def report(name: str, held: list[np.ndarray], pool: list[np.ndarray], truth: np.ndarray) -> None:
    """One table row: raw, calibrated and calibrated + EM accuracy, and predicted class shares."""
    shares = lambda logits: np.bincount(logits.argmax(1), minlength=held[0].shape[1]) / len(logits)  # noqa: E731
    accuracy = lambda logits: float((logits.argmax(1) == truth).mean())  # noqa: E731
    offsets = [np.log(softmax(p).mean(axis=0)) for p in pool]
    raw = np.mean(held, axis=0)
    calibrated = np.mean([h - o for h, o in zip(held, offsets)], axis=0)
    prior = em_prior(softmax(np.mean([p - o for p, o in zip(pool, offsets)], axis=0)))
    print(f"| {name} | {len(truth)} / {len(pool[0])} | {np.round(np.bincount(truth) / len(truth), 2)} | "
          f"{accuracy(raw):.3f} {np.round(shares(raw), 2)} | {accuracy(calibrated):.3f} {np.round(shares(calibrated), 2)} | "
          f"{accuracy(calibrated + np.log(prior)):.3f} |", flush=True)
    for k, (h, o) in enumerate(zip(held, offsets)):
        print(f"|   PVP {k} | | | {accuracy(h):.3f} | {accuracy(h - o):.3f} | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args()
    print("| set | held-out / pool rows | true shares | raw (predicted shares) | calibrated (shares) | calibrated + EM |")
    print("|---|---|---|---|---|---:|")
    for dataset in ("sst2", "agnews"):
        held, pool, truth, pool_truth = prior_logits(dataset, args.dir / dataset)
        if dataset == "sst2":
            report("SST-2 sentence proxy", held, pool, truth)
            continue
        rng = np.random.default_rng(0)
        for name, share in SHARES.items():
            keep = lambda t: np.flatnonzero(rng.random(len(t)) < np.array(share)[t] / max(share))  # noqa: E731
            h, p = keep(truth), keep(pool_truth)
            report(f"AG News {name}", [x[h] for x in held], [x[p] for x in pool], truth[h])


if __name__ == "__main__":
    main()
