"""``ipet suggest`` as plain Python: label phrases (similarity), label words (cloze) and patterns,
proposed from a run's labeled set and a sample of its pool instead of written by hand.

Each pattern costs one encoder pass over the labeled rows and the pool sample (kept per pattern
for the process); every candidate is then scored from that one matrix (``prompt_core.choice``).

- **Similarity**: candidates are the label name and the terms most characteristic of each label's
  examples against the pool (``prompt_core.terms``), in a few generic phrase templates; one phrase
  per label is chosen by accuracy on the labeled set, ties broken by how evenly it spreads the pool.
- **Cloze**: candidates are the pool's frequent words that are one token; the top words per label
  by PETAL's likelihood ratio, optionally widened with embedding neighbours (KPT-style).
- **No labels**: candidates grow from the label names (their neighbours among the pool's terms or
  words) and are chosen by the pool alone: spread across the classes, with a confident margin.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .backbone import gather_hidden, load_masked_lm, load_tokenizer, vocab_scores
from .choice import Candidate, Fit, Scores, SuggestError, choose, fit, likelihood_ratios, top_words
from .label import predict_all
from .learners import ClozeLearner, Learner, LearnerSpec, SimilarityLearner, build_learner
from .terms import characteristic_terms, document_frequency, frequent_words, join_fields, words
from .verbalizer import word_pieces

PHRASE_TEMPLATES = ("{x}", "This is about {x}.", "It was {x}.")  # around a label name or a term
LIST_SIZE = 3  # one more candidate: the label's best terms as a list, "goal, team, match."
# Generic patterns: {input} is every input field, {first} the first one alone (only with several).
PATTERN_LIBRARY = {
    "similarity": ("{input}", "Text: {input}", "{first}"),
    "cloze": ("{input} It was {mask} .", "{input} This is about {mask} .", "{mask} : {input}",
              "[ Category: {mask} ] {input}", "{input} All in all, it was {mask} ."),
}
NEIGHBOUR_POOL = 500  # the pool's most frequent terms a label's embedding neighbours come from


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
    """

    labels: tuple[str, ...]
    fields: tuple[str, ...]
    labeled: tuple[Mapping[str, Any], ...]
    targets: tuple[int, ...]
    pool: tuple[Mapping[str, Any], ...]
    background: tuple[str, ...]


@dataclass(frozen=True)
class SuggestSettings:
    """How to suggest.

    Args:
        backbone: the config's model.
        learner: ``similarity`` or ``cloze``.
        top: label words per label (cloze); candidates shown per label.
        terms: characteristic terms (or name neighbours) per label that become candidates.
        max_n: longest term, in words.
        expand: cloze: at most this many embedding neighbours of a label's best word added (KPT).
        vocabulary: cloze: the pool's most frequent words considered as label words.
        temperature: the similarity learner's.
        max_length, batch_size, device, trust_remote_code: as for labeling.
    """

    backbone: str
    learner: str
    top: int = 3
    terms: int = 8
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


def fill_pattern(template: str, fields: Sequence[str]) -> str | None:
    """A library template with the config's fields; None where it makes no sense (``{first}`` of one field)."""
    if "{first}" in template and len(fields) < 2:
        return None
    return template.replace("{input}", " ".join(f"{{{f}}}" for f in fields)).replace("{first}", f"{{{fields[0]}}}")


def library(learner: str, fields: Sequence[str]) -> list[str]:
    """The generic patterns for ``learner``, filled with ``fields``."""
    return [p for t in PATTERN_LIBRARY[learner] if (p := fill_pattern(t, fields)) is not None]


def suggest(task: Task, settings: SuggestSettings, patterns: Sequence[str], search: bool = False,
            ) -> tuple[list[PVPSuggestion], list[tuple[str, Fit]]]:
    """A verbalizer for each PVP slot, and the patterns ranked by their best verbalizer's fit.

    Args:
        task: the rows and labels.
        settings: model and search settings.
        patterns: the config's patterns, one per PVP.
        search: also score the pattern library and fill the slots with the best patterns (the
            config's among them); otherwise keep the config's patterns.

    Returns:
        One ``PVPSuggestion`` per slot (as many as ``patterns``; a pattern used twice gets other
        words or phrases the second time, so the ensemble's members differ), and the ranking.
    """
    if settings.learner not in SCORERS:
        raise SuggestError(f"learner: {settings.learner} has no verbalizer to suggest; use similarity or cloze")
    scorer = SCORERS[settings.learner](task, settings)
    candidates = list(dict.fromkeys([*patterns, *(library(settings.learner, task.fields) if search else [])]))
    best = {p: scorer.suggest(p, frozenset()) for p in candidates}
    ranking = sorted(((p, s.fit) for p, s in best.items()), key=lambda pf: pf[1].key, reverse=True)
    slots = [ranking[i % len(ranking)][0] for i in range(len(patterns))] if search else list(patterns)
    used: dict[str, set[str]] = {}
    out = []
    for pattern in slots:
        chosen = best[pattern] if pattern not in used else scorer.suggest(pattern, frozenset(used[pattern]))
        used.setdefault(pattern, set()).update(w for ws in chosen.verbalizer.values() for w in ws)
        out.append(chosen)
    return out, ranking


class PhraseScorer:
    """Label phrases for the similarity learner: candidates embedded with the rows, once per pattern."""

    def __init__(self, task: Task, settings: SuggestSettings):
        self.task, self.settings = task, settings
        spec = LearnerSpec("similarity", settings.backbone, "{x}", task.labels, {l: [l] for l in task.labels},
                           max_length=settings.max_length, trust_remote_code=settings.trust_remote_code,
                           temperature=settings.temperature)
        self.encoder = build_learner(spec)
        self.candidates = self._candidates()
        self._scores: dict[str, Scores] = {}

    def similarities(self, template: str, rows: Sequence[Mapping[str, Any]], texts: Sequence[str]) -> np.ndarray:
        """(rows × texts) cosine similarities of the rows rendered with ``template`` to ``texts``."""
        keys = tuple(str(i) for i in range(len(texts)))
        spec = replace(self.encoder.spec, template=template, labels=keys, temperature=1.0,
                       verbalizer={k: [t] for k, t in zip(keys, texts)})
        learner = SimilarityLearner(spec, self.encoder.model, self.encoder.tokenizer)
        return predict_all(learner, rows, batch_size=self.settings.batch_size, device=self.settings.device)

    def scores(self, pattern: str) -> Scores:
        if pattern not in self._scores:
            both = self.similarities(pattern, [*self.task.labeled, *self.task.pool], [c.text for c in self.candidates])
            n = len(self.task.labeled)
            self._scores[pattern] = Scores(both[:n], both[n:], self.settings.temperature)
        return self._scores[pattern]

    def suggest(self, pattern: str, excluded: frozenset[str]) -> PVPSuggestion:
        task, top = self.task, self.settings.top
        choice, fits = choose(self.scores(pattern), self.candidates, task.targets, len(task.labels), excluded)
        ranked = []
        for label, name in enumerate(task.labels):
            mine = sorted((i for i in fits if self.candidates[i].label == label), key=lambda i: fits[i].key,
                          reverse=True)[:top]
            ranked += [Ranked(name, self.candidates[i].text, self.candidates[i].origin, fits[i].score, fits[i])
                       for i in mine]
        verbalizer = {name: (self.candidates[i].text,) for name, i in zip(task.labels, choice)}
        return PVPSuggestion(pattern, verbalizer, fits[choice[0]], tuple(ranked))

    def _candidates(self) -> list[Candidate]:
        task, s = self.task, self.settings
        if task.targets:
            texts = [join_fields(r, task.fields) for r in task.labeled]
            found = characteristic_terms(texts, task.targets, len(task.labels), task.background, s.terms, s.max_n)
            near = self._nearest_terms(texts, [[i for i, y in enumerate(task.targets) if y == label]
                                               for label in range(len(task.labels))])
            terms = [list(dict.fromkeys([t for t, _ in f] + n)) for f, n in zip(found, near)]
        else:
            nameless = [name for name in task.labels if not words(name)]
            if nameless:
                raise SuggestError(f"no labeled examples, and label(s) {nameless} have no name to start from: "
                                   "give labeled examples, or name the labels with words in the verbalizer")
            terms = self._nearest_terms(list(task.labels), [[label] for label in range(len(task.labels))])
        out: list[Candidate] = []
        for label, name in enumerate(task.labels):
            out += [Candidate(label, t.format(x=name), "label name") for t in PHRASE_TEMPLATES]
            out += [Candidate(label, t.format(x=term), "term") for term in terms[label] for t in PHRASE_TEMPLATES]
            if len(terms[label]) > 1:
                out.append(Candidate(label, ", ".join(terms[label][:LIST_SIZE]) + ".", "terms"))
        return list({(c.label, c.text): c for c in out}.values())

    def _nearest_terms(self, texts: list[str], groups: list[list[int]]) -> list[list[str]]:
        """KPT-style neighbours: the pool's frequent terms whose embedding is closest, on average, to each
        label's ``texts`` (its labeled examples, or without labels its name), and closer to them than to
        any other label's (as a margin over the labels' mean). They find words where few repeat across a handful of short examples."""
        frequent = [t for t, n in document_frequency(self.task.background, self.settings.max_n).most_common(
            NEIGHBOUR_POOL) if n > 1]
        if not frequent:
            return [[] for _ in groups]
        cosine = self.similarities("{text}", [{"text": t} for t in frequent], texts)
        cosine = np.stack([cosine[:, g].mean(axis=1) for g in groups], axis=1)
        cosine -= cosine.mean(axis=1, keepdims=True)  # near this label rather than near every text
        owner = cosine.argmax(axis=1)
        return [[frequent[i] for i in np.argsort(-cosine[:, label], kind="stable") if owner[i] == label]
                [: self.settings.terms] for label in range(len(self.task.labels))]


class WordLogProbs(ClozeLearner):
    """A cloze learner whose "classes" are candidate words: the log-probability of each at the mask,
    normalised over the whole vocabulary (the probabilities PETAL's ratio reads), so ``predict_all``
    streams it like any learner."""

    def __init__(self, spec: LearnerSpec, model: torch.nn.Module, tokenizer, word_ids: torch.Tensor):
        Learner.__init__(self, spec, model, tokenizer)  # no verbalizer matrix: every word is its own column
        self.register_buffer("word_ids", word_ids, persistent=False)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        rows = torch.arange(batch["input_ids"].shape[0], device=batch["input_ids"].device)
        hidden = gather_hidden(self.model, batch["input_ids"], batch["attention_mask"], rows, batch["mask_pos"])
        return vocab_scores(self.model, hidden).float().log_softmax(-1)[:, self.word_ids]


class WordScorer:
    """Label words for the cloze learner: the pool's frequent one-token words, scored at the mask."""

    def __init__(self, task: Task, settings: SuggestSettings):
        self.task, self.settings = task, settings
        self.tokenizer = load_tokenizer(settings.backbone, trust_remote_code=settings.trust_remote_code)
        if self.tokenizer.mask_token is None:
            raise SuggestError(f"model: {settings.backbone!r} has no mask token, so it cannot fill cloze patterns")
        self.model = load_masked_lm(settings.backbone, trust_remote_code=settings.trust_remote_code)
        texts = [join_fields(r, task.fields) for r in task.labeled] + list(task.background)
        names = [n for n in task.labels if words(n) == [n.lower()]]
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
        if empty:
            raise SuggestError(f"pattern {pattern!r}: no word scores best for label(s) {empty}")
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
        missing = [n for n in self.task.labels if n.lower() not in names]
        if missing:
            raise SuggestError(f"no labeled examples, and label(s) {missing} are not one-token words of the model "
                               "to start from: give labeled examples, or name the labels with such words")
        candidates = []
        for label, name in enumerate(self.task.labels):
            near = [names[name.lower()], *self._neighbours(names[name.lower()])[: self.settings.terms]]
            candidates += [Candidate(label, self.words[w], "label name" if k == 0 else "neighbour")
                           for k, w in enumerate(near) if w not in skip]
        columns = [self.words.index(c.text) for c in candidates]
        full = self.scores(pattern)
        scores = Scores(full.labeled[:, columns], full.pool[:, columns])
        choice, fits = choose(scores, candidates, (), len(self.task.labels))
        ranked = sorted((i for i in fits), key=lambda i: (candidates[i].label, [-k for k in fits[i].key]))
        chosen = [[columns[i] for i in ranked if candidates[i].label == l][: self.settings.top]
                  for l in range(len(self.task.labels))]
        rows = [Ranked(self.task.labels[candidates[i].label], candidates[i].text, candidates[i].origin,
                       fits[i].score, fits[i]) for i in ranked]
        return self._pvp(pattern, chosen, rows)


SCORERS: dict[str, type] = {"similarity": PhraseScorer, "cloze": WordScorer}
"""The learners ``ipet suggest`` proposes verbalizers for; a classifier has none."""
