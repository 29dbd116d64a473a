"""An imbalanced AG News for tuning (never the test set): rows 1-5,000 of the training side with the
classes kept at 55 % / 25 % / 12 % / 8 % (World, Sports, Business, Sci/Tech) as the train side, and
rows 5,001-6,000 thinned the same way as the held-out evaluation set. It is the case where PET's
gold-balanced selection fails: a balanced gold set, a pool that is not.

    python bench/tuning/imbalanced.py OUT_DIR   # writes OUT_DIR/train.csv and OUT_DIR/heldout.csv
"""

import csv
import random
import sys
from pathlib import Path

SHARE = {"1": 0.55, "2": 0.25, "3": 0.12, "4": 0.08}
SOURCE = Path(__file__).resolve().parents[3] / "shared" / "data" / "agnews" / "ag_news.csv"


def thin(rows: list[list[str]], rng: random.Random) -> list[list[str]]:
    """Keep each class in proportion to SHARE, the commonest class whole."""
    top = max(SHARE.values())
    return [r for r in rows if rng.random() < SHARE[r[0]] / top]


def main(out: Path) -> None:
    rows = list(csv.reader(SOURCE.open()))
    rng = random.Random(0)
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", rows[:5000]), ("heldout", rows[5000:6000])):
        with (out / f"{name}.csv").open("w", newline="") as f:
            csv.writer(f).writerows(thin(part, rng))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
