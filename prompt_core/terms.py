"""Words and short n-grams of a text collection, and which of them characterise each label.

``ipet suggest`` takes its candidate label phrases from the pool's most frequent terms and its
candidate label words for cloze from the pool's frequent words. Plain Python: no model is involved here.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterable, Mapping, Sequence

WORD = re.compile(r"[^\W\d_]+(?:['-][^\W\d_]+)*")  # letters, with inner apostrophes or hyphens
# Function words: a term may contain them ("world cup" does not, "of the" only them), but never
# start or end with one, so n-grams are phrases of content words.
STOPWORDS = frozenset("""a an the and or but if of to in on at by for with from as into about over after
before than then so not no nor is are was were be been being it its this that these those he she they we you
i his her their our your my me him them us who whom which what when where why how all any some such can
could will would shall should may might must do does did has have had just also very too more most s t quot
lt gt amp""".split())


def words(text: str) -> list[str]:
    """The lower-cased words of ``text`` (letters only; ``#39;`` and digits are not words)."""
    return WORD.findall(text.lower())


def terms(text: str, max_n: int = 2) -> set[str]:
    """The distinct words (not stopwords, at least 2 letters) and n-grams up to ``max_n`` words of
    ``text`` that neither start nor end with a stopword."""
    ws = words(text)
    out = set()
    for n in range(1, max_n + 1):
        for i in range(len(ws) - n + 1):
            gram = ws[i:i + n]
            if gram[0] not in STOPWORDS and gram[-1] not in STOPWORDS and len(gram[0]) > 1 and len(gram[-1]) > 1:
                out.add(" ".join(gram))
    return out


def document_frequency(texts: Iterable[str], max_n: int = 2) -> Counter:
    """In how many of ``texts`` each term occurs."""
    counts: Counter = Counter()
    for text in texts:
        counts.update(sorted(terms(text, max_n)))  # a set, in hash order (per process): ties at the cut differed
    return counts


def frequent_words(texts: Iterable[str], most: int) -> list[str]:
    """The ``most`` most frequent words of ``texts`` with at least two letters, most frequent first
    (PETAL's candidate label words: the task's own vocabulary, not the model's 30,000 pieces)."""
    counts = Counter(w for text in texts for w in words(text) if len(w) > 1)
    return [w for w, _ in sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))[:most]]


def join_fields(row: Mapping[str, object], fields: Sequence[str]) -> str:
    """A row's input fields as one text, the way the term statistics read it."""
    return " ".join(str(row[f] or "") for f in fields)
