"""Words and short n-grams of a text collection, and which of them characterise each label.

``ipet suggest`` builds label-phrase candidates from the terms most characteristic of each label's
labeled examples against the unlabeled pool, and takes its candidate label words for cloze from the
pool's frequent words. Plain Python and numpy: no model is involved here.
"""

from __future__ import annotations

import math
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
PRIOR_WEIGHT = 100.0  # the pool's term frequencies act as a Dirichlet prior worth this many counts


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
        counts.update(terms(text, max_n))
    return counts


def characteristic_terms(texts: Sequence[str], targets: Sequence[int], n_labels: int, background: Sequence[str],
                         top: int = 8, max_n: int = 2, min_support: int = 2) -> list[list[tuple[str, float]]]:
    """The ``top`` terms most characteristic of each label's examples against a background, best first.

    The score is the z-scored log-odds ratio with an informative Dirichlet prior (Monroe, Colaresi and
    Quinn 2008) over document frequencies: the label's examples against the background, the prior
    being the background's own frequencies. A term common everywhere scores near zero; a term seen
    in few examples gets a wide variance and so a modest z, which is what a 10-example set needs.

    Args:
        texts: the labeled examples' text.
        targets: each example's label index (0 … ``n_labels`` − 1).
        n_labels: how many labels.
        background: the unlabeled pool's text (or a sample of it).
        top: terms kept per label.
        max_n: longest n-gram, in words.
        min_support: a term must occur in this many of the label's examples (fewer when the label has
            fewer examples), so no candidate exists because of a single example: left out, the
            example's label still has the term (``ipet suggest`` scores phrases leave-one-out so).

    Returns:
        One list per label of ``(term, z)``, highest ``z`` first, only terms with ``z`` > 0.
    """
    back = document_frequency(background, max_n)
    back_total = sum(back.values())
    out = []
    for label in range(n_labels):
        mine = [t for t, y in zip(texts, targets) if y == label]
        counts = document_frequency(mine, max_n)
        need = min(min_support, len(mine))
        scored = [(term, _log_odds_z(count, sum(counts.values()), back.get(term, 0), back_total, len(back)))
                  for term, count in counts.items() if count >= need]
        out.append(sorted(((t, z) for t, z in scored if z > 0), key=lambda tz: (-tz[1], tz[0]))[:top])
    return out


def _log_odds_z(count: int, total: int, back_count: int, back_total: int, vocabulary: int) -> float:
    """The z-score of a term's log-odds in a group against the background (see ``characteristic_terms``)."""
    prior = PRIOR_WEIGHT * (back_count + 0.5) / (back_total + 0.5 * vocabulary)
    mine = math.log((count + prior) / (total + PRIOR_WEIGHT - count - prior))
    theirs = math.log((back_count + prior) / (back_total + PRIOR_WEIGHT - back_count - prior))
    return (mine - theirs) / math.sqrt(1 / (count + prior) + 1 / (back_count + prior))


def frequent_words(texts: Iterable[str], most: int) -> list[str]:
    """The ``most`` most frequent words of ``texts`` with at least two letters, most frequent first
    (PETAL's candidate label words: the task's own vocabulary, not the model's 30,000 pieces)."""
    counts = Counter(w for text in texts for w in words(text) if len(w) > 1)
    return [w for w, _ in sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))[:most]]


def join_fields(row: Mapping[str, object], fields: Sequence[str]) -> str:
    """A row's input fields as one text, the way the term statistics read it."""
    return " ".join(str(row[f] or "") for f in fields)
