"""Does ``ipet predict`` stream? Peak memory and time for growing inputs, each in its own process.

Writes synthetic rows (toy review texts, one in 50 blank) as CSV/JSONL/parquet, runs
``python -m flows.cli predict`` on each size in a fresh subprocess and reads that process's peak
RSS from ``wait4``. Streaming means the peak stays flat while the input grows 10× and 100×.
The default model is a tiny random BERT classifier (the tests' ``save_tiny``), so the numbers
measure the pipeline around the model: reading, batching, writing; ``--model`` takes a real one.

    python bench/predict.py [--sizes 1000 10000 100000] [--format csv] [--batch-size 1024] [--model PATH]
                            [--threads N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402


def write_rows(path: Path, n: int, fmt: str, chunk: int = 50_000) -> None:
    """``n`` rows of ``id``, ``text``, written in chunks so that this process stays small too."""
    from tiny import FILLER, NEGATIVE, POSITIVE

    rng = random.Random(n)
    schema = pa.schema([("id", pa.string()), ("text", pa.string())])
    with contextlib.ExitStack() as stack:
        if fmt == "parquet":
            writer = stack.enter_context(pq.ParquetWriter(path, schema))
        else:
            f = stack.enter_context(path.open("w"))
            f.write("id,text\n" if fmt == "csv" else "")
        for start in range(0, n, chunk):
            ids = [f"r{i}" for i in range(start + 1, min(start + chunk, n) + 1)]
            texts = ["" if i % 50 == 49 else " ".join(rng.sample(FILLER, 6) + [rng.choice(POSITIVE + NEGATIVE)])
                     for i in range(start, start + len(ids))]
            if fmt == "parquet":
                writer.write_table(pa.table({"id": ids, "text": texts}, schema=schema))
            elif fmt == "csv":
                f.writelines(f"{i},{t}\n" for i, t in zip(ids, texts))
            else:
                f.writelines(json.dumps({"id": i, "text": t}) + "\n" for i, t in zip(ids, texts))


def run_predict(model: str, source: Path, out: Path, batch_size: int, threads: int | None) -> dict:
    """One ``ipet predict`` in a fresh process: wall seconds and that process's peak RSS."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    env.pop("PREFECT_API_URL", None)  # the plain function, no Prefect server
    cmd = [sys.executable, "-m", "flows.cli", "predict", "--model", model, "--input", str(source),
           "--output", str(out), "--batch-size", str(batch_size), "--device", "cpu"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"ipet predict failed:\n{output}")
    return {"seconds": seconds, "peak_rss_mib": usage.ru_maxrss / 1024, "summary": output.strip().splitlines()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--format", choices=["csv", "jsonl", "parquet"], default="csv")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--model", help="a model directory (default: a tiny random BERT classifier)")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for ipet predict (default: torch's choice)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        tmp = Path(tmp)
        model = args.model
        if model is None:
            from tiny import save_classifier, save_tiny

            model = str(save_classifier(tmp / "classifier", save_tiny("bert", tmp / "backbone")))
        rows = []
        for n in args.sizes:
            source, out = tmp / f"rows-{n}.{args.format}", tmp / f"predictions-{n}.parquet"
            write_rows(source, n, args.format)
            result = run_predict(model, source, out, args.batch_size, args.threads)
            written = pq.ParquetFile(out).metadata.num_rows
            without_error = pq.read_table(out, columns=["error"])["error"].null_count
            assert written == n, f"{written} rows written for {n} read"
            rows.append({"rows": n, "input_mib": source.stat().st_size / 2**20, **result,
                         "rows_per_s": n / result["seconds"], "errors": n - without_error})
            source.unlink()
            out.unlink()

    print(f"\nmodel {args.model or 'tiny random BERT classifier (2 layers, hidden 32)'} · input {args.format} · "
          f"batch size {args.batch_size} · cpu, torch threads {args.threads or 'default'} · "
          "one fresh process per size (times include start-up)\n")
    print("| rows | input MiB | seconds | rows/s | peak RSS MiB | rows reported blank |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['rows']:,} | {r['input_mib']:.1f} | {r['seconds']:.1f} | {r['rows_per_s']:,.0f} | "
              f"{r['peak_rss_mib']:.0f} | {r['errors']:,} |")
    growth = rows[-1]["peak_rss_mib"] / rows[0]["peak_rss_mib"]
    print(f"\npeak RSS at {rows[-1]['rows']:,} rows / at {rows[0]['rows']:,} rows: {growth:.2f}x "
          f"(input {rows[-1]['rows'] / rows[0]['rows']:.0f}x)")


if __name__ == "__main__":
    main()
