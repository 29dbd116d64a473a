"""How good are `ipet suggest`'s label phrases? A cheap, honest proxy, measured on held-out TRAINING rows.

The proxy: the untrained (zero-shot) similarity ensemble's accuracy, every PVP weighed equally as the
flow's zero-shot stage weighs them, of the suggested PVPs against the hand-written ones of
``examples/{agnews,sst2}.yaml`` on the same rows. The rows are held out from the training side, never the
test sets: AG News rows 5,001-6,000 of ``ag_news.csv`` (the test set is rows 6,001-7,600), SST-2 1,000
rows of ``train.tsv`` (the test set is ``dev.tsv``), less the seed's labeled rows. They are also taken out
of the pool `ipet suggest` reads (its term counts and its pool sample), so it has not seen them at all.
The labeled rows are the config's own draw for ``data.seed`` = 0, 1, 2 (10 per class); the configs'
verbalizers are replaced by the bare label ids, as bench/accuracy.py's suggested units do.

    python bench/suggest_quality.py suggest --out new.json                 # this tree's `ipet suggest`
    python bench/suggest_quality.py suggest --out old.json --tree OLD_DIR  # another checkout's, to compare
    python bench/suggest_quality.py score new.json old.json                # the table (hand-written first)

Each scoring pass embeds the held-out rows once per pattern against every phrase at once, so it costs
one encoder pass per dataset and pattern. Run it niced: it is long on a shared CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ("agnews", "sst2")
SEEDS = (0, 1, 2)
HELD_OUT = 1000  # SST-2: rows of train.tsv drawn (fixed seed) and held out; AG News: rows 5,001-6,000
HELD_OUT_SEED = 1234


def config_of(dataset: str, seed: int):
    from flows.config import load_config

    return load_config(ROOT / "examples" / f"{dataset}.yaml", [f"data.seed={seed}"])


def words(row: dict, fields) -> int:
    """How many words a row has in its input fields (a held-out or pool row's length)."""
    return sum(len(str(row[f]).split()) for f in fields)


def held_out_ids(dataset: str, config, labeled_ids: set[str], min_words: int = 0) -> list[str]:
    """The held-out rows' ids (the readers number rows from 1): never the test set, never labeled.

    ``min_words`` > 0 draws ``HELD_OUT`` training rows of at least that many words in the input fields
    instead, with the same seed, for either dataset: SST-2's training side is mostly short phrases and its
    test set whole sentences, so gains on the default rows can come from phrases the test set lacks."""
    if dataset == "agnews" and not min_words:
        ids = [str(i) for i in range(5001, 6001)]
    else:
        from data.sources import read_source

        train = read_source(config.data.train, config.data.root)
        if min_words:
            everything = sorted(r["id"] for r in train.select(["id", *config.fields]).to_pylist()
                                if words(r, config.fields) >= min_words)
        else:
            everything = train["id"].to_pylist()
        ids = np.random.default_rng(HELD_OUT_SEED).choice(everything, min(HELD_OUT, len(everything)),
                                                          replace=False).tolist()
    return [i for i in ids if i not in labeled_ids]


def suggest_all(out: Path) -> None:
    """`ipet suggest` (its defaults, the config's patterns) on each dataset and seed, with the held-out
    rows taken out of the pool it reads; the PVPs and the wall time to ``out``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    import flows.suggest as command
    from data.prepare import load_sets

    found = {}
    for dataset in DATASETS:
        for seed in SEEDS:
            config = config_of(dataset, seed)
            config = config.model_copy(update={"verbalizer": {label: label for label in config.labels},
                                               "pvps": [p.model_copy(update={"verbalizer": None}) for p in config.pvps]})
            labeled = {r["id"] for r in load_sets(config.data, config.fields, config.labels)[0]["labeled"].to_pylist()}
            held = pa.array(held_out_ids(dataset, config, labeled))

            def without_held_out(data, fields, labels):
                sets, leaks = load_sets(data, fields, labels)
                return {**sets, "pool": sets["pool"].filter(pc.invert(pc.is_in(sets["pool"]["id"], held)))}, leaks

            started = time.time()
            with mock.patch.object(command, "load_sets", without_held_out):
                suggestions, _ = command.run_suggest(config)
            found[f"{dataset}/{seed}"] = {"seconds": round(time.time() - started, 1),
                                          **command.sections(suggestions)}
            print(dataset, seed, json.dumps(found[f"{dataset}/{seed}"]), flush=True)
    out.write_text(json.dumps(found, indent=1))


def phrases_of(verbalizer, labels) -> list[list[str]]:
    """Each label's phrases, in label order (a verbalizer value is a phrase or a list of them)."""
    return [[v] if isinstance(v, str) else list(v) for v in (verbalizer[label] for label in labels)]


def score(files: list[Path]) -> None:
    """The held-out accuracy of the hand-written PVPs and of each file's, per dataset and seed."""
    from data.prepare import load_sets
    from data.sources import read_source
    from prompt_core.label import predict_all
    from prompt_core.learners import LearnerSpec, SimilarityLearner, build_learner

    runs = {f.stem: json.loads(f.read_text()) for f in files}
    print("| dataset | seed | hand-written | " + " | ".join(runs) + " |\n|---|---:|---:|" + "---:|" * len(runs))
    for dataset in DATASETS:
        config = config_of(dataset, 0)
        hand = [{"pattern": p.pattern, "verbalizer": p.verbalizer} for p in config.pvps]
        every = [hand, *(run[f"{dataset}/{s}"]["pvps"] for run in runs.values() for s in SEEDS)]
        patterns = {p["pattern"] for pvps in every for p in pvps}
        phrases = sorted({t for pvps in every for p in pvps for ts in phrases_of(p["verbalizer"], config.labels)
                          for t in ts})
        train = read_source(config.data.train, config.data.root)
        rows = {r["id"]: r for r in train.to_pylist()}
        candidates = held_out_ids(dataset, config, set())
        encoder = build_learner(LearnerSpec("similarity", config.model, "{x}", config.labels,
                                            {l: [l] for l in config.labels}, max_length=config.max_length))
        cosines = {}
        for pattern in sorted(patterns):  # every held-out row against every phrase, once per pattern
            spec = LearnerSpec("similarity", config.model, pattern, tuple(map(str, range(len(phrases)))),
                               {str(i): [t] for i, t in enumerate(phrases)}, max_length=config.max_length,
                               temperature=config.similarity_temperature, pooling=encoder.spec.pooling)
            learner = SimilarityLearner(spec, encoder.model, encoder.tokenizer)
            cosines[pattern] = predict_all(learner, [rows[i] for i in candidates], batch_size=64)
        column = {t: i for i, t in enumerate(phrases)}

        def accuracy(pvps, seed: int) -> float:
            seeded = config_of(dataset, seed)
            labeled = {r["id"] for r in load_sets(seeded.data, seeded.fields, seeded.labels)[0]["labeled"].to_pylist()}
            keep = [k for k, i in enumerate(candidates) if i not in labeled]
            truth = np.array([config.labels.index(rows[candidates[k]]["label"]) for k in keep])
            logits = np.mean([np.stack([cosines[p["pattern"]][keep][:, [column[t] for t in ts]].mean(axis=1)
                                        for ts in phrases_of(p["verbalizer"], config.labels)], axis=1)
                              for p in pvps], axis=0)
            return float((logits.argmax(axis=1) == truth).mean())

        for seed in SEEDS:
            cells = [accuracy(run[f"{dataset}/{seed}"]["pvps"], seed) for run in runs.values()]
            print(f"| {dataset} | {seed} | {accuracy(hand, seed):.3f} | " + " | ".join(f"{c:.3f}" for c in cells)
                  + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    s = sub.add_parser("suggest", help="run `ipet suggest` for every dataset and seed; write the PVPs")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose `ipet suggest` to measure")
    c = sub.add_parser("score", help="the held-out table of the hand-written PVPs and of each file's")
    c.add_argument("files", type=Path, nargs="+")
    args = parser.parse_args()
    sys.path.insert(0, str(args.tree.resolve() if args.step == "suggest" else ROOT))
    suggest_all(args.out) if args.step == "suggest" else score(args.files)


if __name__ == "__main__":
    main()
