"""``ipet suggest`` as plain Python: label phrases (similarity), label words (cloze) and patterns,
proposed from a run's labeled set and a sample of its pool instead of written by hand.

Each pattern costs one encoder pass over the labeled rows and the pool sample (kept per pattern
for the process); every candidate is then scored from that one matrix (``prompt_core.choice``).

- **Similarity**: candidates are the label names and the pool's most frequent terms
  (``prompt_core.terms``) in a few generic phrase templates, the same for every label and owing
  nothing to the labeled rows; each label's shortlist is the phrases nearest the direction that sets
  its rows apart, and one phrase per label is chosen by likelihood on the labeled rows plus balance on
  the pool. Phrases drawn from the labeled rows themselves (characteristic terms) fitted 20 rows and
  not the task (bench/RESULTS.md, "Suggested phrases").
- **Cloze**: candidates are the pool's frequent words that are one token; the top words per label
  by PETAL's likelihood ratio, optionally widened with embedding neighbours (KPT-style).
- **No labels**: candidates grow from the label names, or where a name is no word its first verbalizer
  word (their neighbours among the pool's terms or words), and are chosen by the pool alone: spread
  across the classes, with a confident margin.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .backbone import gather_hidden, load_masked_lm, load_tokenizer, vocab_scores
from .choice import (Candidate, Fit, Scores, SuggestError, centroid_offsets, choose, fit, folds, likelihood_ratios,
                     principal_axes, shortlist, top_words)
from .label import predict_all
from .learners import ClozeLearner, Learner, LearnerSpec, SimilarityLearner, build_learner
from .terms import document_frequency, frequent_words, join_fields, words
from .verbalizer import word_pieces

PHRASE_TEMPLATES = ("{x}", "This is about {x}.", "It was {x}.")  # around a label name or a term
NO_WORD = (" (the labeled rows' words at the mask do not set the labels apart); give them more or more typical "
           "labeled examples")  # why a cloze pattern leaves a label without a word, and what helps
CV_FOLDS = 5  # folds of the labeled rows for the held-out accuracy of the chosen phrases
# Generic patterns: {input} is every input field, {first} the first one alone (only with several).
PATTERN_LIBRARY = {
    "similarity": ("{input}", "Text: {input}", "{first}"),
    "cloze": ("{input} It was {mask} .", "{input} This is about {mask} .", "{mask} : {input}",
              "[ Category: {mask} ] {input}", "{input} All in all, it was {mask} ."),
}


@dataclass(frozen=True)
class Task:
    """What ``suggest`` reads.

    Args:
        labels: the label names, in class order.
        fields: the input fields the patterns read.
        labeled: the labeled rows (may be empty: zero-label mode).
        targets: each labeled row's label index.
        pool: the pool sample every pattern is scored on.
        background: the pool's text (all of it, or a sample) for word and term statistics.
        names: the word each label's search starts from (a candidate too; without labeled rows, the
            only lead): its name, or where that is no word (``1``) its first verbalizer word. Empty: the labels.
    """

    labels: tuple[str, ...]
    fields: tuple[str, ...]
    labeled: tuple[Mapping[str, Any], ...]
    targets: tuple[int, ...]
    pool: tuple[Mapping[str, Any], ...]
    background: tuple[str, ...]
    names: tuple[str, ...] = ()

    @property
    def starts(self) -> tuple[str, ...]:
        return self.names or self.labels

    def origin(self, start: str) -> str:
        """Where a start word came from, as the printed table says it."""
        return "label name" if start in self.labels else "verbalizer word"


@dataclass(frozen=True)
class SuggestSettings:
    """How to suggest.

    Args:
        backbone: the config's model.
        learner: ``similarity`` or ``cloze``.
        top: label words per label (cloze); candidates shown per label.
        terms: similarity: candidates shortlisted per label (nearest its direction) to choose from.
        axes: similarity: the pool sample's principal axes a label's direction is read along.
        phrases: similarity: the pool's most frequent terms tried as label phrases (with the names).
        max_n: longest term, in words.
        expand: cloze: at most this many embedding neighbours of a label's best word added (KPT).
        vocabulary: cloze: the pool's most frequent words considered as label words.
        temperature: the similarity learner's.
        max_length, batch_size, device, trust_remote_code: as for labeling.
    """

    backbone: str
    learner: str
    top: int = 3
    terms: int = 3
    axes: int = 5
    phrases: int = 500
    max_n: int = 2
    expand: int = 0
    vocabulary: int = 2000
    temperature: float = 0.05
    max_length: int = 256
    batch_size: int = 32
    device: str = "auto"
    trust_remote_code: bool = False


@dataclass(frozen=True)
class Ranked:
    """One row of the printed table: a candidate and how it scored (``score``: accuracy with labels,
    PETAL's ratio for cloze words, balance × margin without labels)."""

    label: str
    text: str
    origin: str
    score: float
    fit: Fit


@dataclass(frozen=True)
class PVPSuggestion:
    """A pattern with its suggested verbalizer, the verbalizer's fit, and the ranked candidates."""

    pattern: str
    verbalizer: dict[str, tuple[str, ...]]
    fit: Fit
    ranked: tuple[Ranked, ...]
    held_out: float | None = None  # accuracy on folds of the labeled rows left out of the choice


def fill_pattern(template: str, fields: Sequence[str]) -> str | None:
    """A library template with the config's fields; None where it makes no sense (``{first}`` of one field)."""
    if "{first}" in template and len(fields) < 2:
        return None
    return template.replace("{input}", " ".join(f"{{{f}}}" for f in fields)).replace("{first}", f"{{{fields[0]}}}")


def library(learner: str, fields: Sequence[str]) -> list[str]:
    """The generic patterns for ``learner``, filled with ``fields``."""
    return [p for t in PATTERN_LIBRARY[learner] if (p := fill_pattern(t, fields)) is not None]


def suggest(task: Task, settings: SuggestSettings, patterns: Sequence[str], search: bool = False,
            ) -> tuple[list[PVPSuggestion], list[tuple[str, Fit | None]]]:
    """A verbalizer for each PVP slot, and the patterns ranked by their best verbalizer's fit.

    Args:
        task: the rows and labels.
        settings: model and search settings.
        patterns: the config's patterns, one per PVP.
        search: also score the pattern library and fill the slots with the best patterns (the
            config's among them); otherwise keep the config's patterns.

    Returns:
        One ``PVPSuggestion`` per slot (as many as ``patterns``; a pattern used twice gets other
        words or phrases the second time, so the ensemble's members differ), and the ranking; with
        ``search``, a pattern that leaves a label without a word is skipped (its fit None, last), and
        only a search where every pattern does is refused.
    """
    check_learner(settings.learner)
    scorer = SCORERS[settings.learner](task, settings)
    candidates = list(dict.fromkeys([*patterns, *(library(settings.learner, task.fields) if search else [])]))
    best, failed = {}, {}
    for p in candidates:
        try:
            best[p] = scorer.suggest(p, frozenset())
        except SuggestError as err:
            if not search:
                raise
            failed[p] = err
    if not best:
        raise SuggestError(f"none of the {len(failed)} patterns tried, the config's and the library's, gives every "
                           f"label a word{NO_WORD}")
    ranking = sorted(((p, s.fit) for p, s in best.items()), key=lambda pf: pf[1].key, reverse=True)
    slots = [ranking[i % len(ranking)][0] for i in range(len(patterns))] if search else list(patterns)
    ranking += [(p, None) for p in failed]
    used: dict[str, set[str]] = {}
    out = []
    for slot, pattern in enumerate(slots):
        chosen = best[pattern] if pattern not in used else _again(scorer, slot, pattern, slots, used[pattern])
        used.setdefault(pattern, set()).update(w for ws in chosen.verbalizer.values() for w in ws)
        out.append(chosen)
    return out, ranking


def check_learner(learner: str) -> None:
    """Raise ``SuggestError`` for a learner with no verbalizer to suggest (a classifier's head starts random)."""
    if learner not in SCORERS:
        raise SuggestError(f"learner: {learner} has no verbalizer to suggest; use similarity or cloze")


def _again(scorer, slot: int, pattern: str, slots: Sequence[str], used: set[str]) -> PVPSuggestion:
    """Slot ``slot``'s suggestion for a pattern an earlier slot has: other words or phrases than theirs.
    The candidates can run out (a small pool, no labels, a pattern in many PVPs); then say which PVP
    and why, not just which label."""
    try:
        return scorer.suggest(pattern, frozenset(used))
    except SuggestError as err:
        earlier = ", ".join(f"pvps.{i}" for i in range(slot) if slots[i] == pattern)
        fewer = ", or take fewer words per label (--top)" if scorer.settings.learner == "cloze" else ""
        raise SuggestError(f"pvps.{slot}: {err} after {earlier} with the same pattern {pattern!r} took theirs "
                           f"(PVPs that share a pattern get other words or phrases); give it another "
                           f"pattern{fewer}") from None


class Embedder(SimilarityLearner):
    """The similarity learner's encoder alone: a row's unit embedding stands in for its logits, so
    ``predict_all`` streams rows and phrases alike, and every candidate is then scored by one product."""

    scoring = Learner.scoring  # no label phrases to embed ahead of the rows

    def __init__(self, spec: LearnerSpec, model: torch.nn.Module, tokenizer):
        Learner.__init__(self, spec, model, tokenizer)  # spec.labels: one per embedding dimension

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.embed(batch["input_ids"], batch["attention_mask"])


@dataclass(frozen=True)
class Shortlisted:
    """One template's shortlisted candidates (``columns``: their rows of the template's phrase
    embeddings), the choice among them and every candidate's fit."""

    candidates: list[Candidate]
    columns: list[int]
    choice: list[int]
    fits: dict[int, Fit]


class PhraseScorer:
    """Label phrases for the similarity learner. The candidates are the same for every label and owe
    nothing to the labeled rows: the label names that are words and the pool's most frequent terms, in
    each generic template. Each is embedded once; each pattern's rows once; a phrase's score for a row
    is then a dot product. Per template, a label's shortlist is the phrases nearest the direction that
    sets its labeled rows apart (their centroid's offset, along the pool's main axes); one phrase per
    label is chosen from the shortlists by likelihood on the labeled rows plus balance on the pool, and
    the template whose choice scores best wins. Choosing again without each fold gives an accuracy selection
    has not seen."""

    def __init__(self, task: Task, settings: SuggestSettings):
        self.task, self.settings = task, settings
        spec = LearnerSpec("similarity", settings.backbone, "{x}", task.labels, {l: [l] for l in task.labels},
                           max_length=settings.max_length, trust_remote_code=settings.trust_remote_code,
                           temperature=settings.temperature)
        self.encoder = build_learner(spec)
        self.names = [n for n in task.starts if words(n)]
        if not task.targets and len(self.names) < len(task.labels):
            nameless = [label for label, n in zip(task.labels, task.starts) if not words(n)]
            raise SuggestError(f"no labeled examples, and label(s) {nameless} have no word to start from (their name, "
                               "else their first verbalizer word): give labeled examples, or a word in the verbalizer")
        frequent = document_frequency(task.background, settings.max_n).most_common(settings.phrases)
        self.terms = list(dict.fromkeys([*self.names, *(t for t, n in frequent if n > 1)]))
        self.phrases = {t: self.embed("{text}", [{"text": t.format(x=term)} for term in self.terms])
                        for t in PHRASE_TEMPLATES}
        self._rows: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def embed(self, template: str, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """(rows × dims) unit embeddings of ``rows`` rendered with ``template``."""
        dims = tuple(str(i) for i in range(self.encoder.model.config.hidden_size))
        spec = replace(self.encoder.spec, template=template, labels=dims)
        return predict_all(Embedder(spec, self.encoder.model, self.encoder.tokenizer), rows,
                           batch_size=self.settings.batch_size, device=self.settings.device)

    def rows(self, pattern: str) -> tuple[np.ndarray, np.ndarray]:
        """The labeled rows' and the pool sample's embeddings under ``pattern``, once per pattern."""
        if pattern not in self._rows:
            both = self.embed(pattern, [*self.task.labeled, *self.task.pool])
            self._rows[pattern] = both[: len(self.task.labeled)], both[len(self.task.labeled):]
        return self._rows[pattern]

    def suggest(self, pattern: str, excluded: frozenset[str]) -> PVPSuggestion:
        labeled, pool = self.rows(pattern)
        skip = frozenset(i for i, term in enumerate(self.terms) if any(t.format(x=term) in excluded
                                                                        for t in PHRASE_TEMPLATES))
        template, best = max(((t, self._shortlisted(t, labeled, pool, self.task.targets, skip))
                              for t in PHRASE_TEMPLATES), key=lambda tb: tb[1].fits[tb[1].choice[0]].key)
        ranked = []
        for label, name in enumerate(self.task.labels):
            mine = sorted((i for i, c in enumerate(best.candidates) if c.label == label),
                          key=lambda i: best.fits[i].key, reverse=True)[: self.settings.top]
            ranked += [Ranked(name, best.candidates[i].text, best.candidates[i].origin, best.fits[i].score,
                              best.fits[i]) for i in mine]
        verbalizer = {name: (best.candidates[i].text,) for name, i in zip(self.task.labels, best.choice)}
        return PVPSuggestion(pattern, verbalizer, best.fits[best.choice[0]], tuple(ranked),
                             self._held_out(template, labeled, pool, skip))

    def _shortlisted(self, template: str, labeled: np.ndarray, pool: np.ndarray, targets: Sequence[int],
                     skip: frozenset[int]) -> Shortlisted:
        """The template's shortlists and the phrases chosen from them, with ``targets`` for ``labeled``."""
        phrases, n = self.phrases[template], len(self.task.labels)
        if len(targets):  # along the pool's main axes: 10 rows a label are mostly noise in 384 dimensions
            axes = principal_axes(pool, self.settings.axes)
            groups = [np.flatnonzero(np.asarray(targets) == l) for l in range(n)]
            offsets = centroid_offsets(labeled, groups) @ axes.T @ axes
        else:  # no labels: the direction of each label's name
            offsets = centroid_offsets(phrases[[self.terms.index(name) for name in self.task.starts]],
                                       [[l] for l in range(n)])
        short = shortlist(offsets @ phrases.T, self.settings.terms, skip)
        if not skip and not all(short):  # too few terms to go round (with a skip, ``_again`` says why)
            empty = [self.task.labels[l] for l, s in enumerate(short) if not s]
            raise SuggestError(f"no candidate phrase for label(s) {empty}: the pool gives {len(self.terms)} "
                               f"candidate(s) for {n} labels (label names that are words, and terms in at least 2 "
                               "of its rows); give a larger pool")
        columns = [i for s in short for i in s]
        candidates = [Candidate(l, template.format(x=self.terms[i]), self.task.origin(self.terms[i])
                                if self.terms[i] in self.names else "term") for l, s in enumerate(short) for i in s]
        scores = Scores(labeled @ phrases[columns].T, pool @ phrases[columns].T, self.settings.temperature)
        choice, fits = choose(scores, candidates, targets, n, names=self.task.labels)
        return Shortlisted(candidates, columns, choice, fits)

    def _held_out(self, template: str, labeled: np.ndarray, pool: np.ndarray, skip: frozenset[int]) -> float | None:
        """Accuracy on each fold of the labeled rows of the phrases chosen without it (candidates never
        depend on the labels, so this is an honest estimate); None where a label has too few rows."""
        targets = np.asarray(self.task.targets)
        k = min(CV_FOLDS, int(np.bincount(targets).min())) if len(targets) else 0
        if k < 2:
            return None
        right = 0
        for fold in folds(targets, k):
            keep = np.setdiff1d(np.arange(len(targets)), fold)
            found = self._shortlisted(template, labeled[keep], pool, targets[keep].tolist(), skip)
            chosen = self.phrases[template][[found.columns[i] for i in found.choice]]
            right += int(((labeled[fold] @ chosen.T).argmax(axis=1) == targets[fold]).sum())
        return right / len(targets)


class WordLogProbs(ClozeLearner):
    """A cloze learner whose "classes" are candidate words: the log-probability of each at the mask,
    normalised over the whole vocabulary (the probabilities PETAL's ratio reads), so ``predict_all``
    streams it like any learner."""

    def __init__(self, spec: LearnerSpec, model: torch.nn.Module, tokenizer, word_ids: torch.Tensor):
        Learner.__init__(self, spec, model, tokenizer)  # no verbalizer matrix: every word is its own column
        self.register_buffer("word_ids", word_ids, persistent=False)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        rows = torch.arange(batch["input_ids"].shape[0], device=batch["input_ids"].device)
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        hidden = gather_hidden(self.model, inputs, rows, batch["mask_pos"])
        return vocab_scores(self.model, hidden).float().log_softmax(-1)[:, self.word_ids]


class WordScorer:
    """Label words for the cloze learner: the pool's frequent one-token words, scored at the mask."""

    def __init__(self, task: Task, settings: SuggestSettings):
        self.task, self.settings = task, settings
        self.tokenizer = load_tokenizer(settings.backbone, trust_remote_code=settings.trust_remote_code)
        if self.tokenizer.mask_token is None:
            raise SuggestError(f"model: {settings.backbone!r} has no mask token, so it cannot fill cloze patterns")
        self.model = load_masked_lm(settings.backbone, trust_remote_code=settings.trust_remote_code,
                                    require_head=True)
        texts = [join_fields(r, task.fields) for r in task.labeled] + list(task.background)
        names = [n for n in task.starts if words(n) == [n.lower()]]
        self.words, ids = self._one_token([*names, *frequent_words(texts, settings.vocabulary)])
        self.word_ids = torch.tensor(ids)
        self._scores: dict[str, Scores] = {}

    def _one_token(self, candidates: Sequence[str]) -> tuple[list[str], list[int]]:
        """The candidates that are one known token, each id once."""
        kept: dict[int, str] = {}
        for word, pieces in zip(candidates, word_pieces(self.tokenizer, candidates)):
            if len(pieces) == 1 and pieces[0] != self.tokenizer.unk_token_id:
                kept.setdefault(pieces[0], word)
        if not kept:
            raise SuggestError("no word of the pool is a single token of the model's vocabulary")
        return list(kept.values()), list(kept)

    def scores(self, pattern: str) -> Scores:
        if pattern not in self._scores:
            keys = tuple(str(i) for i in range(len(self.words)))
            spec = LearnerSpec("cloze", self.settings.backbone, pattern, keys, max_length=self.settings.max_length)
            learner = WordLogProbs(spec, self.model, self.tokenizer, self.word_ids)
            both = predict_all(learner, [*self.task.labeled, *self.task.pool], batch_size=self.settings.batch_size,
                               device=self.settings.device)
            n = len(self.task.labeled)
            self._scores[pattern] = Scores(both[:n], both[n:])
        return self._scores[pattern]

    def suggest(self, pattern: str, excluded: frozenset[str]) -> PVPSuggestion:
        skip = frozenset(i for i, w in enumerate(self.words) if w in excluded)
        if not self.task.targets:
            return self._by_pool(pattern, skip)
        scores = self.scores(pattern)
        ratios = likelihood_ratios(scores.labeled, self.task.targets, len(self.task.labels), scores.pool)
        chosen = self._expand(top_words(ratios, self.settings.top, skip), ratios, skip)
        empty = [self.task.labels[l] for l, ws in enumerate(chosen) if not ws]
        if empty:  # a PVP sharing the pattern says why itself (``_again``)
            why = "" if excluded else f"{NO_WORD}, or try other patterns (--patterns)"
            raise SuggestError(f"pattern {pattern!r}: no word scores best for label(s) {empty}{why}")
        ranked = []
        for label, name in enumerate(self.task.labels):
            for w in top_words(ratios, 2 * self.settings.top, skip)[label]:
                trial = [[w] if l == label else ws for l, ws in enumerate(chosen)]
                ranked.append(Ranked(name, self.words[w], "word", float(ratios[label, w]),
                                     fit(scores, trial, self.task.targets)))
        return self._pvp(pattern, chosen, ranked)

    def _pvp(self, pattern: str, chosen: list[list[int]], ranked: list[Ranked]) -> PVPSuggestion:
        verbalizer = {name: tuple(self.words[w] for w in ws) for name, ws in zip(self.task.labels, chosen)}
        return PVPSuggestion(pattern, verbalizer, fit(self.scores(pattern), chosen, self.task.targets), tuple(ranked))

    def _expand(self, chosen: list[list[int]], ratios: np.ndarray, skip: frozenset[int]) -> list[list[int]]:
        """KPT-style: add up to ``expand`` embedding neighbours of each label's best word that score best
        for that label too (a finite, highest ratio there)."""
        if not self.settings.expand:
            return chosen
        owner = ratios.argmax(axis=0)
        out = []
        for label, ws in enumerate(chosen):
            near = [w for w in self._neighbours(ws[0]) if owner[w] == label and np.isfinite(ratios[label, w])
                    and w not in ws and w not in skip] if ws else []
            out.append(ws + near[: self.settings.expand])
        return out

    def _neighbours(self, word: int) -> list[int]:
        """Candidate words by the cosine of their input embeddings to ``word``'s, nearest first (not itself)."""
        table = torch.nn.functional.normalize(self.model.get_input_embeddings().weight[self.word_ids].float(), dim=-1)
        with torch.no_grad():
            order = torch.argsort(table @ table[word], descending=True).tolist()
        return [w for w in order if w != word]

    def _by_pool(self, pattern: str, skip: frozenset[int]) -> PVPSuggestion:
        """Without labels: each label's name and its embedding neighbours, chosen by the pool alone."""
        names = {n.lower(): i for i, n in enumerate(self.words)}
        missing = [label for label, n in zip(self.task.labels, self.task.starts) if n.lower() not in names]
        if missing:
            raise SuggestError(f"no labeled examples, and label(s) {missing} have no one-token word of the model to "
                               "start from (their name, else their first verbalizer word): give labeled examples, or "
                               "such a word in the verbalizer")
        candidates = []
        for label, name in enumerate(self.task.starts):
            near = [names[name.lower()], *self._neighbours(names[name.lower()])[: self.settings.terms]]
            candidates += [Candidate(label, self.words[w], self.task.origin(name) if k == 0 else "neighbour")
                           for k, w in enumerate(near) if w not in skip]
        columns = [self.words.index(c.text) for c in candidates]
        full = self.scores(pattern)
        scores = Scores(full.labeled[:, columns], full.pool[:, columns])
        choice, fits = choose(scores, candidates, (), len(self.task.labels), names=self.task.labels)
        ranked = sorted((i for i in fits), key=lambda i: (candidates[i].label, [-k for k in fits[i].key]))
        chosen = [[columns[i] for i in ranked if candidates[i].label == l][: self.settings.top]
                  for l in range(len(self.task.labels))]
        rows = [Ranked(self.task.labels[candidates[i].label], candidates[i].text, candidates[i].origin,
                       fits[i].score, fits[i]) for i in ranked]
        return self._pvp(pattern, chosen, rows)


SCORERS: dict[str, type] = {"similarity": PhraseScorer, "cloze": WordScorer}
"""The learners ``ipet suggest`` proposes verbalizers for; a classifier has none."""
