"""What the rows asked for after PET were, in the bench's `similarity-ask-*` units (issue #17): how
often the ensemble's guess on an asked row was wrong (a wrong guess is a label the gold set would
not otherwise have learned), its mean confidence, and the spread of the answers over the classes.

    python bench/ask_picks.py bench/runs            # every <dataset>-similarity-ask-<strategy>-s<seed>

Reads each run directory's `ask/<stage>.json` (the picked rows and the ensemble's guesses) and its
`-answers.json` (the oracle's labels); prints one markdown row per run directory.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path


def picks(run_dir: Path) -> dict | None:
    """The asked rows of ``run_dir`` with their guess and answer, or None before anything was answered."""
    answers = sorted(run_dir.glob("ask/*-answers.json"))
    if not answers:
        return None
    asked = json.loads(answers[-1].with_name(answers[-1].name.replace("-answers", "")).read_text())
    answered = {r["id"]: r["label"] for r in json.loads(answers[-1].read_text())["rows"]}
    rows = [{**r, "answer": answered.get(r["id"])} for r in asked["rows"]]
    wrong = sum(r["guess"] != r["answer"] for r in rows if r["answer"] is not None)
    return {"strategy": asked["strategy"], "asked": len(rows), "answered": len(answered), "wrong": wrong,
            "confidence": sum(r["confidence"] for r in rows) / len(rows),
            "answers": dict(sorted(Counter(r["answer"] for r in rows).items()))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_root", type=Path, help="the bench's --run-dir")
    args = p.parse_args()
    print("| run | strategy | asked | guess wrong | mean confidence | answers per class |\n|---|---|---|---|---|---|")
    for run_dir in sorted(args.run_root.glob("*-similarity-ask-*-s*")):
        found = picks(run_dir)
        if found:
            print(f"| {run_dir.name} | {found['strategy']} | {found['asked']} | {found['wrong']} | "
                  f"{found['confidence']:.3f} | {found['answers']} |")


if __name__ == "__main__":
    main()
