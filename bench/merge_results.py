"""Merge the rows of later `bench/accuracy.py` runs into one results file, and print its checks.

Rows measured by separate commands (the adapter rows of #14, the asked rows of #17) belong in the table of
record, ``bench/results.json``, beside the rows they are compared with; re-running every unit in one command
would cost hours. A merged row keeps its numbers as measured and names its ``source`` file; the source's
``meta`` (command, commit, precision, machine) is kept under ``meta.merged``, so a reader can see which rows
came from which run and under which settings. A row that is already run in the target is never overwritten:
the command stops with one line naming it.

    python bench/merge_results.py bench/results.json bench/results-peft-sst2.json bench/results-peft-agnews.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy import DATASETS, METHODS, checks  # noqa: E402  (it puts the repository root on the path)

from data.outputs import atomic_path  # noqa: E402

KEY_OF = {label: key for key, (label, _, _) in METHODS.items()}


def merge(target: dict, source: dict, name: str) -> list[str]:
    """Copy ``source``'s run rows into ``target`` (in place), returning ``dataset: row`` for each one copied.

    Args:
        target: a results file's content (dataset → row label → row, and ``meta``).
        source: another results file's content, of the same shape.
        name: the source's file name, written into each copied row and into ``meta.merged``.
    """
    copied = []
    for dataset, rows in source.items():
        if dataset == "meta":
            continue
        for label, row in rows.items():
            if row.get("mean") is None:
                continue
            present = target.setdefault(dataset, {}).get(label, {})
            if present.get("mean") is not None and present.get("source") != name:
                raise SystemExit(f"error: {dataset} row '{label}' of {name} is already run in the target "
                                 f"(from {present.get('source', 'its own run')}); not merged")
            target[dataset][label] = {**row, "source": name}
            copied.append(f"{dataset}: {label}")
    merged = [m for m in target["meta"].get("merged", []) if m["file"] != name]
    target["meta"]["merged"] = [*merged, {"file": name, "rows": copied, "meta": source.get("meta", {})}]
    return copied


def table_of(results: dict) -> dict:
    """The results file as `bench/accuracy.py`'s table (dataset → row key → cell), for its ``checks``."""
    return {dataset: {KEY_OF[label]: {**row, "n": len(row.get("per_seed") or {}), "errors": row.get("errors", []),
                                      "stages": row.get("stages", {})}
                      for label, row in rows.items() if row.get("mean") is not None and label in KEY_OF}
            for dataset, rows in results.items() if dataset != "meta"}


def read(path: Path) -> dict:
    """A results file's content, or one line naming the file that is missing or not a results file."""
    if not path.is_file():
        raise SystemExit(f"error: {path}: no such results file")
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SystemExit(f"error: {path}: not JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(content, dict) or not isinstance(content.get("meta"), dict):
        raise SystemExit(f"error: {path}: not a bench/accuracy.py results file (no 'meta' object)")
    return content


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", type=Path, help="the results file to merge into (bench/results.json)")
    parser.add_argument("sources", type=Path, nargs="+", help="results files of later bench/accuracy.py runs")
    args = parser.parse_args()
    results = read(args.target)
    for source in args.sources:
        copied = merge(results, read(source), source.name)
        print(f"{source.name}: {len(copied)} rows" + "".join(f"\n  {c}" for c in copied))
    with atomic_path(args.target) as tmp:  # bench/accuracy.py's format, so a merge adds rows, not reformatting
        tmp.write_text(json.dumps(results, indent=1) + "\n")
    table = table_of(results)
    for dataset in (d for d in DATASETS if d in table):
        print(f"\n{DATASETS[dataset]}\n" + "\n".join(checks(table, dataset)))


if __name__ == "__main__":
    main()
